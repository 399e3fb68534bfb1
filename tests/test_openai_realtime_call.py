"""Whole phone calls through the running server to the OpenAI Realtime (and Grok) fakes,
driven by the signing Twilio simulator: audio in both directions and exact barge-in."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fakes.openai_realtime_fake import FakeConnection, FakeOptions, FakeRealtimeServer, ToolCue
from tests.support.audio import active_segments, dominant_frequency, level_at, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, running_server
from voicebot.devtools.twilio_sim import SimulatedCall

MARK_INTERVAL_MS = 40  # server.outbound_chunk_ms: one mark per 40 ms media chunk
FRAME_MS = 20  # the simulated caller's playout tick


def call_config(
    fake: FakeRealtimeServer, provider_type: str = "openai_realtime", route_keys: str = "", **extra: str
) -> str:
    provider_keys = "\n".join(f"{k} = {v}" for k, v in extra.items())
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[server]
outbound_chunk_ms = {MARK_INTERVAL_MS}

[providers.s2s]
type = "{provider_type}"
api_key = "test-key"
base_url = "{fake.base_url}"
{provider_keys}

[[routes]]
name = "default"
providers = ["s2s"]
{route_keys}
"""


def segments_from(pcm: np.ndarray, start_ms: float) -> list[tuple[float, float]]:
    return [s for s in active_segments(pcm, 8000, threshold_dbfs=-35) if s[0] >= start_ms - 20]


def assert_one_reply_heard(call: SimulatedCall, ms: float, hz: float) -> None:
    """The server sent one unbroken answer of ``ms`` at ``hz`` (nothing lost, added or cut
    in two) and the caller heard all of it. Heard stretches are summed: on a starved machine
    the simulator's player, in the test's process beside the fake, can wake after a frame's
    slot and play silence there while the next chunk is still on its way (its timeline is
    real time); the check on what was sent is what proves the answer whole."""
    sent = active_segments(call.received_pcm(), 8000, threshold_dbfs=-35)
    assert len(sent) == 1 and sent[0][1] - sent[0][0] == pytest.approx(ms, abs=40)
    assert dominant_frequency(call.received_pcm(), 8000) == pytest.approx(hz, abs=5)
    heard = segments_from(call.heard_pcm(), 0)
    assert sum(end - start for start, end in heard) == pytest.approx(ms, abs=40)
    start, end = heard[0][0], heard[-1][1]
    assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(hz, abs=5)


