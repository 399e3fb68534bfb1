"""A cascade session on its own (no call), against the loopback OpenAI fakes through the
``openai`` package: the order of its events on barge-in, the history it sends after a cut,
text that arrives during a tool round, and a part that fails mid-call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from s2s.cascade import CascadeConfig, CascadeProvider
from s2s.cascade.conversation import CUT_OFF_MARK
from s2s.events import AudioOut, Closed, ProviderError, SpeechStarted, ToolCall, Transcript, TurnDone
from s2s.provider import ProviderSession, SessionContext, Turn
from s2s.tools import ToolSpec
from tests.fakes.openai_cascade_fake import ChatReply, FakeOpenAIHttp, FakeTranscription
from tests.support.audio import to_mulaw, tone
from tests.support.session_events import EventLog

SILENCE = b"\xff" * 8 * 400  # 400 ms of mu-law silence: ends a turn at the fake's VAD


@contextlib.asynccontextmanager
async def cascade_session(
    replies: list[ChatReply],
    *,
    speedup: float = 4.0,
    history: tuple[Turn, ...] = (),
    llm: str = "openai_chat",
    tools: tuple[ToolSpec, ...] = (),
) -> AsyncIterator[tuple[ProviderSession, EventLog, FakeOpenAIHttp]]:
    async with FakeTranscription() as stt, FakeOpenAIHttp(replies, speedup=speedup) as http:
        config = CascadeConfig.model_validate(
            {
                "stt": {"type": "openai_realtime", "api_key": "test-key", "base_url": stt.base_url},
                "llm": {"type": llm, "api_key": "test-key", "base_url": http.base_url},
                "tts": {"type": "openai_speech", "api_key": "test-key", "base_url": http.base_url},
            }
        )
        ctx = SessionContext("CAsession", instructions="Be brief.", history=history, tools=tools)
        session = await CascadeProvider("cascade", config).open_session(ctx)
        log = EventLog(session)
        try:
            yield session, log, http
        finally:
            await session.close()
            await log.stop()


async def say(session: ProviderSession, hz: float, ms: int) -> None:
    await session.send_audio(to_mulaw(tone(hz, ms)) + SILENCE)


async def test_after_speech_started_no_audio_of_the_interrupted_answer_follows() -> None:
    long_reply = "One two three. Four five six seven eight nine ten eleven twelve."
    async with cascade_session([ChatReply(long_reply), ChatReply("Okay.")], speedup=1.0) as (session, log, http):
        await say(session, 700, 400)
        first = await log.wait_for(lambda e: isinstance(e, AudioOut), timeout=10)
        await log.until(lambda events: len(http.speech_streams) == 2, timeout=10)  # into sentence two
        await session.send_audio(to_mulaw(tone(1500, 200)))
        await log.wait(SpeechStarted, count=2, timeout=10)  # the first was the caller's question
        await log.until(lambda events: any(isinstance(e, TurnDone) for e in events), timeout=5)

        at = [i for i, e in enumerate(log.events) if isinstance(e, SpeechStarted)][1]
        assert log.events[at] == SpeechStarted(first.item_id)
        after = log.events[at + 1 :]
        assert not [e for e in after if isinstance(e, AudioOut) and e.item_id == first.item_id]
        assert TurnDone(first.item_id, interrupted=True) in after
        # The fake notices the closed stream when it next writes.
        await asyncio.wait_for(http.speech_streams[1].ended.wait(), 5)
        assert not http.speech_streams[1].completed

        # The bridge reports what was heard: 1 s = sentence one (750 ms) and one word of two.
        await session.truncate(first.item_id, 1000)
        await session.send_audio(SILENCE)
        await log.until(lambda events: len(http.chat_requests) == 2, timeout=10)
        assistant = [m for m in http.chat_requests[1]["messages"] if m["role"] == "assistant"]
        assert assistant == [{"role": "assistant", "content": "One two three. Four" + CUT_OFF_MARK}]
        assert Transcript("bot", "One two three. Four" + CUT_OFF_MARK) in log.events


async def test_text_during_a_tool_round_is_answered_at_once_and_joins_the_history_after_the_round() -> None:
    replies = [
        ChatReply("Let me look.", tool=("lookup", {"q": "hours"})),
        ChatReply("One moment please."),  # the answer to the filler request
        ChatReply("We open at nine."),
    ]
    history = (Turn("caller", "Hi"), Turn("bot", "Hello!"))
    async with cascade_session(replies, history=history) as (session, log, http):
        await say(session, 800, 400)
        (call,) = await log.wait(ToolCall, timeout=10)
        await session.send_text("Say a short filler.")
        await log.until(lambda events: len(http.chat_requests) == 2, timeout=10)
        side = http.chat_requests[1]["messages"]
        # Answered from the conversation before the open tool round (a chat model needs the
        # tool result right after its call).
        assert [m["role"] for m in side] == ["system", "user", "assistant", "user", "user"]
        assert side[-1] == {"role": "user", "content": "Say a short filler."}
        await log.until(lambda events: len(log.of(TurnDone)) == 2, timeout=10)

        await session.send_tool_result(call.call_id, '{"hours": "9-5"}')
        await log.until(lambda events: len(http.chat_requests) == 3, timeout=10)
        final = http.chat_requests[2]["messages"]
        assert [(m["role"], m.get("content")) for m in final[-4:]] == [
            ("assistant", "Let me look."),
            ("tool", '{"hours": "9-5"}'),
            ("user", "Say a short filler."),
            ("assistant", "One moment please."),
        ]
        assert final[-4]["tool_calls"][0]["id"] == call.call_id


async def test_a_chat_endpoint_that_fails_mid_call_loses_the_session_for_the_recovery_layer() -> None:
    async with cascade_session([]) as (session, log, http):
        http.replies.append(ChatReply("unused"))
        http.fail_status = 500
        await say(session, 900, 400)
        await log.wait(Closed, timeout=10)
        (error,) = log.of(ProviderError)
        assert error.fatal and "HTTP 500" in error.message
        assert log.of(Closed) == [Closed("cascade ended the session", error=True)]


async def test_the_responses_part_streams_text_and_makes_the_tool_round_trip_as_input_items() -> None:
    replies = [ChatReply("Let me look.", tool=("lookup", {"q": "hours"})), ChatReply("We open at nine.")]
    history = (Turn("caller", "Hi"), Turn("bot", "Hello!"))
    lookup = ToolSpec("lookup", "Looks things up.", {"type": "object", "properties": {"q": {"type": "string"}}})
    async with cascade_session(replies, history=history, llm="openai_responses", tools=(lookup,)) as (
        session,
        log,
        http,
    ):
        await say(session, 800, 400)
        (call,) = await log.wait(ToolCall, timeout=10)
        assert (call.name, call.arguments) == ("lookup", {"q": "hours"})
        await session.send_tool_result(call.call_id, '{"hours": "9-5"}')
        await log.until(lambda events: len(log.of(TurnDone)) == 2, timeout=10)

        first, second = http.responses_requests
        assert first["instructions"] == "Be brief." and first["store"] is False and first["stream"] is True
        assert first["tools"] == [
            {
                "type": "function",
                "name": "lookup",
                "description": "Looks things up.",
                "parameters": lookup.parameters,
                "strict": False,
            }
        ]
        assert first["input"] == [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "tone 800 hertz"},
        ]
        assert second["input"][3:] == [
            {"role": "assistant", "content": "Let me look."},
            {"type": "function_call", "call_id": call.call_id, "name": "lookup", "arguments": '{"q": "hours"}'},
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"hours": "9-5"}'},
        ]
        spoken = [s.text for s in http.speech_streams]
        assert spoken == ["Let me look.", "We open at nine."]
        assert [t.text for t in log.of(Transcript) if t.role == "bot"] == spoken


async def test_a_truncate_from_the_bridges_own_detector_stops_the_answer_being_generated() -> None:
    reply = "One two three. Four five six seven eight nine ten eleven twelve."
    async with cascade_session([ChatReply(reply), ChatReply("Yes?")], speedup=1.0) as (session, log, http):
        await say(session, 700, 400)
        first = await log.wait_for(lambda e: isinstance(e, AudioOut), timeout=10)
        await log.until(lambda events: len(http.speech_streams) == 2, timeout=10)
        # No speech-started from the recogniser: the bridge's local detector heard the caller.
        await session.truncate(first.item_id, 500)
        done = TurnDone(first.item_id, interrupted=True)
        await log.wait_for(lambda e: e == done, timeout=5)
        await asyncio.wait_for(http.speech_streams[1].ended.wait(), 5)
        assert not http.speech_streams[1].completed
        assert len(http.speech_streams) == 2  # nothing more of that answer was synthesised
        await say(session, 900, 300)
        await log.until(lambda events: len(http.chat_requests) == 2, timeout=10)
        assistant = [m for m in http.chat_requests[1]["messages"] if m["role"] == "assistant"]
        assert assistant == [{"role": "assistant", "content": "One two" + CUT_OFF_MARK}]
        after = log.events[log.events.index(done) + 1 :]
        assert not [e for e in after if isinstance(e, AudioOut) and e.item_id == first.item_id]
