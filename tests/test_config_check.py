"""``voicebot config check FILE --number TO [--from FROM]``: routes hit, unreachable routes,
unknown providers, missing secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicebot.cli import main

GOOD = """
[twilio]
validate_signatures = false

[providers.primary]
type = "echo"
max_sessions = 10
[providers.backup]
type = "echo"

[[routes]]
name = "vip"
to = "+15550001000"
from = "+1555777*"
providers = ["primary"]

[[routes]]
name = "uk"
to = "+44*"
providers = ["primary", "backup"]

[[routes]]
name = "default"
providers = ["backup"]
"""


def run(tmp_path: Path, text: str, *args: str) -> int:
    path = tmp_path / "voicebot.toml"
    path.write_text(text)
    return main(["config", "check", str(path), *args])


def test_shows_the_route_each_sample_call_hits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        tmp_path,
        GOOD,
        "--number", "+442071234567",
        "--number", "+15550001000", "--from", "+15557770001",
        "--number", "+15559999999",
        "--number", "+15550001000",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "call to +15550001000 from +15557770001: route 'vip' -> primary" in out
    assert "call to +442071234567: route 'uk' -> primary -> backup" in out
    assert "call to +15559999999: route 'default' -> backup" in out
    assert "call to +15550001000: route 'default' -> backup" in out  # not the vip caller
    assert "provider 'primary': type=echo max_sessions=10" in out
    assert out.rstrip().endswith(": OK")


def test_flags_routes_shadowed_by_an_earlier_catch_all_or_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shadowed = GOOD.replace('name = "uk"\nto = "+44*"', 'name = "uk"\nto = "+4*"') + (
        '\n[[routes]]\nname = "london"\nto = "+44207*"\nproviders = ["primary"]\n'
    )
    code = run(tmp_path, shadowed, "--number", "+15551112222")
    out = capsys.readouterr().out
    assert code == 1
    assert "UNREACHABLE: route 4 'london' is unreachable: it is shadowed by the earlier route 'uk'" in out
    # The catch-all before it shadows nothing else; vip and uk are reachable.
    assert out.count("UNREACHABLE") == 1


def test_flags_numbers_no_route_takes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_default = GOOD.split('[[routes]]\nname = "default"')[0]
    assert run(tmp_path, no_default, "--number", "+15559999999") == 1
    assert "call to +15559999999: NO ROUTE" in capsys.readouterr().out


def test_flags_unknown_providers_and_missing_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOICEBOT_TEST_TWILIO_TOKEN", raising=False)
    broken = GOOD.replace(
        "validate_signatures = false", 'validate_signatures = true\nauth_token = "${VOICEBOT_TEST_TWILIO_TOKEN}"'
    ).replace('providers = ["backup"]', 'providers = ["backup", "nowhere"]')
    assert run(tmp_path, broken) == 1
    err = capsys.readouterr().err
    assert "twilio.auth_token: environment variable VOICEBOT_TEST_TWILIO_TOKEN is not set" in err
    assert "routes[2].providers[1]: unknown provider 'nowhere'" in err