async def test_pcmu_caller_tone_reaches_the_provider_byte_exact_and_the_bot_tone_is_heard() -> None:
    async with (
        FakeRealtimeServer(FakeOptions(tone_hz=440.0, response_ms=1000)) as fake,
        running_server(call_config(fake)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        caller_tone = to_mulaw(tone(1000, 600))
        await call.say(caller_tone)
        await call.wait_for(lambda: call.received_media_ms() >= 1000, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        await call.pause(100)

        conn = fake.last
        assert conn.input_format == "pcmu" and conn.output_format == "pcmu"
        received = bytes(conn.audio_in)
        # mu-law passthrough: exactly the bytes the caller's line sent, in order, nothing lost.
        assert received == bytes(call.caller_track[: len(received)])
        assert caller_tone in received
        heard_by_fake = conn.input_pcm()
        loud = active_segments(heard_by_fake, 8000, threshold_dbfs=-35)
        assert len(loud) == 1 and loud[0][1] - loud[0][0] == pytest.approx(600, abs=20)
        assert dominant_frequency(heard_by_fake[int(loud[0][0] * 8) : int(loud[0][1] * 8)], 8000) == pytest.approx(
            1000, abs=5
        )

        assert_one_reply_heard(call, 1000, 440)


async def test_pcm24k_caller_tone_is_resampled_to_24khz_and_the_reply_back_to_8khz() -> None:
    async with (
        FakeRealtimeServer(FakeOptions(tone_hz=440.0, response_ms=1000)) as fake,
        running_server(call_config(fake, audio_format='"pcm24k"')) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 600)))
        await call.wait_for(lambda: call.received_media_ms() >= 990, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        await call.pause(100)

        conn = fake.last
        assert conn.session_updates[0]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert conn.input_format == "pcm" and conn.input_rate == 24000
        heard_by_fake = conn.input_pcm()
        # 24 kHz PCM16 at real-time rate: as many samples as the line's 8 kHz frames, times 3.
        assert heard_by_fake.size == pytest.approx(3 * len(call.caller_track), abs=3 * 8 * 200)
        loud = active_segments(heard_by_fake, 24000, threshold_dbfs=-35)
        assert len(loud) == 1 and loud[0][1] - loud[0][0] == pytest.approx(600, abs=20)
        segment = heard_by_fake[int(loud[0][0] * 24) : int(loud[0][1] * 24)]
        assert dominant_frequency(segment, 24000) == pytest.approx(1000, abs=5)

        assert_one_reply_heard(call, 1000, 440)


async def barge_in_call(fake: FakeRealtimeServer, config: str) -> tuple[FakeConnection, float, float]:
    """Bot answers with a 3 s tone streamed faster than real time; the caller listens to
    ~0.7 s of it and talks over it. Returns the fake's connection, the ms of reply the caller
    heard (measured on the audio it played) and when the clear arrived."""
    async with running_server(config) as server, server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 500)))
        await call.wait_for(lambda: call.received_media_ms() > 0, timeout=8)
        reply_start = next(e.t_ms for e in call.log if e.event == "media")
        await call.wait_for(lambda: call.now_ms() >= reply_start + 700, timeout=3)
        await call.say(to_mulaw(tone(800, 400)))
        await call.wait_for(lambda: bool(call.clear_times), timeout=3)
        clear_at = call.clear_times[0]
        await fake.wait_for(lambda: bool(fake.last.truncates), timeout=3)
        await call.pause(300)

        heard = call.heard_pcm()
        # No stale bot audio after the clear.
        after_clear = heard[int((clear_at + 40) * 8) : int((clear_at + 300) * 8)]
        assert level_at(after_clear, 8000, 440) < -50
        played = call.heard_pcm(reply_start, clear_at)
        assert dominant_frequency(played, 8000) == pytest.approx(440, abs=5)
        assert len(call.clear_times) == 1
        # Sum the reply's loud stretches: a provider streaming near real time can leave
        # 20 ms gaps in Twilio's buffer, and those were not heard either.
        reply = [s for s in segments_from(heard, reply_start) if s[0] < clear_at + 20]
        return fake.last, sum(end - start for start, end in reply), clear_at


@pytest.mark.parametrize(
    ("dialect", "speedup"),
    [("openai", 8.0), ("grok", 8.0), ("openai", 1.5)],
    ids=["openai-buffered", "grok-buffered", "openai-still-generating"],
)
async def test_barge_in_clears_twilio_and_truncates_at_what_the_caller_heard(dialect: str, speedup: float) -> None:
    options = FakeOptions(dialect=dialect, tone_hz=440.0, response_ms=3000, speedup=speedup)  # type: ignore[arg-type]
    async with FakeRealtimeServer(options) as fake:
        conn, heard_ms, _ = await barge_in_call(
            fake, call_config(fake, "openai_realtime" if dialect == "openai" else "grok")
        )
    assert 500 < heard_ms < 1500  # the caller really heard part of the reply, not all of it
    [truncate] = conn.truncates
    assert truncate.accepted and isinstance(truncate.audio_end_ms, int)
    assert truncate.item_id == conn.responses[0].item_id and truncate.content_index == 0
    # Exact barge-in: the provider is told what was played, within one mark interval (+ one
    # playout frame of the simulator's 20 ms clock).
    error_ms = truncate.audio_end_ms - heard_ms
    print(f"[{dialect}] heard {heard_ms:.0f} ms, audio_end_ms {truncate.audio_end_ms}, error {error_ms:+.0f} ms")
    assert abs(error_ms) <= MARK_INTERVAL_MS + FRAME_MS
    if speedup >= 4:
        # The answer had finished generating (streamed faster than real time) before the caller
        # spoke: the barge-in did not cut the response, and a cancel that a loaded client sends
        # before it has read response.done only gets the benign error.
        assert conn.responses[0].status == "completed"
        assert {e["code"] for e in conn.errors_sent} <= {"response_cancel_not_active"}
    else:
        # Still generating: the server's interrupt_response and our cancel race; whoever
        # loses, the only error allowed is the benign response_cancel_not_active.
        assert conn.responses[0].status == "cancelled"
        assert {e["code"] for e in conn.errors_sent} <= {"response_cancel_not_active"}


