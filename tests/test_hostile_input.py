"""Hostile and faulty input over real sockets: what an attacker holding one signature, or a
broken peer, can send, and what it must not be able to do to its own call or to others."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import secrets

import httpx
import pytest
import websockets

from telephony.bad_frames import LOGGED_IN_FULL, MAX_BAD_FRAMES
from tests.support.audio import dominant_frequency, to_mulaw, tone
from tests.support.server import RunningServer, echo_line_config, running_server
from tests.test_webhook_security import PARAMS, signed
from voicebot.devtools.tape.recorder import tape_filename
from voicebot.devtools.twilio_sim import NoStream, SimulatedCall, parse_stream_twiml
from voicebot.server.logs import CallSidFilter, TextFormatter


def bad_frame_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "bad Media Streams frame" in r.getMessage()]


def asgi_crashes(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None or "Exception in ASGI" in r.getMessage()]


async def assert_echoes(call: SimulatedCall, freq: int) -> None:
    """The call is alive end to end: a tone the caller says comes back at its frequency."""
    before = call.received_media_ms()
    await call.say(to_mulaw(tone(freq, 600)))
    await call.wait_for(lambda: call.received_media_ms() - before >= 550, timeout=8)
    await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
    heard = call.heard_pcm(start_ms=call.now_ms() - 1500)
    assert dominant_frequency(heard, 8000) == pytest.approx(freq, abs=15)


# Frames that used to escape the protocol as RecursionError, OverflowError, ValueError or
# TypeError: the bridge took them for the end of the stream (the call ended as a hang-up).
MALFORMED_MID_CALL = [
    "[" * 20000,
    '{"event": "media", "media": {"payload": "AAAA"}, "x": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"event": "media", "media": {"payload": "AAAA", "timestamp": 1e400}}',
    json.dumps({"event": "start", "start": {"callSid": "CA1", "streamSid": "M", "mediaFormat": {"sampleRate": "abc"}}}),
    json.dumps({"event": "dtmf", "dtmf": {"digit": ["1"]}}),
]


async def test_each_malformed_frame_is_counted_and_skipped_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_server() as server:
        async with server.twilio().call() as call:
            for frame in MALFORMED_MID_CALL:
                await call.send_raw(frame)
            await assert_echoes(call, 700)
            bridge = server.runtime.active[call.call_sid]
            assert bridge.summary.bad_frames == len(MALFORMED_MID_CALL)
            assert bridge.summary.outcome == "in-progress" and not call.closed.is_set()
        await call.wait_for(lambda: not server.runtime.active, timeout=5)
    lines = bad_frame_lines(caplog)
    assert len(lines) == LOGGED_IN_FULL + 1  # the first few in full, then one summary
    assert f"{len(MALFORMED_MID_CALL)} bad Media Streams frames in all" in lines[-1].getMessage()
    assert "nested too deeply" in lines[0].getMessage()
    assert not asgi_crashes(caplog)


async def test_a_bad_start_before_the_real_one_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """``tracks: 5`` in a ``start`` frame used to raise out of the ASGI app."""
    bad_start = {"event": "start", "start": {"callSid": PARAMS["CallSid"], "streamSid": "MZ1", "tracks": 5}}
    async with running_server() as server, httpx.AsyncClient() as client:
        url = server.url + "/twilio/voice"
        response = await client.post(url, data=PARAMS, headers=signed(url, PARAMS))
        stream_url, params = parse_stream_twiml(response.text) or ("", {})
        twilio = server.twilio()
        async with twilio.stream(stream_url, params, PARAMS["CallSid"], before_start=[json.dumps(bad_start)]) as call:
            await assert_echoes(call, 900)
    assert len(bad_frame_lines(caplog)) == 1
    assert "'tracks' must be a list of strings" in bad_frame_lines(caplog)[0].getMessage()
    assert not asgi_crashes(caplog)


async def test_garbage_before_start_is_capped_logged_briefly_and_spares_another_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection that holds only an upgrade signature floods non-JSON frames: it is closed
    after the same number of bad frames a live call may send, its log is a few lines, and a
    call in progress keeps echoing."""
    flood_frames = 200_000
    async with running_server() as server, server.twilio().call() as clean:
        stream_url = server.url.replace("http://", "ws://") + "/twilio/media"
        sent = 0
        async with websockets.connect(stream_url, additional_headers=signed(stream_url, {})) as flood:
            with pytest.raises(websockets.ConnectionClosed):
                for sent in range(flood_frames):  # noqa: B007 (read after the loop)
                    await flood.send("not json at all")
                await flood.recv()
        # 1008 when its close frame is read; 1006 when the flood was still writing as the
        # server closed the socket (the server's side is in its log, checked below).
        assert flood.close_code in (1008, 1006)
        assert sent < flood_frames
        await assert_echoes(clean, 1200)
    lines = bad_frame_lines(caplog)
    assert len(lines) == LOGGED_IN_FULL + 1
    assert f"{MAX_BAD_FRAMES} bad Media Streams frames; ending the stream" in lines[-1].getMessage()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CallSid", "CA" + "1" * 300),
        ("CallSid", "CA" + "1" * 31 + "\nERROR forged line"),
        ("CallSid", "CA" + "1" * 31 + "\x00"),
        ("CallSid", "CA1"),
        ("AccountSid", "AC" + "0" * 31 + "z"),
    ],
    ids=["long", "newline", "nul", "short", "account"],
)
async def test_webhook_refuses_sids_twilio_would_never_send(name: str, value: str) -> None:
    """Signed, but not of Twilio's shape: refused with 400 before anything is keyed on it."""
    params = PARAMS | {name: value}
    async with running_server() as server, httpx.AsyncClient() as client:
        for path in ("/twilio/voice", "/twilio/status", "/twilio/stream-ended"):
            url = server.url + path
            response = await client.post(url, data=params, headers=signed(url, params))
            assert response.status_code == 400, path
            assert response.text == f"malformed {name}"
        assert not server.runtime.handoff.pending


