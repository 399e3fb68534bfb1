"""The GPT-Live protocol object on its own (sans I/O): JSON in, neutral events out, client
frames checked against the SDK's client event models (the fake server's validator)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from s2s.events import AudioOut, ProviderError, SpeechStarted, SpeechStopped, ToolCall, Transcript, TurnDone, Usage
from s2s.gpt_live import GptLiveConfig, GptLiveProtocol
from s2s.gpt_live.protocol import BOT_QUIET_MS, CALLER_QUIET_MS
from s2s.provider import SessionContext, Turn
from s2s.tools import ToolSpec
from tests.fakes.gpt_live_fake import validate_client_event

ASK_AGENT = ToolSpec("ask_agent", "Ask the business's assistant.", {"type": "object", "properties": {}})
LOOKUP = ToolSpec("lookup", "Look something up.", {"type": "object", "properties": {"q": {"type": "string"}}})


def started(session_id: str = "live_sess_1") -> dict[str, Any]:
    return {
        "type": "session.started",
        "event_id": "event_1",
        "session": {"id": session_id, "expires_at": 2_000_000_000, "model": "gpt-live-1.1", "status": "active"},
    }


def ready(ctx: SessionContext | None = None, **config: Any) -> GptLiveProtocol:
    protocol = GptLiveProtocol(ctx or SessionContext("CA1"), GptLiveConfig(api_key="k", **config))  # type: ignore[arg-type]
    protocol.start()
    protocol.receive(json.dumps(started()))
    sent(protocol)  # session.start
    return protocol


def sent(protocol: GptLiveProtocol) -> list[dict[str, Any]]:
    frames = [json.loads(f) for f in protocol.data_to_send()]
    for frame in frames:
        validate_client_event(frame)  # every frame is a valid SDK client event
    return frames


def audio_delta(ms: int) -> str:
    return json.dumps({"type": "session.output_audio.delta", "delta": base64.b64encode(b"\x10" * 8 * ms).decode()})


def caller_delta(text: str) -> str:
    return json.dumps(
        {"type": "session.input_transcript.delta", "event_id": "e", "delta": text, "start_ms": 0, "end_ms": 0}
    )


def bot_delta(text: str) -> str:
    return json.dumps(
        {"type": "session.output_transcript.delta", "event_id": "e", "delta": text, "start_ms": 0, "end_ms": 0}
    )


def test_session_start_asks_for_mulaw_8k_with_history_and_the_greeting_follows_started() -> None:
    ctx = SessionContext(
        "CA1",
        instructions="Be brief.",
        greeting="Hello!",
        history=(Turn("caller", "hi"), Turn("bot", "hello")),
    )
    protocol = GptLiveProtocol(ctx, GptLiveConfig(api_key="k", voice="cedar"))  # type: ignore[arg-type]
    protocol.start()
    [start] = sent(protocol)
    session = start["session"]
    assert session["audio"] == {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": "cedar"}}
    assert session["model"] == "gpt-live-1.1" and session["instructions"] == "Be brief."  # no tools: no note
    assert [item["role"] for item in session["input"]] == ["user", "assistant"]
    assert not protocol.ready
    protocol.receive(json.dumps(started()))
    [greeting] = sent(protocol)
    assert greeting["type"] == "session.commentary.append" and "Hello!" in greeting["content"]
    assert protocol.ready and protocol.session_id == "live_sess_1"


def test_audio_makes_an_utterance_that_ends_when_the_input_clock_has_played_it_and_gone_quiet() -> None:
    protocol = ready()
    protocol.receive(audio_delta(400))
    protocol.receive(bot_delta("Hello there"))
    events = protocol.events_received()
    assert isinstance(events[0], AudioOut) and events[0].item_id == "live-1"
    protocol.send_audio(b"\xff" * 8 * (400 + BOT_QUIET_MS - 20))
    assert not any(isinstance(e, TurnDone) for e in protocol.events_received())
    protocol.send_audio(b"\xff" * 8 * 20)
    assert protocol.events_received() == [
        Transcript("bot", "Hello there", final=True, item_id="live-1"),
        TurnDone(item_id="live-1", interrupted=False),
    ]
    protocol.receive(audio_delta(20))
    assert protocol.events_received()[0] == AudioOut(b"\x10" * 160, "live-2")


def test_caller_speech_over_the_bot_is_a_barge_in_that_ends_the_utterance_and_later_audio_is_new() -> None:
    protocol = ready()
    protocol.receive(audio_delta(1000))
    protocol.events_received()
    protocol.receive(caller_delta("wait "))
    assert protocol.events_received() == [
        SpeechStarted(item_id="live-1"),
        TurnDone(item_id="live-1", interrupted=True),
        Transcript("caller", "wait ", final=False),
    ]
    protocol.receive(caller_delta("a moment"))
    protocol.send_audio(b"\xff" * 8 * CALLER_QUIET_MS)
    events = protocol.events_received()
    assert events[-2:] == [Transcript("caller", "wait a moment", final=True), SpeechStopped()]
    protocol.receive(audio_delta(20))
    assert protocol.events_received()[0].item_id == "live-2"  # type: ignore[union-attr]


def test_a_caller_who_heard_less_than_was_said_gets_a_silent_note_naming_what_they_heard() -> None:
    protocol = ready()
    protocol.receive(audio_delta(2000))
    protocol.receive(bot_delta("one two three four"))
    protocol.receive(caller_delta("stop"))
    protocol.events_received()
    protocol.truncate("live-1", 1000)
    [note] = sent(protocol)
    assert note["type"] == "session.thinking.append" and note["delegation_id"] is None
    assert "first 1.0 s of the 2.0 s" in note["content"] and '"one two"' in note["content"]
    protocol.truncate("live-1", 1950)  # heard all but a sliver: nothing to say
    assert sent(protocol) == []


def test_client_delegation_asks_the_agent_with_the_callers_words_and_answers_with_commentary() -> None:
    protocol = ready(SessionContext("CA1", tools=(ASK_AGENT,)))
    sent(protocol)
    protocol.receive(caller_delta("when do you open"))
    protocol.receive(
        json.dumps(
            {
                "type": "session.delegation.created",
                "event_id": "e",
                "offset_ms": 1200,
                "delegation": {"id": "deleg_1", "target": "client", "type": "delegation"},
            }
        )
    )
    call = protocol.events_received()[-1]
    assert call == ToolCall("deleg_1", "ask_agent", {"question": "when do you open"})
    protocol.send_tool_result("deleg_1", json.dumps({"answer": "At nine."}))
    [reply] = sent(protocol)
    assert reply["type"] == "session.commentary.append" and reply["delegation_id"] == "deleg_1"
    assert reply["content"] == "Answer for the caller: At nine."


def test_without_an_agent_a_delegation_is_answered_with_a_thinking_note_not_left_hanging() -> None:
    protocol = ready()
    sent(protocol)
    protocol.receive(
        json.dumps(
            {
                "type": "session.delegation.created",
                "event_id": "e",
                "offset_ms": 10,
                "delegation": {"id": "deleg_9", "target": "client", "type": "delegation"},
            }
        )
    )
    assert not [e for e in protocol.events_received() if isinstance(e, ToolCall)]
    [note] = sent(protocol)
    assert note["type"] == "session.thinking.append" and note["delegation_id"] == "deleg_9"


def backend(delegation_id: str, nested: dict[str, Any]) -> str:
    return json.dumps({"type": "response.event", "event_id": "e", "delegation_id": delegation_id, "event": nested})


def function_call(call_id: str) -> dict[str, Any]:
    return {
        "type": "response.output_item.done",
        "output_index": 0,
        "sequence_number": 1,
        "item": {"type": "function_call", "call_id": call_id, "name": "lookup", "arguments": '{"q": "x"}'},
    }


def test_responses_delegation_declares_the_tools_and_continues_once_every_call_is_answered() -> None:
    ctx = SessionContext("CA1", tools=(LOOKUP,))
    protocol = GptLiveProtocol(ctx, GptLiveConfig(api_key="k", delegation="responses", responses_model="gpt-5.5"))  # type: ignore[arg-type]
    protocol.start()
    [start] = sent(protocol)
    delegation = start["session"]["delegation"]
    assert delegation["type"] == "responses" and delegation["responses"]["model"] == "gpt-5.5"
    assert delegation["responses"]["tools"][0]["name"] == "lookup"
    assert "delegating" in start["session"]["instructions"]  # tools are reached by delegating
    protocol.receive(json.dumps(started()))
    for call_id in ("call_1", "call_2"):
        protocol.receive(backend("deleg_1", function_call(call_id)))
    protocol.receive(backend("deleg_1", {"type": "response.completed", "sequence_number": 3, "response": {}}))
    calls = [e for e in protocol.events_received() if isinstance(e, ToolCall)]
    assert [c.call_id for c in calls] == ["call_1", "call_2"] and calls[0].arguments == {"q": "x"}
    protocol.send_tool_result("call_1", '{"a": 1}')
    assert [f["type"] for f in sent(protocol)] == ["response.item.create"]
    protocol.send_tool_result("call_2", '{"a": 2}')
    assert [f["type"] for f in sent(protocol)] == ["response.item.create", "response.create"]


def test_usage_errors_and_bad_frames() -> None:
    protocol = ready()
    protocol.receive(json.dumps({"type": "session.usage.updated", "event_id": "e", "usage": {"seconds": 61.0}}))
    assert protocol.events_received() == [Usage("live_sess_1", 61.0)]
    protocol.receive("not json")
    protocol.receive(json.dumps({"type": "session.output_audio.delta", "delta": "@@@"}))
    protocol.receive(json.dumps({"type": "session.usage.updated", "event_id": "e"}))  # no usage
    errors = protocol.events_received()
    assert [e.code for e in errors] == ["bad_frame", "bad_audio", "bad_event"]  # type: ignore[union-attr]
    assert not protocol.failed
    protocol.receive(
        json.dumps(
            {
                "type": "error",
                "event_id": "e",
                "error": {"code": "invalid_api_key", "message": "no", "type": "authentication_error"},
            }
        )
    )
    assert protocol.failed and protocol.events_received() == [ProviderError("invalid_api_key", "no", fatal=True)]


@pytest.mark.parametrize(("reason", "fatal"), [("close_requested", False), ("expired", True)])
def test_session_closed_reports_final_usage_and_an_unasked_close_is_fatal(reason: str, fatal: bool) -> None:
    protocol = ready()
    protocol.receive(
        json.dumps(
            {
                "type": "session.closed",
                "event_id": "e",
                "reason": reason,
                "session": started()["session"],
                "usage": {"seconds": 42.0},
            }
        )
    )
    events = protocol.events_received()
    assert events[0] == Usage("live_sess_1", 42.0, final=True)
    assert protocol.failed is fatal


def test_the_fakes_sdk_check_refuses_frames_the_sdk_does_not_describe() -> None:
    append = {"type": "session.commentary.append", "content": "x", "delegation_id": None}
    validate_client_event(append)
    with pytest.raises(ValueError, match="bogus"):
        validate_client_event({**append, "bogus": 1})
    nested = {"model": "gpt-live-1.1", "audio": {"output": {"voice": "marin", "speed": 2}}}
    with pytest.raises(ValueError, match="speed"):
        validate_client_event({"type": "session.start", "session": nested})
    with pytest.raises(ValueError, match="audio"):
        validate_client_event({"type": "session.input_audio.append"})
    with pytest.raises(ValueError, match="not a type"):
        validate_client_event({"type": "response.cancel"})  # Realtime has it; Live does not
