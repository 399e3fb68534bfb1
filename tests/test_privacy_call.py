"""Personal data end to end: a signed call through the running server to the OpenAI Realtime
fake, on a route that masks cards, phone numbers and emails and takes a card number on a
sensitive keypad. The caller says a card number (in the fake's transcript of the caller), the
model passes one to a tool, the tool echoes it (so the bot says it), the provider's error
message quotes it, and the caller types another one on the keypad. None of them may reach a
log line, the tape, a span, a caller-memory row or ``GET /calls``; the tool alone gets the
typed digits."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from s2s.call_context import set_personal_data_in_logs
from s2s.events import Transcript
from tests.fakes.openai_realtime_fake import FakeOptions, FakeRealtimeServer, ToolCue
from tests.support.audio import dominant_frequency, rms_dbfs, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, running_server
from transcoding.mulaw import mulaw_to_pcm16
from voicebot.agent.config import MemoryConfig
from voicebot.agent.memory import CallerMemory
from voicebot.devtools.tape.format import MASKED_DIGIT, ProviderIn, ProviderOut, TwilioFrame
from voicebot.devtools.tape.html_view import write_tape_html
from voicebot.devtools.tape.replay import finished_tape, replay_call
from voicebot.devtools.tape.view import media_payload, view_of
from voicebot.telemetry.setup import get_telemetry

OPS_TOKEN = "ops-" + "p" * 24
CALLER = "+15550104444"
SPOKEN_CARD = "4111 1111 1111 1111"  # Luhn-valid (a test card number)
SPOKEN_PHONE = "020 7946 0018"
TYPED_CARD = "4242424242424242"  # Luhn-valid
# Every way the secrets above could be written where they end up.
LEAKS = [
    re.compile(r"4111[\s-]?1111[\s-]?1111[\s-]?1111"),
    re.compile(r"4242[\s-]?4242[\s-]?4242[\s-]?4242"),
    re.compile(r"7946[\s-]?0018"),
    re.compile(r"jo@example\.com"),
]
PAYMENTS: list[dict[str, Any]] = []


async def take_payment(request: dict[str, Any]) -> dict[str, Any]:
    """The route's tool (``handler``): records what it got and echoes the card back, as a
    careless payment backend might."""
    PAYMENTS.append(request)
    return {"status": "charged", "card": SPOKEN_CARD, "callback": SPOKEN_PHONE}


def mulaw_to_pcm16_array(mulaw: bytes) -> np.ndarray:
    return np.frombuffer(mulaw_to_pcm16(mulaw), dtype="<i2")


def leaks(text: str) -> list[str]:
    return [m.group(0) for pattern in LEAKS for m in pattern.finditer(text)]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    get_telemetry().tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def config(fake: FakeRealtimeServer, tmp_path: Path) -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[ops]
token = "{OPS_TOKEN}"

[logs]
personal_data = true      # transcripts in log lines: they must come out masked

[recording]
dir = "{tmp_path / "tapes"}"

[memory]
path = "{tmp_path / "memory.sqlite3"}"

[providers.s2s]
type = "openai_realtime"
api_key = "test-key"
base_url = "{fake.base_url}"

[[routes]]
name = "payments"
providers = ["s2s"]
recording = true
memory = true
redact = ["card", "phone", "email"]

[routes.dtmf]
sensitive = true

[[routes.tools]]
name = "take_payment"
description = "Charge the card."
handler = "tests.test_privacy_call:take_payment"
"""


def span_text(exporter: InMemorySpanExporter) -> str:
    parts = []
    for span in exporter.get_finished_spans():
        parts.append(json.dumps(dict(span.attributes or {}), default=str))
        for event in span.events:
            parts.append(event.name + json.dumps(dict(event.attributes or {}), default=str))
    return "\n".join(parts)


async def memory_rows(path: Path) -> list[tuple[Any, ...]]:
    store = CallerMemory(MemoryConfig(path=str(path)))
    for _ in range(200):  # the call is remembered in the background after it ends
        if await store.recall(CALLER) is not None:
            break
        await asyncio.sleep(0.05)

    def read() -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT * FROM calls").fetchall()

    return await asyncio.to_thread(read)


