"""The shared realtime protocol object (sans I/O), driven with plain JSON frames."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from s2s.events import AudioOut, ProviderError, SpeechStarted, ToolCall, Transcript, TurnDone
from s2s.openai_realtime import OpenAIRealtimeConfig, OpenAIRealtimeProtocol
from s2s.provider import SessionContext


def protocol(audio_format: str = "pcmu", **ctx: Any) -> OpenAIRealtimeProtocol:
    config = OpenAIRealtimeConfig(type="openai_realtime", api_key="k", audio_format=audio_format)  # type: ignore[arg-type]
    return OpenAIRealtimeProtocol(SessionContext("CA-test", **ctx), config)


def feed(p: OpenAIRealtimeProtocol, *events: dict[str, Any]) -> list[Any]:
    for event in events:
        p.receive(json.dumps(event))
    return p.events_received()


def sent(p: OpenAIRealtimeProtocol) -> list[dict[str, Any]]:
    return [json.loads(frame) for frame in p.data_to_send()]


def ready(audio_format: str = "pcmu", **ctx: Any) -> OpenAIRealtimeProtocol:
    p = protocol(audio_format, **ctx)
    feed(p, {"type": "session.created", "session": {}})
    assert [m["type"] for m in sent(p)] == ["session.update"]
    feed(p, {"type": "session.updated", "session": {}})
    assert p.ready
    return p


def delta(item: str, nbytes: int, name: str = "response.output_audio.delta", rid: str = "r1") -> dict[str, Any]:
    return {"type": name, "response_id": rid, "item_id": item, "delta": base64.b64encode(b"\x7f" * nbytes).decode()}


def created(rid: str = "r1") -> dict[str, Any]:
    return {"type": "response.created", "response": {"id": rid, "status": "in_progress"}}


def done(rid: str = "r1", status: str = "completed") -> dict[str, Any]:
    return {"type": "response.done", "response": {"id": rid, "status": status, "output": []}}


def call_item(call_id: str, status: str = "completed", arguments: str = '{"a": 1}') -> dict[str, Any]:
    return {
        "type": "response.output_item.done",
        "response_id": "r1",
        "item": {"type": "function_call", "status": status, "call_id": call_id, "name": "f", "arguments": arguments},
    }


def test_nothing_is_sent_before_session_created_and_audio_waits_for_session_updated() -> None:
    p = protocol()
    p.send_audio(b"\xff" * 160)
    assert p.data_to_send() == []
    feed(p, {"type": "session.created", "session": {}})
    p.send_audio(b"\xff" * 160)  # still configuring: dropped, as the bridge buffers until open
    assert [m["type"] for m in sent(p)] == ["session.update"]
    feed(p, {"type": "session.updated", "session": {}})
    p.send_audio(b"\xff" * 160)
    assert sent(p) == [{"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\xff" * 160).decode()}]


@pytest.mark.parametrize(
    ("audio_name", "transcript_name", "text_name"),
    [
        ("response.output_audio.delta", "response.output_audio_transcript.done", "response.output_text.delta"),
        ("response.audio.delta", "response.audio_transcript.done", "response.text.delta"),
    ],
    ids=["ga", "beta"],
)
def test_ga_and_beta_event_names_both_map(audio_name: str, transcript_name: str, text_name: str) -> None:
    p = ready()
    events = feed(
        p,
        created(),
        delta("i1", 80, audio_name),
        {"type": transcript_name, "item_id": "i1", "transcript": " Hello there. "},
        {"type": text_name, "item_id": "i1", "delta": "Hel"},
        done(),
    )
    assert events == [
        AudioOut(b"\x7f" * 80, "i1"),
        Transcript("bot", "Hello there.", final=True, item_id="i1"),
        Transcript("bot", "Hel", final=False, item_id="i1"),
        TurnDone("i1", interrupted=False),
    ]


def test_truncate_caps_at_audio_sent_in_pcm24k_as_int() -> None:
    p = ready("pcm24k")
    feed(p, created(), delta("i1", 4800), done())  # 4800 bytes of 24 kHz PCM16 = 100 ms
    assert p.sent_ms("i1") == 100
    p.truncate("i1", 250)
    p.truncate("i1", 50)
    truncates = sent(p)
    assert [m["audio_end_ms"] for m in truncates] == [100, 50]
    assert all(m["type"] == "conversation.item.truncate" and m["content_index"] == 0 for m in truncates)


def test_truncate_caps_at_audio_sent_in_pcmu() -> None:
    p = ready()
    feed(p, created(), delta("i1", 1000))  # 125 ms of mu-law
    p.truncate("i1", 999)
    cancel, truncate = sent(p)
    assert cancel == {"type": "response.cancel", "response_id": "r1", "event_id": cancel["event_id"]}
    assert truncate["audio_end_ms"] == 125 and isinstance(truncate["audio_end_ms"], int)


def test_cancel_only_while_generating_and_only_once() -> None:
    p = ready()
    feed(p, created(), delta("i1", 800))
    p.truncate("i1", 10)
    p.truncate("i1", 20)
    assert [m["type"] for m in sent(p)] == [
        "response.cancel",
        "conversation.item.truncate",
        "conversation.item.truncate",
    ]
    assert feed(p, done(status="cancelled")) == [TurnDone("i1", interrupted=True)]
    p.truncate("i1", 30)
    assert [m["type"] for m in sent(p)] == ["conversation.item.truncate"]


def test_deltas_of_a_truncated_item_are_dropped_and_not_counted() -> None:
    p = ready()
    feed(p, created(), delta("i1", 800))
    p.truncate("i1", 50)
    assert feed(p, delta("i1", 800)) == []
    assert p.sent_ms("i1") == 100


def test_truncate_of_an_item_without_audio_sends_nothing() -> None:
    p = ready()
    p.truncate("never-spoke", 100)
    assert sent(p) == []


def test_speech_started_names_the_bot_item_being_played() -> None:
    p = ready()
    feed(p, created(), delta("i1", 80))
    assert feed(p, {"type": "input_audio_buffer.speech_started", "item_id": "user1"}) == [SpeechStarted("i1")]


def test_tool_outputs_after_response_done_trigger_one_response_create_after_the_last() -> None:
    p = ready()
    events = feed(p, created(), call_item("c1"), call_item("c2", arguments='{"b": 2}'), done())
    assert [e for e in events if isinstance(e, ToolCall)] == [
        ToolCall("c1", "f", {"a": 1}),
        ToolCall("c2", "f", {"b": 2}),
    ]
    p.send_tool_result("c1", "one")
    assert [m["item"] for m in sent(p)] == [{"type": "function_call_output", "call_id": "c1", "output": "one"}]
    p.send_tool_result("c2", "two")
    assert [m["type"] for m in sent(p)] == ["conversation.item.create", "response.create"]


def test_tool_output_before_response_done_waits_for_it() -> None:
    p = ready()
    feed(p, created(), call_item("c1"))
    p.send_tool_result("c1", "fast")
    assert [m["type"] for m in sent(p)] == ["conversation.item.create"]
    feed(p, done())
    assert [m["type"] for m in sent(p)] == ["response.create"]


def test_incomplete_function_calls_and_cut_short_arguments_are_not_acted_on() -> None:
    p = ready()
    events = feed(
        p,
        created(),
        {"type": "response.function_call_arguments.done", "call_id": "c1", "name": "f", "arguments": '{"a"'},
        call_item("c1", status="incomplete", arguments='{"a"'),
        done(status="cancelled"),
    )
    assert not [e for e in events if isinstance(e, ToolCall)]
    assert sent(p) == []


def test_invalid_tool_arguments_are_reported_and_answered_so_the_model_is_not_stuck() -> None:
    p = ready()
    events = feed(p, created(), call_item("c1", arguments="{not json"), done())
    assert [e.code for e in events if isinstance(e, ProviderError)] == ["bad_tool_arguments"]
    out = sent(p)
    assert out[0]["item"]["call_id"] == "c1" and "invalid arguments" in out[0]["item"]["output"]
    assert out[1]["type"] == "response.create"


def test_send_text_while_generating_defers_response_create_until_done() -> None:
    p = ready()
    feed(p, created())
    p.send_text("The caller pressed 5 on the keypad.")
    item = sent(p)
    assert [m["type"] for m in item] == ["conversation.item.create"]
    assert item[0]["item"]["content"] == [{"type": "input_text", "text": "The caller pressed 5 on the keypad."}]
    feed(p, done())
    assert [m["type"] for m in sent(p)] == ["response.create"]


def test_caller_transcripts_partial_and_final() -> None:
    p = ready()
    events = feed(
        p,
        {"type": "conversation.item.input_audio_transcription.delta", "item_id": "u1", "delta": "hel"},
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": "hello "},
        {"type": "conversation.item.input_audio_transcription.failed", "item_id": "u2", "error": {}},
    )
    assert events == [Transcript("caller", "hel", False, "u1"), Transcript("caller", "hello", True, "u1")]


def test_errors_recoverable_benign_and_fatal() -> None:
    p = ready()
    p.truncate("x", 1)
    p.send_text("hi")
    request = sent(p)[0]
    benign = {"type": "error", "error": {"type": "invalid_request_error", "code": "response_cancel_not_active"}}
    about_item = {
        "type": "error",
        "error": {"code": "invalid_value", "message": "bad", "event_id": request["event_id"]},
    }
    expired = {"type": "error", "error": {"type": "invalid_request_error", "code": "session_expired", "message": "m"}}
    assert feed(p, benign) == []
    assert feed(p, about_item) == [ProviderError("invalid_value", "bad (in reply to conversation.item.create)")]
    assert not p.failed
    assert feed(p, expired) == [ProviderError("session_expired", "m", fatal=True)]
    assert p.failed


def test_an_error_during_the_handshake_fails_it() -> None:
    p = protocol()
    feed(p, {"type": "session.created"})
    update = sent(p)[0]
    events = feed(p, {"type": "error", "error": {"code": "unknown_parameter", "event_id": update["event_id"]}})
    assert p.failed and not p.ready and events[0].fatal


def test_malformed_frames_are_recoverable_errors_not_exceptions() -> None:
    p = ready()
    p.receive(b"\xff\xfe")
    p.receive("[1, 2]")
    p.receive(json.dumps({"type": "response.created"}))  # no response object
    p.receive(json.dumps({**delta("i1", 10), "delta": "!!not base64!!"}))
    p.receive(json.dumps({"type": "something.new", "x": 1}))
    codes = [e.code for e in p.events_received()]
    assert codes == ["bad_frame", "bad_frame", "bad_event", "bad_audio"]
    assert p.sent_ms("i1") == 0


def test_history_and_greeting_go_out_once_the_session_is_updated() -> None:
    from s2s.provider import Turn

    p = protocol(history=(Turn("caller", "hi"), Turn("bot", "hello")), greeting="Thanks for calling.")
    feed(p, {"type": "session.created"})
    sent(p)
    feed(p, {"type": "session.updated"})
    out = sent(p)
    assert [m["type"] for m in out] == ["conversation.item.create", "conversation.item.create", "response.create"]
    assert out[1]["item"] == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "hello"}],
    }
    assert "Thanks for calling." in out[2]["response"]["instructions"]


def test_a_rejected_response_create_does_not_block_later_ones() -> None:
    p = ready()
    p.send_text("first")
    request = sent(p)[1]
    assert request["type"] == "response.create"
    feed(
        p,
        {
            "type": "error",
            "error": {"code": "conversation_already_has_active_response", "event_id": request["event_id"]},
        },
    )
    p.send_text("second")
    assert [m["type"] for m in sent(p)] == ["conversation.item.create", "response.create"]


def speech_like_pcm16(ms: int, rate: int = 24000) -> bytes:
    """A quiet voiced sound as PCM16: what a provider sends for speech."""
    import numpy as np

    t = np.arange(rate * ms // 1000) / rate
    return (1500 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype("<i2").tobytes()


def audio_delta(item: str, audio: bytes) -> dict[str, Any]:
    return {
        "type": "response.output_audio.delta",
        "response_id": "r1",
        "item_id": item,
        "delta": base64.b64encode(audio).decode(),
    }


def test_a_confirmed_output_format_other_than_asked_is_adopted_before_the_session_is_used() -> None:
    from transcoding.formats import MULAW_8K, PCM16_24K

    p = protocol("pcmu")
    feed(p, {"type": "session.created", "session": {}})
    sent(p)
    confirmed = {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}}}}
    feed(p, {"type": "session.updated", "session": confirmed})
    assert p.ready and p.audio_format == MULAW_8K and p.output_format == PCM16_24K
    # Truncation is measured in what actually arrives: 48 bytes per ms of PCM16 at 24 kHz.
    feed(p, created(), audio_delta("i1", speech_like_pcm16(500)))
    p.truncate("i1", 10_000)
    assert next(m for m in sent(p) if m["type"] == "conversation.item.truncate")["audio_end_ms"] == 500


def test_an_unplayable_confirmed_format_fails_the_handshake() -> None:
    p = protocol("pcmu")
    feed(p, {"type": "session.created", "session": {}})
    sent(p)
    events = feed(p, {"type": "session.updated", "session": {"audio": {"output": {"format": {"type": "audio/pcma"}}}}})
    assert not p.ready and p.failure is not None and p.failure.code == "audio_format_mismatch"
    assert events == [p.failure]


def test_pcm16_arriving_on_a_mulaw_session_ends_it_loudly_and_never_plays() -> None:
    p = ready("pcmu")
    events = feed(p, created(), audio_delta("i1", speech_like_pcm16(100)))
    assert not [e for e in events if isinstance(e, AudioOut)]
    [error] = [e for e in events if isinstance(e, ProviderError)]
    assert error.fatal and error.code == "audio_format_mismatch" and "pcm16" in error.message
    assert p.failed


def spoken_mulaw() -> bytes:
    """Real speech as 8 kHz mu-law (espeak-ng): the sniffer is tuned on speech, and synthetic
    noise is not a fair stand-in for it."""
    from voicebot.devtools.dial import espeak_utterance

    spoken = espeak_utterance()
    if spoken is None:
        pytest.skip("espeak-ng is not installed")
    return spoken


def test_mulaw_arriving_on_a_pcm16_session_ends_it_loudly() -> None:
    p = ready("pcm24k")
    events = feed(p, created(), audio_delta("i1", spoken_mulaw()))
    assert p.failed and p.failure is not None and "8bit" in p.failure.message
    assert not [e for e in events if isinstance(e, AudioOut)]


def test_audio_in_the_declared_format_plays_and_is_checked_only_until_clear() -> None:
    p = ready("pcmu")
    mulaw = spoken_mulaw()
    events = feed(p, created(), audio_delta("i1", mulaw))
    assert [e.audio for e in events if isinstance(e, AudioOut)] == [mulaw] and not p.failed
    # Once the first audio was clearly right, later deltas are not inspected again.
    later = feed(p, audio_delta("i1", speech_like_pcm16(100)))
    assert [e for e in later if isinstance(e, AudioOut)] and not p.failed


def test_pcm16_in_small_deltas_on_a_mulaw_session_is_caught_within_the_first_window() -> None:
    p = ready("pcmu")
    pcm = speech_like_pcm16(200)
    played = 0
    for start in range(0, len(pcm), 320):
        events = feed(
            p, created() if start == 0 else {"type": "rate_limits.updated"}, audio_delta("i1", pcm[start : start + 320])
        )
        played += sum(len(e.audio) for e in events if isinstance(e, AudioOut))
        if p.failed:
            break
    assert p.failed and p.failure is not None and "pcm16" in p.failure.message
    assert played < 1920  # judged at 960 bytes (or at 1920 at the latest), never a whole window late


def test_an_unclear_sample_is_judged_as_it_doubles_and_per_window_not_per_delta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import s2s.realtime_protocol.protocol as realtime

    judged: list[int] = []

    def counting_sniff(audio: bytes) -> None:
        judged.append(len(audio))
        return None  # a pure tone or silence: never a clear verdict

    monkeypatch.setattr(realtime, "sniff_encoding", counting_sniff)
    p = ready("pcmu")
    feed(p, created())
    for _ in range(200):  # 64000 bytes of mu-law in 40 ms deltas: past all eight windows
        feed(p, audio_delta("i1", b"\xff" * 320))
    assert not p.failed
    assert judged[:4] == [960, 1920, 3840, 4800]
    assert len(judged) <= 12  # 120 before: one per delta until every window was full
