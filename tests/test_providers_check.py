"""``voicebot providers check``: a real session with each configured provider, run here against
the echo line and the protocol-faithful fakes (the same client code and SDKs as production)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fakes.gemini_live_fake import GeminiLiveFake
from tests.fakes.openai_realtime_fake import FakeRealtimeServer
from voicebot.cli import main

ECHO = """
[twilio]
validate_signatures = false

[providers.parrot]
type = "echo"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "voicebot.toml"
    path.write_text(text + '\n[[routes]]\nname = "default"\nproviders = ["parrot"]\n')
    return str(path)


async def run_cli(*args: str) -> int:
    # The CLI runs its own event loop; the fakes keep serving in this one.
    return await asyncio.to_thread(main, ["providers", "check", *args])


async def test_the_echo_line_answers_and_the_report_says_how(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli("--config", write(tmp_path, ECHO), "--answer-timeout", "8") == 0
    out = capsys.readouterr().out
    assert "provider 'parrot' (echo): OK" in out
    assert "audio: in mulaw@8000, out mulaw@8000" in out
    assert "first audio after" in out and "all 1 provider(s) answered" in out


async def test_openai_and_gemini_fakes_report_handshake_formats_first_audio_and_transcript(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeRealtimeServer() as openai, GeminiLiveFake() as gemini:
        config = (
            ECHO
            + f"""
[providers.openai]
type = "openai_realtime"
api_key = "test-key"
base_url = "{openai.base_url}"
audio_format = "pcm24k"

[providers.gemini]
type = "gemini_live"
api_key = "test-key"
base_url = "{gemini.base_url}"
ca_file = "{gemini.ca_file}"
"""
        )
        path = write(tmp_path, config)
        assert await run_cli("--config", path, "--provider", "openai", "--answer-timeout", "8") == 0
        out = capsys.readouterr().out
        assert "provider 'openai' (openai_realtime): OK" in out
        assert "audio: in pcm16@24000, out pcm16@24000" in out
        assert "bot said:" in out and "handshake:" in out
        assert "parrot" not in out  # --provider checks that one only
        assert await run_cli("--config", path, "--provider", "gemini", "--answer-timeout", "8") == 0
        out = capsys.readouterr().out
        assert "provider 'gemini' (gemini_live): OK" in out
        assert "audio: in pcm16@16000, out pcm16@24000" in out
        assert "bot said:" in out


async def test_a_refused_key_and_a_retiring_model_fail_the_check_loudly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeRealtimeServer() as openai:
        config = (
            ECHO
            + f"""
[providers.openai]
type = "openai_realtime"
api_key = "wrong-key"
model = "gpt-realtime"
base_url = "{openai.base_url}"
"""
        )
        assert await run_cli("--config", write(tmp_path, config), "--answer-timeout", "8") == 1
    out = capsys.readouterr().out
    assert "provider 'openai' (openai_realtime): FAILED" in out
    assert "HTTP 401" in out and "check the key, the model name and permissions" in out
    assert "WARNING: provider 'openai' model: model 'gpt-realtime' shuts down on 2027-01-20" in out
    assert "provider 'parrot' (echo): OK" in out  # one failure does not stop the others
    assert "1 of 2 provider(s) failed: openai" in out


def test_an_unknown_provider_name_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["providers", "check", "--config", write(tmp_path, ECHO), "--provider", "nope"]) == 2
    assert "no provider 'nope'" in capsys.readouterr().err
