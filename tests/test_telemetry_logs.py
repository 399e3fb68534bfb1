"""Structured logs of a whole call: every line about the call carries its CallSid, and no
line carries audio or secrets."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from tests.support.audio import to_mulaw, tone
from tests.support.server import AUTH_TOKEN, running_server
from voicebot.server.logs import CallSidFilter, JsonFormatter

# base64 of audio: Twilio media payloads are 160+ bytes -> 200+ base64 characters.
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{64,}={0,2}")
OUR_LOGGERS = ("telephony", "s2s", "voicebot")

CONFIG = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.parrot]
type = "echo"
speed = 50

[[routes]]
name = "logs"
providers = ["parrot"]
"""


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CallSidFilter())
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # the noisiest setting is where a payload would leak
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_every_line_of_a_call_has_its_call_sid_and_no_audio_or_secret(json_lines: io.StringIO) -> None:
    async with running_server(CONFIG) as server:
        async with server.twilio().call() as call:
            await call.pause(100)
            await call.say(to_mulaw(tone(600, 1500)))
            await call.wait_for(lambda: call.received_media_ms() >= 1400, timeout=8)
            await call.pause(400)
            await call.say(to_mulaw(tone(400, 500)))  # barge-in: the bridge logs what was heard
            await call.wait_for(lambda: bool(call.clear_times), timeout=3)
            await call.send_raw('{"event": "media", "media": {"payload": "!!not base64!!"}}')  # a bad frame
            await call.pause(200)
        await call.wait_for(lambda: not server.runtime.active, timeout=5)

    text = json_lines.getvalue()
    entries = [json.loads(line) for line in text.splitlines()]
    ours = [e for e in entries if e["logger"].split(".")[0] in OUR_LOGGERS and e["call_sid"] != "-"]
    about_call = [e for e in entries if e["logger"].split(".")[0] in OUR_LOGGERS and call.call_sid in e["msg"]]
    assert len(about_call) >= 3  # webhook, barge-in, bad frame, end of call
    for entry in about_call:
        assert entry["call_sid"] == call.call_sid, entry
    assert {e["call_sid"] for e in ours} == {call.call_sid}
    assert any("barge-in" in e["msg"] for e in ours)
    assert any("bad Media Streams frame" in e["msg"] for e in ours)
    assert AUTH_TOKEN not in text
    # Lines logged inside the call carry the call's trace id (log <-> trace correlation).
    bridge_lines = [e for e in ours if e["logger"] == "telephony.bridge"]
    assert bridge_lines and all(len(e.get("trace_id", "")) == 32 for e in bridge_lines)
    assert len({e["trace_id"] for e in bridge_lines}) == 1
    leaked = [e for e in entries if BASE64_RUN.search(e["msg"])]
    assert not leaked, leaked[:3]
