"""Log lines keep the caller's number masked and what was said out by default; `[logs]
personal_data = true` puts both in. JSON lines carry ISO 8601 timestamps with milliseconds and
the zone, and the server says where each tape went."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import pytest

from s2s.call_context import logged_number, set_personal_data_in_logs
from tests.support.audio import to_mulaw, tone
from tests.support.server import echo_line_config, running_server
from voicebot.server.logs import JsonFormatter

CALLER = "+447700900123"


async def one_call(tmp_path: Path, personal_data: bool, caplog: pytest.LogCaptureFixture) -> str:
    config = echo_line_config(
        parrot="transcribe = true\nspeed = 50",
        route_extra="recording = true",
        sections=f'[recording]\ndir = "{tmp_path}"\n[logs]\npersonal_data = {str(personal_data).lower()}',
    )
    caplog.set_level(logging.INFO)
    async with running_server(config) as server, server.twilio().call(from_=CALLER) as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(700, 600)))
        await call.wait_for(lambda: call.received_media_ms() >= 500 and call.queued_ms == 0, timeout=8)
        await call.pause(200)
    set_personal_data_in_logs(False)
    return caplog.text


async def test_by_default_the_number_is_masked_and_the_transcript_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = await one_call(tmp_path, False, caplog)
    assert CALLER not in text and "+44********23" in text
    ended = next(line for line in text.splitlines() if " ended: " in line)
    assert "ms of speech" not in ended and "echo of" not in ended  # the echo line's placeholder transcript
    assert re.search(
        r"2 transcript turn\(s\): \[\d+ characters hidden; \[logs\] personal_data = true shows them\]", ended
    )
    (tape,) = await asyncio.to_thread(lambda: list(tmp_path.glob("*.jsonl")))
    assert f"recording to {tape}" in text
    assert re.search(rf"tape written to {re.escape(str(tape))} \(\d+ bytes\)", text)


async def test_one_switch_puts_numbers_and_transcripts_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = await one_call(tmp_path, True, caplog)
    assert f"from {CALLER} to" in text
    ended = next(line for line in text.splitlines() if " ended: " in line)
    assert re.search(r"2 transcript turn\(s\): caller: \d+ ms of speech \| bot: echo of \d+ ms", ended), ended


def test_numbers_are_masked_keeping_their_shape() -> None:
    assert logged_number("+15551234567") == "+15*******67"
    assert logged_number("client:alice") == "client:*****"
    assert logged_number("sip:bob@pbx.example.com") == "sip:bob**************om"
    assert logged_number("") == ""


def test_json_lines_have_iso_timestamps_with_milliseconds_and_zone() -> None:
    record = logging.LogRecord("voicebot", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.created = 1769292930.1234
    entry = json.loads(JsonFormatter().format(record))
    assert entry["ts"] == "2026-01-24T22:15:30.123+00:00"
    assert entry["msg"] == "hello world"
