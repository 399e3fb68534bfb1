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
