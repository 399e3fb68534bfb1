"""Whole phone calls through the running server to the GPT-Live fake (full duplex), driven by
the signing Twilio simulator, asserting on the audio: μ-law passthrough, paced playout with
at most the lead queued at Twilio, a mid-sentence yield cut at the phone edge, delegation to
a route tool and to the external agent, and fallback to OpenAI Realtime when Live refuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from s2s.events import Usage
from tests.fakes.gpt_live_fake import FakeLiveServer, LiveFakeOptions
from tests.fakes.openai_realtime_fake import FakeOptions, FakeRealtimeServer
from tests.support.audio import active_segments, dominant_frequency, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, running_server
from transcoding.formats import MULAW_8K
from voicebot.devtools.tape.format import ProviderIn, SessionOpened
from voicebot.devtools.tape.replay import finished_tape, replay_call
from voicebot.devtools.twilio_sim import SimulatedCall

LEAD_MS = 120
FRAME_MS = 20  # the simulated Twilio's playout tick and the pacer's chunk


def call_config(fake: FakeLiveServer, provider_keys: str = "", route_keys: str = "", extra: str = "") -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.live]
type = "gpt_live"
api_key = "test-key"
base_url = "{fake.base_url}"
lead_ms = {LEAD_MS}
{provider_keys}

{extra}

[[routes]]
name = "default"
providers = ["live"]
{route_keys}
"""


def watch_queue(call: SimulatedCall) -> list[float]:
    """Bot audio queued at the simulated Twilio right after each frame the server sends."""
    depths: list[float] = []
    receive: Callable[[str | bytes], None] = call._on_server_frame

    def sampling(frame: str | bytes) -> None:
        receive(frame)
        depths.append(call.queued_ms)

    call._on_server_frame = sampling  # type: ignore[method-assign]
    return depths


def bot_segments(call: SimulatedCall) -> list[tuple[float, float]]:
    return active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35)


def heard_span(call: SimulatedCall) -> tuple[float, float]:
    """From the first to the last bot audio heard (one answer, gaps allowed)."""
    segments = bot_segments(call)
    assert segments, "the caller heard no bot audio"
    return segments[0][0], segments[-1][1]


async def test_caller_tone_reaches_the_model_as_mulaw_and_the_reply_plays_at_real_time_with_a_shallow_buffer() -> None:
    options = LiveFakeOptions(tone_hz=440.0, response_ms=1200, speedup=4.0)
    async with (
        FakeLiveServer(options) as fake,
        running_server(call_config(fake)) as server,
        server.twilio().call() as call,
    ):
        depths = watch_queue(call)
        await call.pause(200)
        caller_tone = to_mulaw(tone(1000, 600))
        await call.say(caller_tone)
        await call.wait_for(lambda: call.received_media_ms() >= 1200, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)

        conn = fake.last
        assert conn.invalid == []
        [start] = conn.of_type("session.start")
        assert start["session"]["audio"]["format"] == {"type": "audio/pcmu", "rate": 8000}
        assert start["session"]["model"] == "gpt-live-1.1" and start["session"]["delegation"] == {"type": "client"}
        # μ-law passthrough: the bytes the caller's line sent, untouched, in order.
        assert caller_tone in bytes(conn.audio_in)
        loud = active_segments(conn.input_pcm(), 8000, threshold_dbfs=-35)
        assert len(loud) == 1 and loud[0][1] - loud[0][0] == pytest.approx(600, abs=20)
        assert "1000 hertz" in " ".join(m.get("delta", "") for m in conn.received) or conn.answers[0].text.endswith(
            "1000 hertz"
        )

        reply = bot_segments(call)
        # All of it is heard (a loaded machine may open short gaps: the buffer is shallow).
        assert sum(end - start for start, end in reply) == pytest.approx(1200, abs=40)
        start, end = reply[0][0], reply[-1][1]
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(440, abs=5)
        # The fake sent it 4x faster than real time; Twilio never held more than the lead.
        assert max(depths) <= LEAD_MS
        assert conn.answers[0].said_ms == 1200