async def test_a_start_frame_with_a_forged_stream_sid_is_refused() -> None:
    async with running_server() as server, httpx.AsyncClient() as client:
        url = server.url + "/twilio/voice"
        response = await client.post(url, data=PARAMS, headers=signed(url, PARAMS))
        stream_url, params = parse_stream_twiml(response.text) or ("", {})
        async with websockets.connect(stream_url, additional_headers=signed(stream_url, {})) as ws:
            start = {"streamSid": "MZ\n" + "1" * 300, "callSid": PARAMS["CallSid"], "customParameters": params}
            await ws.send(json.dumps({"event": "start", "start": start}))
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert (ws.close_code, ws.close_reason) == (1008, "malformed start")
        assert not server.runtime.active


async def test_caller_controlled_values_cannot_forge_log_lines() -> None:
    """The text log format (``voicebot serve`` without --json-logs) escapes control
    characters in every message: a value with a newline stays on its line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CallSidFilter())
    handler.setFormatter(TextFormatter("%(levelname)s %(name)s [%(call_sid)s] %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        async with running_server() as server:
            stream_url = server.url.replace("http://", "ws://") + "/twilio/media"
            async with websockets.connect(stream_url, additional_headers=signed(stream_url, {})) as ws:
                forged = "x\nERROR voicebot [CA0] forged\x00\x1b[2J"
                await ws.send(json.dumps({"event": "media", "media": {"payload": 5}, "x": forged}))
                await ws.send(json.dumps({"event": forged}))
                await ws.send(json.dumps({"event": "start", "start": {"callSid": forged, "streamSid": forged}}))
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert any("forged" in line for line in lines)
    assert not [line for line in lines if "forged" in line and not line.startswith(("WARNING", "INFO"))]
    assert "\x00" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_tape_names_are_bounded_whatever_the_call_sid() -> None:
    name = tape_filename("CA" + "\n/.." * 100)
    assert len(name) < 100 and "/" not in name and "\n" not in name


def test_the_text_log_format_keeps_one_record_on_one_line() -> None:
    record = logging.LogRecord(
        "t", logging.WARNING, __file__, 1, "call %s: %s", ("CA1\nERROR x", "\x00\x1b\u2028"), None
    )
    record.call_sid = "CA\r2"
    line = TextFormatter("%(levelname)s [%(call_sid)s] %(message)s").format(record)
    assert line == "WARNING [CA\\r2] call CA1\\nERROR x: \\x00\\x1b\\u2028"


# -- one CallSid: one plan, one stream, one provider slot ------------------------------------

ONE_SLOT = echo_line_config(
    parrot="max_sessions = 4",
    route_extra='max_call_seconds = 3.0\non_unavailable = { say = "All our lines are busy." }',
    sections="[server]\nstream_connect_timeout_s = 1.0",
)


async def slots_held(server: RunningServer) -> int:
    return await server.run_on_server(server.runtime.slots.count("parrot"))


async def test_a_repeated_webhook_gets_the_same_plan_and_a_token_opens_one_stream() -> None:
    """The same signed webhook 6 times (Twilio retries; an attacker replays): one plan, one
    token, one slot. Its token presented by 6 streams at once: one call, the others refused."""
    async with running_server(ONE_SLOT) as server, contextlib.AsyncExitStack() as stack:
        twilio = server.twilio()
        call_sid = "CA" + secrets.token_hex(16)
        answers = await asyncio.gather(*(twilio.webhook("+15550001111", "+15557654321", call_sid) for _ in range(6)))
        tokens = {(parse_stream_twiml(a.text) or ("", {"token": ""}))[1]["token"] for a in answers}
        assert len(tokens) == 1 and "" not in tokens
        assert len(server.runtime.handoff.pending) == 1 and await slots_held(server) == 1
        stream_url = server.url.replace("http://", "ws://") + "/twilio/media"
        token = tokens.pop()
        streams = [twilio.stream(stream_url, {"token": token}, call_sid) for _ in range(6)]
        calls = await asyncio.gather(*(stack.enter_async_context(s) for s in streams))
        await calls[0].wait_for(lambda: sum(c.closed.is_set() for c in calls) == 5, timeout=10)
        (live,) = [c for c in calls if not c.closed.is_set()]
        assert {c.close_code for c in calls if c is not live} == {1008}
        await assert_echoes(live, 700)
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url + "/healthz")).json()["active_calls"] == 1
        assert await slots_held(server) == 1
        bridge = server.runtime.active[call_sid]
        assert bridge.session is not None


async def test_a_repeated_webhook_for_a_live_call_leaves_its_slot_and_time_limit_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A webhook replayed while the call is live used to leave a second reservation whose
    expiry released the live call's slot and cancelled its max_call_seconds timer."""
    config = ONE_SLOT.replace("max_sessions = 4", "max_sessions = 1")
    async with running_server(config) as server:
        twilio = server.twilio()
        async with twilio.call() as call:
            again = await twilio.webhook("+15550001111", "+15557654321", call.call_sid)
            assert parse_stream_twiml(again.text) is not None  # the call's own plan, not a decline
            await call.pause(1500)  # past stream_connect_timeout_s: any second reservation has expired
            assert await slots_held(server) == 1
            with pytest.raises(NoStream) as declined:  # the one slot is still the live call's
                async with twilio.call():
                    pass
            assert "All our lines are busy." in declined.value.twiml
            await call.wait_for(call.closed.is_set, timeout=6)  # max_call_seconds = 3 still ends it
        assert "max_call_seconds reached; hanging up" in caplog.text
