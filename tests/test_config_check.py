"""``voicebot config check FILE --number TO [--from FROM]``: routes hit, unreachable routes,
unknown providers, missing secrets."""

from __future__ import annotations

from datetime import date
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
    assert "routes[3].providers[2]: unknown provider 'nowhere'" in err


RETIRING = """
[twilio]
validate_signatures = false

[providers.openai]
type = "openai_realtime"
api_key = "sk-test"
model = "{model}"
transcription_model = "{transcription}"

[providers.nova]
type = "nova_sonic"
model_id = "{nova}"

[[routes]]
name = "default"
providers = ["openai", "nova"]
"""


def test_a_model_with_an_announced_shutdown_is_a_warning_until_its_day_and_an_error_after(tmp_path: Path) -> None:
    from voicebot.config import load_config
    from voicebot.config_check import check_routes

    path = tmp_path / "voicebot.toml"
    path.write_text(
        RETIRING.format(model="gpt-realtime", transcription="gpt-4o-mini-transcribe", nova="amazon.nova-2-sonic-v1:0")
    )
    config = load_config(str(path))
    before = check_routes(config, today=date(2027, 1, 19))
    assert before.problems == 0
    assert any(
        line.startswith("WARNING: provider 'openai' model: model 'gpt-realtime' shuts down on 2027-01-20 (in 1 days)")
        and "'gpt-realtime-2.1'" in line
        for line in before.lines
    ), before.lines
    assert any(
        "transcription_model: model 'gpt-4o-mini-transcribe' shuts down on 2027-02-26" in x for x in before.lines
    )
    on_the_day = check_routes(config, today=date(2027, 1, 20))
    assert on_the_day.problems == 1
    assert any(
        line.startswith("ERROR: provider 'openai' model: model 'gpt-realtime' was shut down")
        for line in on_the_day.lines
    )


def test_config_check_fails_on_a_retired_model_and_passes_on_the_current_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nova Sonic v1 reached end of life on 2026-09-14 (Bedrock model card), before today's clock.
    retired = RETIRING.format(
        model="gpt-realtime-2.1", transcription="gpt-live-transcribe", nova="amazon.nova-sonic-v1:0"
    )
    assert run(tmp_path, retired) == 1
    assert "ERROR: provider 'nova' model_id: model 'amazon.nova-sonic-v1:0' was shut down on 2026-09-14" in (
        capsys.readouterr().out
    )
    current = RETIRING.format(
        model="gpt-realtime-2.1", transcription="gpt-live-transcribe", nova="amazon.nova-2-sonic-v1:0"
    )
    assert run(tmp_path, current) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out and "ERROR" not in out


def test_the_built_in_provider_defaults_have_no_announced_shutdown() -> None:
    from s2s.gemini_live.config import GeminiLiveConfig
    from s2s.grok.config import GrokConfig
    from s2s.lifecycle import provider_findings
    from s2s.nova_sonic.config import NovaSonicConfig
    from s2s.openai_realtime.config import OpenAIRealtimeConfig

    configs = [
        OpenAIRealtimeConfig(api_key="k"),  # type: ignore[arg-type]
        GrokConfig(api_key="k"),  # type: ignore[arg-type]
        GeminiLiveConfig(api_key="k"),  # type: ignore[arg-type]
        NovaSonicConfig(),
    ]
    for config in configs:
        assert provider_findings(config.type, config, date(2027, 12, 31)) == [], config.type


def test_a_budget_on_unpriced_or_placeholder_rates_is_a_warning(tmp_path: Path) -> None:
    from voicebot.config import load_config_text
    from voicebot.config_check import check_routes

    text = """
[twilio]
validate_signatures = false
[providers.gem]
type = "gemini_live"
api_key = "AIza-test-1234567890"
[providers.oa]
type = "openai_realtime"
api_key = "sk-test-1234567890"
[providers.parrot]
type = "echo"
[[routes]]
name = "budget"
to = "+1555*"
providers = ["oa", "gem", "parrot"]
max_cost_usd = 0.5
[[routes]]
name = "free"
providers = ["gem"]
"""
    report = check_routes(load_config_text(text))
    assert report.problems == 0
    (warning,) = report.warnings  # not for oa (verified), parrot (free), nor the route without a budget
    assert warning.startswith("route 1 'budget': max_cost_usd cannot rely on provider 'gem'")
    assert "unverified placeholders" in warning
    # rates of the config's own: trusted
    priced = check_routes(load_config_text(text + "[pricing.gemini_live]\naudio_out_per_mtok = 10.0\n"))
    assert priced.warnings == []
