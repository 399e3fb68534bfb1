"""Config problems in the project's words: typos get the nearest valid key, routes are numbered
as `config check` numbers them, "yes" is not a boolean, empty or placeholder keys are refused
with their key path, and so is a route none of whose providers can take a call. Also: the
token comes from TWILIO_AUTH_TOKEN when the file has none, and `.env` is read at startup with
empty variables unset."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from voicebot.cli import main
from voicebot.config import ConfigError, load_config, load_config_text

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env={} if env is None else env)
    return {issue.path: issue.message for issue in caught.value.issues}


ECHO = '[twilio]\nvalidate_signatures = false\n[providers.parrot]\ntype = "echo"\n'


def test_a_misspelt_key_gets_the_nearest_valid_one() -> None:
    found = problems(ECHO + '[server]\nprot = 8080\n[[routes]]\nname = "a"\nprovider = ["parrot"]\n')
    assert found["server.prot"] == "unknown key 'prot'; did you mean 'port'?"
    assert found["routes[1].provider"] == "unknown key 'provider'; did you mean 'providers'?"
    assert found["routes[1].providers"] == "is required"
    found = problems(
        '[twilio]\nvalidate_signatures = false\n[providers.parrot]\ntype = "echo"\nvad_treshold_dbfs = -40\n'
    )
    assert (
        found["providers.parrot.vad_treshold_dbfs"]
        == "unknown key 'vad_treshold_dbfs'; did you mean 'vad_threshold_dbfs'?"
    )
    # Nothing close: no guess.
    assert problems(ECHO + '[server]\nzzz = 1\n[[routes]]\nname = "a"\nproviders = ["parrot"]\n')["server.zzz"] == (
        "unknown key 'zzz'"
    )


def test_no_pydantic_wording_reaches_the_user() -> None:
    text = ECHO + (
        '[server]\nport = "eighty"\nmax_body_bytes = 10\n[[routes]]\nname = "a"\nproviders = ["parrot"]\n'
        'max_call_seconds = 0\nrecording = "yes"\n[routes.call_control]\nend_call = "on"\n'
    )
    found = problems(text)
    assert found == {
        "server.port": "must be a whole number, not 'eighty'",
        "server.max_body_bytes": "must be at least 1024, not 10",
        "routes[1].max_call_seconds": "must be more than 0.0, not 0",
        "routes[1].recording": "must be true or false (unquoted), not 'yes'",
        "routes[1].call_control.end_call": "must be true or false (unquoted), not 'on'",
    }
    for message in found.values():
        assert not re.search(r"Input should|Value error|Extra inputs|Field required", message)


def test_a_boolean_from_an_environment_variable_may_say_true_or_false() -> None:
    text = ECHO + '[recording]\nenabled = "${REC}"\n[[routes]]\nname = "a"\nproviders = ["parrot"]\n'
    assert load_config_text(text, env={"REC": "true"}).recording.enabled is True
    assert problems(text, {"REC": "yes"}) == {"recording.enabled": "must be true or false (unquoted), not 'yes'"}


def test_routes_are_numbered_from_one_in_errors_as_in_config_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        ECHO + '[[routes]]\nname = "a"\nproviders = ["parrot"]\n[[routes]]\nname = "b"\nproviders = ["parrot"]\n'
    )
    assert main(["config", "check", str(good)]) == 1  # route 2 is shadowed by route 1's catch-all
    out = capsys.readouterr().out
    assert "route 2 'b' is unreachable" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('name = "b"\nproviders = ["parrot"]', 'name = "b"\nproviders = ["parot"]'))
    assert main(["config", "check", str(bad)]) == 1
    assert "routes[2].providers[1]: unknown provider 'parot' (defined: parrot)" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["", "   ", "sk-...", "<your OpenAI key>", "your-api-key", "changeme", "xxxxxxxx"])
def test_an_empty_or_placeholder_api_key_is_refused_with_its_path(key: str) -> None:
    text = (
        '[twilio]\nvalidate_signatures = false\n[providers.openai]\ntype = "openai_realtime"\n'
        f'api_key = "{key}"\n[providers.parrot]\ntype = "echo"\n'
        '[[routes]]\nname = "main"\nproviders = ["openai", "parrot"]\n'
    )
    found = problems(text)
    assert list(found) == ["providers.openai.api_key"]  # the echo line still serves the route
    assert found["providers.openai.api_key"] in (
        "is empty: set the real key (usually through its environment variable)",
        "looks like a placeholder from an example, not a real key",
    )


def test_an_empty_environment_variable_is_no_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        '[twilio]\nvalidate_signatures = false\n[providers.openai]\ntype = "openai_realtime"\n'
        'api_key = "${OPENAI_API_KEY}"\n[[routes]]\nname = "main"\nproviders = ["openai"]\n'
    )
    assert problems(text, {"OPENAI_API_KEY": ""}) == {
        "providers.openai.api_key": "environment variable OPENAI_API_KEY is empty",
        "routes[1]": "route 'main' has no usable provider (openai: api_key environment variable OPENAI_API_KEY "
        "is empty)",
    }
    assert load_config_text(text, env={"OPENAI_API_KEY": "sk-proj-abc123"}).providers["openai"].type == (
        "openai_realtime"
    )


def test_a_route_whose_providers_are_all_unusable_is_an_error() -> None:
    text = (
        "[twilio]\nvalidate_signatures = false\n"
        '[providers.openai]\ntype = "openai_realtime"\napi_key = "sk-..."\n'
        '[providers.gemini]\ntype = "gemini_live"\napi_key = ""\n'
        '[providers.parrot]\ntype = "echo"\n'
        '[[routes]]\nname = "front"\nto = "+1*"\nproviders = ["openai", "parrot"]\n'
        '[[routes]]\nname = "uk"\nproviders = ["openai", "gemini"]\n'
    )
    found = problems(text)
    assert "routes[1]" not in found  # parrot can still answer
    assert found["routes[2]"].startswith("route 'uk' has no usable provider (openai: api_key looks like a placeholder")
    assert "gemini: api_key is empty" in found["routes[2]"]


def test_the_twilio_token_comes_from_the_environment_when_the_file_has_none() -> None:
    text = '[providers.parrot]\ntype = "echo"\n[[routes]]\nname = "a"\nproviders = ["parrot"]\nrecording = true\n'
    config = load_config_text(text, env={"TWILIO_AUTH_TOKEN": "dev-token"})
    assert config.twilio.validate_signatures is True
    assert config.twilio.auth_token is not None and config.twilio.auth_token.get_secret_value() == "dev-token"
    assert problems(text) == {"twilio.auth_token": "required when validate_signatures is true (set TWILIO_AUTH_TOKEN)"}
    # The built-in default checks signatures exactly when it has a token to check them with.
    assert load_config(None, env={}).twilio.validate_signatures is False
    default = load_config(None, env={"TWILIO_AUTH_TOKEN": "dev-token"})
    assert default.twilio.validate_signatures is True
    assert default.twilio.auth_token is not None and default.twilio.auth_token.get_secret_value() == "dev-token"


def test_dotenv_is_read_at_startup_and_empty_variables_are_unset(tmp_path: Path) -> None:
    """.env.example copied to .env as shipped (every value empty), plus one real setting,
    and the same empties already exported by `set -a; . .env.example`."""
    config = tmp_path / "local.toml"
    config.write_text('[providers.parrot]\ntype = "echo"\n[[routes]]\nname = "from-dotenv"\nproviders = ["parrot"]\n')
    dotenv = (ROOT / ".env.example").read_text().replace("VOICEBOT_CONFIG=\n", f"VOICEBOT_CONFIG={config}\n")
    dotenv = dotenv.replace("TWILIO_AUTH_TOKEN=\n", "TWILIO_AUTH_TOKEN=from-dotenv-token\n")
    (tmp_path / ".env").write_text(dotenv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEBOT_", "OTEL_", "TWILIO_"))}
    env.update(OTEL_TRACES_SAMPLER="", OTEL_EXPORTER_OTLP_ENDPOINT="", OPENAI_API_KEY="")
    probe = (
        "import os, sys\n"
        "from voicebot.cli import load_dotenv_file\n"
        "load_dotenv_file()\n"
        "from voicebot.config import load_config\n"
        "from voicebot.telemetry.setup import setup_telemetry\n"
        "setup_telemetry().shutdown()\n"  # an empty OTEL_TRACES_SAMPLER broke this
        "config = load_config(os.environ.get('VOICEBOT_CONFIG'))\n"
        "print(config.routes[0].name, config.twilio.auth_token.get_secret_value(), config.twilio.validate_signatures)\n"
        "print(sorted(k for k, v in os.environ.items() if v == ''))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["from-dotenv from-dotenv-token True", "[]"]
    # The environment wins over .env.
    env["TWILIO_AUTH_TOKEN"] = "from-the-environment"
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.stdout.splitlines()[0] == "from-dotenv from-the-environment True"


def test_serve_warns_about_a_shadowed_route_as_config_check_does(tmp_path: Path) -> None:
    config = tmp_path / "shadow.toml"
    config.write_text(
        ECHO
        + '[[routes]]\nname = "all"\nproviders = ["parrot"]\n'
        + '[[routes]]\nname = "uk"\nto = "+44*"\nproviders = ["parrot"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEBOT_", "OTEL_", "TWILIO_"))}
    command = [sys.executable, "-m", "voicebot.cli", "serve", "--config", str(config), "--host", "127.0.0.1"]
    with subprocess.Popen(
        [*command, "--port", "0"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stderr is not None
            lines = []
            for line in server.stderr:  # until the server is up: the warnings come before
                lines.append(line)
                if "Uvicorn running" in line:
                    break
        finally:
            server.terminate()
    warning = "config: route 2 'uk' is unreachable: it is shadowed by the earlier route 'all'"
    assert any("WARNING" in line and warning in line for line in lines), "".join(lines)
