"""Hostile and faulty input over real sockets: what an attacker holding one signature, or a
broken peer, can send, and what it must not be able to do to its own call or to others."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import websockets

from telephony.bad_frames import LOGGED_IN_FULL, MAX_BAD_FRAMES
from telephony.twilio_sim import SimulatedCall, parse_stream_twiml
from tests.support.audio import dominant_frequency, to_mulaw, tone
from tests.support.server import running_server
from tests.test_webhook_security import PARAMS, signed


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
        assert flood.close_code == 1008
        assert sent < flood_frames
        await assert_echoes(clean, 1200)
    lines = bad_frame_lines(caplog)
    assert len(lines) == LOGGED_IN_FULL + 1
    assert f"{MAX_BAD_FRAMES} bad Media Streams frames; ending the stream" in lines[-1].getMessage()
