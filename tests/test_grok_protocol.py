"""Grok's dialect of the realtime protocol (sans I/O)."""

from __future__ import annotations

import json
from typing import Any

from s2s.events import ProviderError, Transcript
from s2s.grok import GrokConfig, GrokProtocol
from s2s.provider import SessionContext


def feed(p: GrokProtocol, *events: dict[str, Any]) -> list[Any]:
    for event in events:
        p.receive(json.dumps(event))
    return p.events_received()


def sent(p: GrokProtocol) -> list[dict[str, Any]]:
    return [json.loads(frame) for frame in p.data_to_send()]


def grok(**config: Any) -> GrokProtocol:
    return GrokProtocol(SessionContext("CA-grok"), GrokConfig(type="grok", api_key="k", **config))


def test_conversation_created_opens_the_handshake_and_session_created_does_not_repeat_it() -> None:
    p = grok(audio_format="pcm24k")
    feed(p, {"type": "conversation.created", "conversation": {"id": "c"}})
    [update] = sent(p)
    session = update["session"]
    assert "type" not in session and "output_modalities" not in session
    assert session["voice"] == "eve" and session["turn_detection"] == {"type": "server_vad"}
    assert session["audio"] == {
        "input": {"format": {"type": "audio/pcm", "rate": 24000}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}},
    }
    feed(p, {"type": "session.created", "session": {}}, {"type": "ping"})
    assert sent(p) == []
    feed(p, {"type": "session.updated", "session": {}})
    assert p.ready


def ready() -> GrokProtocol:
    p = grok()
    feed(p, {"type": "session.created"}, {"type": "session.updated"})
    sent(p)
    return p


def test_in_progress_and_updated_transcripts_are_partial() -> None:
    p = ready()
    events = feed(
        p,
        {"type": "conversation.item.input_audio_transcription.updated", "item_id": "u", "transcript": "hel"},
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "u",
            "status": "in_progress",
            "transcript": "hello",
        },
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "u",
            "status": "completed",
            "transcript": "hello you",
        },
        {"type": "ping", "timestamp": 1},
    )
    assert events == [
        Transcript("caller", "hel", False, "u"),
        Transcript("caller", "hello", False, "u"),
        Transcript("caller", "hello you", True, "u"),
    ]


def test_truncate_errors_are_ignored_but_other_errors_are_not() -> None:
    p = ready()
    feed(p, {"type": "response.created", "response": {"id": "r"}})
    feed(p, {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": "////"})
    p.truncate("i", 1)
    cancel, truncate = sent(p)
    assert cancel["type"] == "response.cancel"  # Grok gets the cancel too (pipecat always sends it)
    assert truncate["type"] == "conversation.item.truncate" and truncate["audio_end_ms"] == 0  # 3 bytes < 1 ms
    by_id = {"type": "error", "error": {"code": "unsupported", "message": "no", "event_id": truncate["event_id"]}}
    by_text = {"type": "error", "error": {"message": "conversation.item.truncate is not supported"}}
    other = {"type": "error", "error": {"code": "invalid_value", "message": "bad voice"}}
    assert feed(p, by_id, by_text) == []
    assert feed(p, other) == [ProviderError("invalid_value", "bad voice")]


def test_a_tool_call_runs_once_on_whichever_completion_signal_comes_first() -> None:
    from s2s.events import ToolCall

    p = ready()
    feed(p, {"type": "response.created", "response": {"id": "r"}})
    args_done = {
        "type": "response.function_call_arguments.done",
        "response_id": "r",
        "item_id": "fc",
        "call_id": "call-1",
        "name": "lookup",
        "arguments": '{"q": 1}',
    }
    # xAI shows no item status on output_item.done: a missing one is a complete call.
    item_done = {
        "type": "response.output_item.done",
        "response_id": "r",
        "item": {"id": "fc", "type": "function_call", "call_id": "call-1", "name": "lookup", "arguments": '{"q": 1}'},
    }
    assert feed(p, args_done) == [ToolCall("call-1", "lookup", {"q": 1})]
    assert feed(p, item_done) == []
    # The other order: output_item.done first, then the arguments event changes nothing.
    feed(p, {"type": "response.done", "response": {"id": "r", "status": "completed"}})
    sent(p)
    feed(p, {"type": "response.created", "response": {"id": "r2"}})
    second = {**item_done, "response_id": "r2", "item": {**item_done["item"], "call_id": "call-2"}}
    assert feed(p, second) == [ToolCall("call-2", "lookup", {"q": 1})]
    assert feed(p, {**args_done, "response_id": "r2", "call_id": "call-2"}) == []


def test_arguments_of_a_response_we_cancelled_do_not_run() -> None:
    p = ready()
    feed(p, {"type": "response.created", "response": {"id": "r"}})
    feed(p, {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": "////"})
    p.truncate("i", 0)
    sent(p)
    cut = {
        "type": "response.function_call_arguments.done",
        "response_id": "r",
        "item_id": "fc",
        "call_id": "call-9",
        "name": "lookup",
        "arguments": '{"q": ',
    }
    assert feed(p, cut) == []


def test_grok_wording_of_a_cancel_after_the_response_ended_is_harmless() -> None:
    p = ready()
    feed(p, {"type": "response.created", "response": {"id": "r"}})
    feed(p, {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": "////"})
    p.truncate("i", 0)
    cancel = sent(p)[0]
    assert cancel["type"] == "response.cancel"
    by_id = {
        "type": "error",
        "error": {"code": "invalid_request", "message": "No active response", "event_id": cancel["event_id"]},
    }
    by_text = {"type": "error", "error": {"message": "Cannot cancel: response is not active"}}
    assert feed(p, by_id, by_text) == []
