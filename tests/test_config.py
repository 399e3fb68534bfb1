"""Config loading: interpolation, validation errors with key paths, the built-in default."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicebot.cli import main
from voicebot.config import ConfigError, load_config, load_config_text

GOOD = """
[server]
public_url = "${PUBLIC_URL:-https://voice.example.com/}"

[twilio]
auth_token = "${TWILIO_AUTH_TOKEN}"

[providers.parrot]
type = "echo"
sample_rate = 16000

[[routes]]
name = "default"
providers = ["parrot"]
instructions = "Be brief."
"""


def test_env_interpolation_and_defaults() -> None:
    config = load_config_text(
        GOOD.replace("${ECHO_RATE:-16000}", '"${ECHO_RATE:-16000}"'), env={"TWILIO_AUTH_TOKEN": "tok"}
    )
    assert config.twilio.auth_token is not None and config.twilio.auth_token.get_secret_value() == "tok"
    assert config.server.public_url == "https://voice.example.com"
    assert config.providers["parrot"].type == "echo"


def test_every_error_is_reported_with_its_key_path() -> None:
    text = """
[server]
port = "eighty"
[twilio]
auth_token = "${MISSING_TOKEN}"
[providers.parrot]
type = "echo"
sample_rate = 11025
colour = "blue"
[providers.ghost]
type = "no-such-type"
[[routes]]
name = "default"
providers = ["parrot", "nobody"]
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env={})
    paths = {issue.path: issue.message for issue in caught.value.issues}
    assert "environment variable MISSING_TOKEN is not set" in paths["twilio.auth_token"]
    assert "providers.parrot.sample_rate" in paths
    assert "providers.parrot.colour" in paths
    assert "unknown provider type 'no-such-type'" in paths["providers.ghost.type"]
    assert "server.port" in paths
    assert "unknown provider 'nobody'" in paths["routes[1].providers[2]"]


def test_signature_checks_need_a_token() -> None:
    with pytest.raises(ConfigError, match=r"twilio\.auth_token"):
        load_config_text('[providers.p]\ntype="echo"\n[[routes]]\nname="r"\nproviders=["p"]\n', env={})


def test_not_toml_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_text("[server\n", env={})


def test_built_in_default_is_the_echo_line_without_signatures() -> None:
    config = load_config(None, env={})
    assert config.routes[0].providers == ["parrot"]
    assert config.providers["parrot"].type == "echo"
    assert config.twilio.validate_signatures is False


def test_config_check_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok")
    assert main(["config", "check", str(good)]) == 0
    assert "route 1 'default' (to *): parrot (echo)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('type = "echo"', 'type = "echo"\nspeed = -1'))
    assert main(["config", "check", str(bad)]) == 1
    assert "providers.parrot.speed" in capsys.readouterr().err


ROUTE_SETTINGS = """
[twilio]
validate_signatures = false

[providers.gemini]
type = "gemini_live"
api_key = "k"

[providers.parrot]
type = "echo"

[[routes]]
name = "notice"
providers = ["gemini", "parrot"]
[routes.provider_settings.gemini]
activity_handling = "no_interruption"
automatic_activity_detection = false
silence_duration_ms = 700

[[routes]]
name = "default"
providers = ["gemini"]
"""


def test_a_route_lays_its_provider_settings_over_the_table_for_its_calls_only() -> None:
    from s2s.gemini_live import GeminiLiveConfig, GeminiLiveProvider
    from s2s.gemini_live.setup import Opening, connect_config
    from voicebot.agent.registry import CallTools
    from voicebot.calls.plan import CallPlan

    config = load_config_text(ROUTE_SETTINGS, env={})
    base = config.providers["gemini"]
    provider = GeminiLiveProvider("gemini", base)

    async def never(twiml: str) -> None:
        raise AssertionError(twiml)

    contexts = [
        CallPlan(
            "t", "CA1", route, [provider], "+1", "+2", config, CallTools(route, config, "CA1", "+1", never)
        ).session_context()
        for route in config.routes
    ]
    notice, default = (provider.route_config(ctx) for ctx in contexts)
    assert (notice.activity_handling, notice.automatic_activity_detection) == ("no_interruption", False)
    assert notice.silence_duration_ms == 700 and notice.api_key == base.api_key
    setup = connect_config(notice, contexts[0], Opening([])).realtime_input_config
    assert setup is not None and setup.automatic_activity_detection is not None
    assert setup.automatic_activity_detection.disabled is True
    # The provider table itself, and the route without settings, are untouched.
    assert default is base and isinstance(base, GeminiLiveConfig) and base.activity_handling == "interrupts"


@pytest.mark.parametrize(
    ("settings", "path", "text"),
    [
        (
            '[routes.provider_settings.gemini]\nactivity_handling = "sometimes"',
            ".gemini.activity_handling",
            "sometimes",
        ),
        ('[routes.provider_settings.gemini]\napi_key = "other"', ".gemini", "cannot set api_key"),
        ("[routes.provider_settings.parrot]\nsample_rate = 8000", ".parrot", "cannot set sample_rate"),
        ("[routes.provider_settings.ghost]\nx = 1", ".ghost", "not in this route's providers"),
        (
            '[routes.provider_settings.gemini]\nautomatic_activity_detection = false\nstart_sensitivity = "high"',
            ".gemini",
            "tune the service's detector",
        ),
    ],
)
def test_route_provider_settings_are_checked_at_load_with_the_routes_path(settings: str, path: str, text: str) -> None:
    base = ROUTE_SETTINGS.split("[routes.provider_settings.gemini]")[0]
    source = base + settings + '\n\n[[routes]]\nname = "default"\nproviders = ["gemini"]\n'
    with pytest.raises(ConfigError) as caught:
        load_config_text(source, env={})
    issues = {issue.path: issue.message for issue in caught.value.issues}
    assert text in issues[f"routes[1].provider_settings{path}"], issues