async def test_tool_call_round_trip_through_the_bridge_and_the_answer_is_heard() -> None:
    # This route declares no tools, so the dispatcher answers with an error output, which still
    # exercises call -> function_call_output -> response.create -> spoken answer.
    options = FakeOptions(tone_hz=500.0, response_ms=600, tool_call=ToolCue("get_time", {"zone": "UTC"}))
    async with (
        FakeRealtimeServer(options) as fake,
        running_server(call_config(fake)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: call.received_media_ms() >= 590, timeout=8)
        conn = fake.last
        [output] = conn.tool_outputs
        assert json.loads(output["output"])["error"].startswith("no tool named 'get_time'")
        assert conn.responses[-1].transcript.startswith("the tool said")
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        start, end = segments_from(call.heard_pcm(), 0)[0]
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(500, abs=5)
        assert not conn.errors_sent


@pytest.mark.parametrize("provider_type", ["openai_realtime", "grok"])
async def test_route_greeting_makes_the_bot_speak_first_and_dtmf_gets_an_answer(provider_type: str) -> None:
    dialect = "openai" if provider_type == "openai_realtime" else "grok"
    options = FakeOptions(dialect=dialect, tone_hz=620.0, response_ms=400)  # type: ignore[arg-type]
    route = 'greeting = "Thanks for calling Acme."'
    async with (
        FakeRealtimeServer(options) as fake,
        running_server(call_config(fake, provider_type, route_keys=route)) as server,
        server.twilio().call() as call,
    ):
        # The caller says nothing: the greeting is heard anyway.
        await call.wait_for(lambda: call.received_media_ms() >= 400, timeout=5)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        conn = fake.last
        assert "Thanks for calling Acme." in conn.responses[0].transcript
        start, end = segments_from(call.heard_pcm(), 0)[0]
        assert end - start == pytest.approx(400, abs=40)
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(620, abs=5)

        await call.press("5")
        await call.wait_for(lambda: call.received_media_ms() >= 800, timeout=5)
        typed = [i for i in conn.items_created if i.get("role") == "user"]
        assert typed[0]["content"][0]["type"] == "input_text" and "5" in typed[0]["content"][0]["text"]
        assert len(conn.responses) == 2 and not conn.errors_sent


async def test_provider_drop_mid_answer_is_recovered_with_history_and_the_call_goes_on() -> None:
    options = FakeOptions(tone_hz=440.0, response_ms=600, close_after_chunks=3, fault_once=True)
    async with (
        FakeRealtimeServer(options) as fake,
        running_server(call_config(fake)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        # History items follow session.updated, so wait for them too (not just the update).
        await fake.wait_for(
            lambda: (
                len(fake.connections) == 2 and len(fake.last.session_updates) == 1 and bool(fake.last.items_created)
            ),
            timeout=8,
        )
        first, second = fake.connections
        assert first.closed and len(second.session_updates) == 1
        # The reopened session carries the conversation so far, in GA history items.
        assert second.items_created == [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "caller tone 1000 hertz"}]}
        ]
        assert not second.errors_sent
        heard_before = call.received_media_ms()
        await call.say(to_mulaw(tone(900, 400)))
        await call.wait_for(lambda: call.received_media_ms() >= heard_before + 590, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        assert second.responses[0].status == "completed"
        start, end = segments_from(call.heard_pcm(), 0)[-1]
        assert end - start == pytest.approx(600, abs=40)
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(440, abs=5)
