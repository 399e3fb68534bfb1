"""A silent caller (issue 17.1) and the time-limit warning (17.6): the pure policy, then whole
calls through the running server to the OpenAI Realtime fake, driven by the Twilio simulator.
Times are asserted on the simulator's stream clock (what the caller heard when), as lower
bounds and order; upper bounds are generous, so a loaded machine cannot break them."""

from __future__ import annotations

import asyncio

from tests.fakes.openai_realtime_fake import FakeConnection, FakeOptions, FakeRealtimeServer
from tests.support.audio import active_segments, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, running_server
from tests.test_telemetry import scrape, value
from voicebot.calls.silence import SilencePolicy, Step
from voicebot.devtools.twilio_sim import SimulatedCall

IDLE_MS = 1000.0
REPLY_MS = 600
TICK_MS = 20  # the simulator plays out (and echoes marks) on 20 ms ticks
UNDERRUN_MS = 300  # far below IDLE_MS: the gap between two answers is never this short


def config(fake: FakeRealtimeServer, route_extra: str, route: str = "default") -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[server]
outbound_chunk_ms = 40

[providers.s2s]
type = "openai_realtime"
api_key = "test-key"
base_url = "{fake.base_url}"

[[routes]]
name = "{route}"
providers = ["s2s"]
{route_extra}
"""


SILENCE = f"""
[routes.silence]
idle_after_s = {IDLE_MS / 1000}
prompts = ["Are you still there?", "Hello, can you hear me?"]
goodbye = "Goodbye for now."
"""


def texts(conn: FakeConnection) -> list[str]:
    """The text turns the model was given, in order."""
    return [c["text"] for item in conn.items_created for c in item.get("content", []) if c.get("type") == "input_text"]


def bot_segments(call: SimulatedCall) -> list[tuple[float, float]]:
    """The bot's answers as heard: (start, end) stream ms. Gaps shorter than ``UNDERRUN_MS``
    are one answer whose audio reached Twilio late on a loaded machine (an underrun), not two."""
    answers: list[tuple[float, float]] = []
    for start, end in active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35):
        if answers and start - answers[-1][1] < UNDERRUN_MS:
            answers[-1] = (answers[-1][0], end)
        else:
            answers.append((start, end))
    return answers


def voiced_ms(call: SimulatedCall, start: float, end: float) -> float:
    """How much bot audio the caller heard between ``start`` and ``end``."""
    segments = active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35)
    return sum(min(e, end) - max(s, start) for s, e in segments if e > start and s < end)


async def closed_at(call: SimulatedCall) -> tuple[float, float]:
    """Stream time when the server closed the stream, and bot audio still queued then."""
    await call.closed.wait()
    return call.now_ms(), call.queued_ms


# -- the policy, pure --------------------------------------------------------------------


def test_the_policy_prompts_after_the_silence_and_not_before_then_says_goodbye() -> None:
    policy = SilencePolicy(5.0, ("one", "two"), "bye", now=100.0)
    assert policy.deadline() == 105.0
    assert policy.due(104.9) is None
    first = policy.due(105.0)
    assert first is not None and (first.step, first.text, first.number) == (Step.PROMPT, "one", 1)
    policy.text_sent(105.0)
    policy.bot_audio(105.5)
    assert policy.deadline() is None  # the bot's turn is open
    policy.bot_turn_done(106.0)
    policy.bot_heard(107.0)  # its audio played until 107
    assert policy.due(111.9) is None and policy.deadline() == 112.0
    second = policy.due(112.0)
    assert second is not None and (second.step, second.text) == (Step.PROMPT, "two")
    goodbye = policy.due(117.0)
    assert goodbye is not None and (goodbye.step, goodbye.text, goodbye.number) == (Step.GOODBYE, "bye", 3)
    assert policy.deadline() is None and policy.due(1000.0) is None


def test_caller_speech_and_pending_tools_hold_the_clock_and_speech_starts_the_list_over() -> None:
    policy = SilencePolicy(5.0, ("one", "two"), "bye", now=0.0)
    assert policy.due(5.0) is not None
    policy.caller_started(6.0)
    assert policy.deadline() is None  # no prompt while the caller speaks, however long
    policy.caller_stopped(20.0)
    policy.tool_called("c1", 21.0)
    assert policy.deadline() is None
    policy.tool_answered("c1", 30.0)
    again = policy.due(35.0)
    assert again is not None and again.text == "one"  # the list started over


# -- whole calls -------------------------------------------------------------------------


async def test_a_silent_caller_is_prompted_twice_then_hears_goodbye_and_the_bot_hangs_up() -> None:
    async with (
        FakeRealtimeServer(FakeOptions(tone_hz=440.0, response_ms=REPLY_MS)) as fake,
        running_server(config(fake, SILENCE, route="silent-caller")) as server,
        server.twilio().call() as call,
    ):
        closing = asyncio.ensure_future(closed_at(call))
        end_ms, queued_ms = await asyncio.wait_for(closing, 20)
        samples = await scrape(server.url)
        segments = bot_segments(call)
        heard = [voiced_ms(call, start, end) for start, end in segments]
        assert call.ws.close_reason == "caller-silent"
        conn = fake.last

    said = texts(conn)
    assert len(said) == 3
    assert "Are you still there?" in said[0] and "Hello, can you hear me?" in said[1]
    assert "Goodbye for now." in said[2]
    # Three answers, each heard in full (nothing cut by a barge-in or the hang-up).
    assert len(segments) == 3, segments
    assert all(abs(ms - REPLY_MS) <= 2 * TICK_MS for ms in heard), (segments, heard)
    # Each step came after the configured silence and not before: from the stream's start,
    # then from the end of what the caller last heard.
    starts = [start for start, _ in segments]
    quiet_before = [starts[0]] + [starts[i + 1] - segments[i][1] for i in range(2)]
    assert all(IDLE_MS - TICK_MS <= q <= IDLE_MS + 3000 for q in quiet_before), quiet_before
    # The hang-up came after the goodbye had been heard: nothing left queued at Twilio.
    assert end_ms >= segments[-1][1] and queued_ms == 0
    # Counted (the telemetry is per process; this route is this test's only).
    steps = "voicebot_silence_steps_total"
    assert value(samples, steps, route="silent-caller", step="prompt") == 2
    assert value(samples, steps, route="silent-caller", step="goodbye") == 1


async def test_caller_speech_postpones_the_prompt_and_starts_the_list_over() -> None:
    async with (
        FakeRealtimeServer(FakeOptions(tone_hz=440.0, response_ms=REPLY_MS)) as fake,
        running_server(config(fake, SILENCE)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(600)
        spoke_at = call.now_ms()
        await call.say(to_mulaw(tone(1000, 500)))  # before the first deadline
        conn = fake.last
        await fake.wait_for(lambda: len(texts(conn)) >= 1, timeout=10)
        await call.wait_for(lambda: len(bot_segments(call)) >= 2 and call.queued_ms == 0, timeout=10)
        await call.say(to_mulaw(tone(1000, 500)))  # answers the prompt
        await fake.wait_for(lambda: len(texts(conn)) >= 2, timeout=10)
        await call.wait_for(lambda: len(bot_segments(call)) >= 4 and call.queued_ms == 0, timeout=10)
        segments = bot_segments(call)
        said = texts(conn)
        await call.hangup()

    # The answer to the caller's speech, then the first prompt after a full silence.
    answer, prompt = segments[0], segments[1]
    assert answer[0] > spoke_at
    assert prompt[0] - answer[1] >= IDLE_MS - TICK_MS
    # The caller answered the prompt, so the next silence gets the first prompt again.
    assert "Are you still there?" in said[0] and "Are you still there?" in said[1]
    assert segments[3][0] - segments[2][1] >= IDLE_MS - TICK_MS


async def test_the_model_is_told_before_max_call_seconds_cuts_the_call() -> None:
    route = 'max_call_seconds = 3.0\ntime_warning_s = 2.0\ntime_warning = "One minute left: wrap up."'
    async with (
        FakeRealtimeServer(FakeOptions(tone_hz=440.0, response_ms=400)) as fake,
        running_server(config(fake, route)) as server,
        server.twilio().call() as call,
    ):
        closing = asyncio.ensure_future(closed_at(call))
        end_ms, _ = await asyncio.wait_for(closing, 15)
        segments = bot_segments(call)
        heard = voiced_ms(call, 0, end_ms)
        assert call.ws.close_reason == "max-duration"
        conn = fake.last

    assert [t for t in texts(conn) if "One minute left: wrap up." in t]
    # The model's wrap-up answer came after the warning time and reached the caller before the end.
    assert len(segments) == 1, segments
    start, end = segments[0]
    assert start >= 1000 - TICK_MS and end <= end_ms
    assert abs(heard - 400) <= 2 * TICK_MS