async def test_a_mid_sentence_yield_is_cut_at_twilio_within_one_chunk_and_the_model_is_told_what_was_heard() -> None:
    # Nearly real-time streaming, like the real model: it is still talking when the caller cuts in.
    options = LiveFakeOptions(tone_hz=440.0, response_ms=4000, speedup=1.25)
    async with (
        FakeLiveServer(options) as fake,
        running_server(call_config(fake)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: call.received_media_ms() >= 1000, timeout=8)
        await call.say(to_mulaw(tone(1000, 500)))  # talks over the answer
        await call.wait_for(lambda: bool(call.clear_times), timeout=5)
        conn = fake.last
        await fake.wait_for(lambda: bool(conn.of_type("session.thinking.append")), timeout=5)

        first = conn.answers[0]
        assert first.yielded and first.said_ms < first.planned_ms
        clear_ms = call.clear_times[0]
        # Nothing of the yielded answer after the clear: at most the frame then playing.
        after = call.heard_pcm(clear_ms + FRAME_MS, clear_ms + 600)
        assert not active_segments(after, 8000, threshold_dbfs=-35)
        heard = bot_segments(call)[0]
        assert heard[1] <= clear_ms + FRAME_MS
        assert heard[1] - heard[0] < first.said_ms  # the model said more than the caller heard
        assert not [e for e in call.log if e.event == "media" and clear_ms < e.t_ms < clear_ms + 300]
        [note] = conn.of_type("session.thinking.append")
        assert "played only the first" in note["content"] and note["delegation_id"] is None


async def agent(request: dict[str, Any]) -> dict[str, str]:
    """The route's external agent (``reasoning = { agent = "tests.test_gpt_live_call:agent" }``)."""
    asked.append(request)
    return {"answer": "We open at nine."}


async def lookup(request: dict[str, Any]) -> dict[str, Any]:
    """A route tool (``handler = "tests.test_gpt_live_call:lookup"``)."""
    asked.append(request)
    return {"hours": "9-17"}


asked: list[dict[str, Any]] = []


async def test_client_delegation_asks_the_external_agent_and_the_answer_is_spoken() -> None:
    asked.clear()
    options = LiveFakeOptions(delegate="client", answer_tone_hz=660.0, response_ms=800)
    route = 'reasoning = { agent = "tests.test_gpt_live_call:agent" }'
    async with (
        FakeLiveServer(options) as fake,
        running_server(call_config(fake, route_keys=route)) as server,
        server.twilio().call(from_="+15550001111") as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        conn = fake.last
        await fake.wait_for(lambda: bool(conn.of_type("session.commentary.append")), timeout=8)
        [request] = asked
        assert request["caller"] == "+15550001111" and "1000 hertz" in request["question"]
        [commentary] = conn.of_type("session.commentary.append")
        assert commentary["delegation_id"].startswith("deleg_") and "We open at nine." in commentary["content"]
        await call.wait_for(lambda: call.received_media_ms() >= 800, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        spoken = heard_span(call)
        assert dominant_frequency(call.heard_pcm(spoken[0] + 20, spoken[1] - 20), 8000) == pytest.approx(660, abs=5)
        assert conn.invalid == []


async def test_responses_delegation_runs_the_route_tool_and_continues_the_backend() -> None:
    asked.clear()
    options = LiveFakeOptions(delegate="responses", tool_name="lookup", tool_arguments={"q": "hours"}, response_ms=600)
    route = """
[[routes.tools]]
name = "lookup"
description = "Look something up."
handler = "tests.test_gpt_live_call:lookup"
parameters = { type = "object", properties = { q = { type = "string" } } }
"""
    async with (
        FakeLiveServer(options) as fake,
        running_server(call_config(fake, 'delegation = "responses"', route)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        conn = fake.last
        await fake.wait_for(lambda: bool(conn.of_type("response.create")), timeout=8)
        tools = conn.session["delegation"]["responses"]["tools"]
        assert [t["name"] for t in tools] == ["lookup"] and tools[0]["type"] == "function"
        [request] = asked
        assert request["arguments"] == {"q": "hours"}
        [item] = conn.of_type("response.item.create")
        assert item["item"]["type"] == "function_call_output" and json.loads(item["item"]["output"]) == {
            "hours": "9-17"
        }
        await call.wait_for(lambda: call.received_media_ms() >= 600, timeout=8)
        assert conn.invalid == []


async def test_a_live_route_falls_back_to_openai_realtime_when_live_refuses() -> None:
    async with (
        FakeLiveServer(LiveFakeOptions(refuse_status=503)) as live,
        FakeRealtimeServer(FakeOptions(tone_hz=520.0, response_ms=600)) as realtime,
    ):
        config = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.live]
type = "gpt_live"
api_key = "test-key"
base_url = "{live.base_url}"

[providers.rt]
type = "openai_realtime"
api_key = "test-key"
base_url = "{realtime.base_url}"

[[routes]]
name = "default"
providers = ["live", "rt"]
"""
        async with running_server(config) as server, server.twilio().call() as call:
            await call.pause(200)
            await call.say(to_mulaw(tone(1000, 400)))
            await call.wait_for(lambda: call.received_media_ms() >= 600, timeout=10)
            await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
            assert live.connections == []  # refused at the HTTP upgrade
            spoken = heard_span(call)
            assert dominant_frequency(call.heard_pcm(spoken[0] + 20, spoken[1] - 20), 8000) == pytest.approx(520, abs=5)


async def test_the_model_keeps_hearing_time_pass_while_the_callers_stream_stalls() -> None:
    async with (
        FakeLiveServer(LiveFakeOptions()) as fake,
        running_server(call_config(fake, "input_gap_ms = 100")) as server,
        server.twilio().call() as call,
    ):
        await call.pause(300)
        conn = fake.last
        before = len(conn.audio_in)
        appends_before = conn.appends
        await call.stall(800)
        during = bytes(conn.audio_in[before:])
        # 800 ms went by; the model heard silence for all but the input gap (100 ms) and what
        # it had already been sent ahead of real time (the caller audio buffered at connect).
        assert len(during) / 8 >= 500 and set(during) == {0xFF}
        assert conn.appends - appends_before >= 8  # as time passed, not in one lump
        await call.say(to_mulaw(tone(1000, 300)))  # the line is back: the caller's audio follows
        await fake.wait_for(lambda: to_mulaw(tone(1000, 300)) in bytes(conn.audio_in), timeout=5)


async def test_greeting_and_keypad_entries_reach_the_model_as_commentary_it_speaks() -> None:
    options = LiveFakeOptions(answer_tone_hz=660.0, response_ms=500)
    async with (
        FakeLiveServer(options) as fake,
        running_server(call_config(fake, route_keys='greeting = "Thanks for calling."')) as server,
        server.twilio().call() as call,
    ):
        await call.wait_for(lambda: call.received_media_ms() >= 500, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        start, end = heard_span(call)
        assert start < 2000 and end - start == pytest.approx(500, abs=40)  # spoke first
        conn = fake.last
        [greeting] = conn.of_type("session.commentary.append")
        assert "Thanks for calling." in greeting["content"] and greeting["delegation_id"] is None
        await call.press("7")
        await fake.wait_for(lambda: len(conn.of_type("session.commentary.append")) == 2, timeout=5)
        assert "7" in conn.of_type("session.commentary.append")[1]["content"]
        await call.wait_for(lambda: call.received_media_ms() >= 1000, timeout=8)


async def test_end_call_through_responses_delegation_hangs_up_after_the_goodbye_was_heard() -> None:
    options = LiveFakeOptions(delegate="responses", tool_name="end_call", tool_arguments={"reason": "done"})
    options.response_ms = 700
    route = "[routes.call_control]\nend_call = true"
    async with (
        FakeLiveServer(options) as fake,
        running_server(call_config(fake, 'delegation = "responses"', route)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        await asyncio.wait_for(call.closed.wait(), 15)
        closed_ms = call.now_ms()
        conn = fake.last
        [output] = conn.of_type("response.item.create")
        assert json.loads(output["item"]["output"])["ok"] is True
        start, end = heard_span(call)
        assert end - start == pytest.approx(700, abs=40)  # the whole goodbye was heard
        assert closed_ms >= end


async def test_a_half_duplex_route_falls_back_to_gpt_live_and_its_audio_is_then_paced() -> None:
    async with (
        FakeLiveServer(LiveFakeOptions(response_ms=1000, speedup=4.0)) as live,
        FakeRealtimeServer(FakeOptions(refuse_status=503)) as realtime,
    ):
        config = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.rt]
type = "openai_realtime"
api_key = "test-key"
base_url = "{realtime.base_url}"

[providers.live]
type = "gpt_live"
api_key = "test-key"
base_url = "{live.base_url}"
lead_ms = {LEAD_MS}

[[routes]]
name = "default"
providers = ["rt", "live"]
"""
        async with running_server(config) as server, server.twilio().call() as call:
            depths = watch_queue(call)
            await call.pause(200)
            await call.say(to_mulaw(tone(1000, 400)))
            await call.wait_for(lambda: call.received_media_ms() >= 1000, timeout=10)
            await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
            assert realtime.connections == [] and len(live.connections) == 1
            assert max(depths) <= LEAD_MS


async def test_renewal_replays_the_conversation_into_the_next_live_session() -> None:
    options = LiveFakeOptions(response_ms=400, expires_in_s=4)
    keys = "session_limit_s = 10.0\nrenew_after_s = 7.5"  # renew 2.5 s before expires_at
    async with (
        FakeLiveServer(options) as fake,
        running_server(call_config(fake, keys)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: call.received_media_ms() >= 400, timeout=8)
        await fake.wait_for(lambda: len(fake.connections) == 2 and bool(fake.last.session), timeout=10)
        history = fake.last.session.get("input") or []
        texts = [(item["role"], item["content"][0]["text"]) for item in history]
        assert ("user", "caller 1000 hertz") in texts
        assert ("assistant", "you played 1000 hertz") in texts
        # The old session is closed in the background after the swap, with session.close.
        await fake.wait_for(lambda: bool(fake.connections[0].of_type("session.close")), timeout=5)


async def test_a_gpt_live_call_is_taped_with_its_lead_and_replays_paced_without_divergence(tmp_path: Path) -> None:
    options = LiveFakeOptions(response_ms=800, speedup=4.0)
    recording = f'[recording]\ndir = "{tmp_path}"'
    async with (
        FakeLiveServer(options) as fake,
        running_server(call_config(fake, route_keys="recording = true", extra=recording)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: call.received_media_ms() >= 800, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        await call.pause(300)
    tape = await finished_tape(tmp_path, call.call_sid)
    [session] = [r for r in tape.records if isinstance(r, SessionOpened)]
    assert session.playout_lead_ms == LEAD_MS and session.input_format == MULAW_8K
    assert [r.event for r in tape.records if isinstance(r, ProviderIn) and isinstance(r.event, Usage)]

    result = await replay_call(tape.path, speed=1)
    assert result.ok, result.report()
    heard = active_segments(result.heard_pcm(), 8000, threshold_dbfs=-35)
    start, end = heard[0][0], heard[-1][1]
    assert end - start == pytest.approx(800, abs=60)


async def test_a_dropped_live_session_is_recovered_with_the_conversation_and_the_call_goes_on() -> None:
    options = LiveFakeOptions(response_ms=400)
    async with (
        FakeLiveServer(options) as fake,
        running_server(call_config(fake)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: call.received_media_ms() >= 400, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        await call.pause(800)  # the utterance has ended (transcripts final) before the loss
        await fake.drop()
        await fake.wait_for(lambda: len(fake.connections) == 2 and bool(fake.last.session), timeout=10)
        texts = [(i["role"], i["content"][0]["text"]) for i in fake.last.session.get("input") or []]
        assert texts == [("user", "caller 1000 hertz"), ("assistant", "you played 1000 hertz")]
        await call.say(to_mulaw(tone(1000, 400)))  # the caller goes on talking to the new session
        await call.wait_for(lambda: call.received_media_ms() >= 800, timeout=8)
        assert not call.closed.is_set()