async def test_a_card_said_typed_or_echoed_reaches_no_log_tape_span_memory_or_api(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter
) -> None:
    PAYMENTS.clear()
    caplog.set_level(logging.DEBUG)  # libraries' wire dumps too (the server's websockets client)
    caplog.set_level(logging.INFO, logger="websockets.server")  # the fake's side, outside voicebot
    options = FakeOptions(
        response_ms=400,
        caller_transcript=f"my card is {SPOKEN_CARD}, call me on {SPOKEN_PHONE} or mail jo@example.com",
        tool_call=ToolCue("take_payment", {"card": SPOKEN_CARD, "note": f"callback {SPOKEN_PHONE}"}),
    )
    api_bodies: list[str] = []
    try:
        async with FakeRealtimeServer(options) as fake, running_server(config(fake, tmp_path)) as server:
            async with server.twilio().call(from_=CALLER) as call, httpx.AsyncClient() as client:
                await call.pause(200)
                for digit in TYPED_CARD + "#":
                    await call.press(digit)
                # the keypad turn makes the model call the tool; the tool's answer is spoken
                await call.wait_for(lambda: bool(fake.last.tool_outputs), timeout=8)
                await call.wait_for(lambda: len(fake.last.responses) >= 2 and fake.last.responses[-1].produced_ms > 0)
                await call.say(to_mulaw(tone(700, 600)))
                await call.wait_for(lambda: len(fake.last.responses) >= 3, timeout=8)
                await fake.push({"type": "error", "error": {"type": "invalid_request_error", "code": "bad_input",
                                 "message": f"could not process card {SPOKEN_CARD}"}})  # fmt: skip
                await call.pause(300)
                headers = {"Authorization": f"Bearer {OPS_TOKEN}"}
                listing = await client.get(server.url + "/calls", headers=headers)
                one = await client.get(f"{server.url}/calls/{call.call_sid}", headers=headers)
                api_bodies += [listing.text, one.text]
                assert listing.json()["calls"][0]["call_sid"] == call.call_sid
            await call.wait_for(lambda: not server.runtime.active, timeout=5)
        tape = await finished_tape(tmp_path / "tapes", call.call_sid)
        rows = await memory_rows(tmp_path / "memory.sqlite3")
    finally:
        set_personal_data_in_logs(False)

    # The tool got the typed digits; the model only heard that there were 16 of them.
    (payment,) = PAYMENTS
    assert payment["keypad"] == [TYPED_CARD]
    texts = [item["content"][0]["text"] for item in fake.last.items_created if item.get("type") == "message"]
    assert any("16 digits, then #" in text for text in texts), texts
    assert not any(leaks(text) for text in texts)

    # Logs: the transcripts are in (personal_data = true), masked.
    ended = next(line for line in caplog.text.splitlines() if " ended: " in line)
    assert "caller: my card is [card], call me on [phone] or mail [email]" in ended, ended
    assert "[card]" in next(line for line in caplog.text.splitlines() if "provider error bad_input" in line)
    assert leaks(caplog.text) == []

    # The tape: transcripts, tool arguments and output, text to the model, the end record,
    # the provider's error, and the keypad frames.
    tape_text = await asyncio.to_thread(Path(tape.path).read_text)
    assert leaks(tape_text) == []
    assert tape.header.redacted == ("card", "phone", "email") and tape.header.keypad_masked
    assert view_of(tape).dtmf == [MASKED_DIGIT] * 16 + ["#"]
    end = tape.end
    assert end is not None
    assert ("caller", "my card is [card], call me on [phone] or mail [email]") in [
        (t.role, t.text) for t in end.transcript
    ]
    assert '"card":"[card]"' in tape_text.replace(" ", "")  # the tool's arguments and output, field by field
    # the bot's answer streamed word by word: no delta keeps a piece of the card
    pieces = [r.event for r in tape.records if isinstance(r, ProviderIn) and isinstance(r.event, Transcript)]
    assert any(not p.final for p in pieces) and all(p.text == "" for p in pieces if not p.final)

    # Spans, memory, the ops API.
    assert "[card]" in span_text(spans)
    assert leaks(span_text(spans)) == []
    assert len(rows) == 1 and "[card]" in str(rows[0]) and leaks(str(rows[0])) == []
    assert all(leaks(body) == [] for body in api_bodies)


async def test_a_tape_without_the_callers_audio_still_views_and_replays(tmp_path: Path) -> None:
    """``[recording] caller_audio = false``: silence of the same length stands in for every
    caller frame (to Twilio's side and to the provider's), the bot's side is whole, the page
    says so, and a replay still serves the recorded provider side in step."""
    async with FakeRealtimeServer(FakeOptions(response_ms=600)) as fake:
        text = config(fake, tmp_path).replace("[recording]\n", "[recording]\ncaller_audio = false\n")
        async with running_server(text) as server, server.twilio().call(from_=CALLER) as call:
            await call.pause(200)
            await call.say(to_mulaw(tone(700, 600)))
            await call.wait_for(lambda: call.received_media_ms() >= 500 and call.queued_ms == 0, timeout=8)
            await call.pause(200)
    tape = await finished_tape(tmp_path / "tapes", call.call_sid)
    assert not tape.header.caller_audio
    caller_frames = [m for r in tape.records if isinstance(r, TwilioFrame) and r.direction == "in"
                     if (m := r.message()) is not None and m.get("event") == "media"]  # fmt: skip
    assert len(caller_frames) > 40 and all(set(media_payload(m) or b"\xff") == {0xFF} for m in caller_frames)
    sent = b"".join(r.audio for r in tape.records if isinstance(r, ProviderOut) and r.kind == "audio")
    assert len(sent) > 8000 * 0.8 and set(sent) == {0xFF}  # pcmu to the provider, silent
    view = view_of(tape)
    assert rms_dbfs(mulaw_to_pcm16_array(view.caller_audio)) < -60
    assert dominant_frequency(mulaw_to_pcm16_array(view.heard_audio), 8000) == pytest.approx(440, abs=5)
    page = await asyncio.to_thread(write_tape_html, tape, tmp_path / "call.html")
    assert "caller (not recorded: silence)" in page.read_text()
    result = await replay_call(tape.path, speed=2)
    assert result.ok, result.report()
