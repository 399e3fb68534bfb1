"""Gemini Live pure mapping: wire messages -> neutral events, setup and clientContent builders.

No sockets: messages are the camelCase dicts the service sends (https://ai.google.dev/api/live) or the
SDK's parsed ``LiveServerMessage``; both go through the same mapper."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from google.genai import types
from pydantic import ValidationError

from s2s.events import (
    AudioOut,
    SessionExpiring,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    Transcript,
    TurnDone,
)
from s2s.gemini_live.config import GeminiLiveConfig
from s2s.gemini_live.protocol import (
    CallerAudio,
    ClientMessage,
    GeminiProtocolError,
    LiveEventMapper,
    audio_rate,
    heard_prefix,
    parse_duration,
)
from s2s.gemini_live.setup import CALL_NOTES, connect_config, function_declaration, opening
from s2s.provider import SessionContext, Turn
from s2s.tools import ToolSpec

MODEL_25 = "gemini-2.5-flash-native-audio-preview-12-2025"
MODEL_31 = "gemini-3.1-flash-live-preview"


def audio_msg(pcm: bytes, mime: str = "audio/pcm;rate=24000", **extra: Any) -> dict[str, Any]:
    content: dict[str, Any] = {
        "modelTurn": {"parts": [{"inlineData": {"mimeType": mime, "data": base64.b64encode(pcm).decode()}}]}
    }
    content.update(extra)
    return {"serverContent": content}


def pcm_ms(ms: int) -> bytes:
    return np.zeros(24 * ms, dtype="<i2").tobytes()


def of_type(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def test_model_audio_becomes_audio_out_with_one_item_id_per_turn() -> None:
    mapper = LiveEventMapper(item_prefix="g")
    first = mapper.feed(audio_msg(pcm_ms(40))) + mapper.feed(audio_msg(pcm_ms(40)))
    done = mapper.feed({"serverContent": {"turnComplete": True}})
    second = mapper.feed(audio_msg(pcm_ms(20)))
    assert [e.item_id for e in of_type(first, AudioOut)] == ["g-1", "g-1"]
    assert of_type(first, AudioOut)[0].audio == pcm_ms(40)
    assert of_type(done, TurnDone) == [TurnDone(item_id="g-1", interrupted=False)]
    assert of_type(second, AudioOut)[0].item_id == "g-2"


def test_sdk_message_and_wire_dict_map_the_same() -> None:
    wire = audio_msg(pcm_ms(10), outputTranscription={"text": "Hi"})
    sdk = types.LiveServerMessage.model_validate(wire)
    assert LiveEventMapper(item_prefix="g").feed(sdk) == LiveEventMapper(item_prefix="g").feed(wire)


def test_audio_at_another_rate_is_refused_loudly() -> None:
    with pytest.raises(GeminiProtocolError, match="16000"):
        LiveEventMapper().feed(audio_msg(pcm_ms(10), mime="audio/pcm;rate=16000"))


def test_rate_parsing_and_default() -> None:
    assert audio_rate("audio/pcm;rate=24000") == 24000
    assert audio_rate("audio/pcm; rate=16000") == 16000
    assert audio_rate("audio/pcm") == 24000


def test_output_transcription_fragments_accumulate_into_final_text_at_turn_end() -> None:
    mapper = LiveEventMapper(item_prefix="g")
    events = mapper.feed(audio_msg(pcm_ms(10), outputTranscription={"text": "Hello"}))
    events += mapper.feed({"serverContent": {"outputTranscription": {"text": " there."}}})
    assert [e.text for e in of_type(events, Transcript)] == ["Hello", " there."]
    assert all(not e.final for e in of_type(events, Transcript))
    end = mapper.feed({"serverContent": {"turnComplete": True}})
    assert of_type(end, Transcript) == [Transcript("bot", "Hello there.", final=True, item_id="g-1")]


def test_caller_transcript_is_final_when_finished_or_when_the_bot_answers() -> None:
    mapper = LiveEventMapper(item_prefix="g")
    events = mapper.feed({"serverContent": {"inputTranscription": {"text": "What time"}}})
    events += mapper.feed({"serverContent": {"inputTranscription": {"text": " is it?"}}})
    events += mapper.feed(audio_msg(pcm_ms(10)))
    finals = [e for e in of_type(events, Transcript) if e.final]
    assert finals == [Transcript("caller", "What time is it?", final=True)]
    finished = LiveEventMapper().feed({"serverContent": {"inputTranscription": {"text": "yes", "finished": True}}})
    assert Transcript("caller", "yes", final=True) in finished


def test_bundled_message_audio_transcript_and_turn_complete() -> None:
    """3.1 models bundle fields in one message (gemini-3.1-flash-live-preview model page)."""
    mapper = LiveEventMapper(item_prefix="g")
    events = mapper.feed(audio_msg(pcm_ms(20), outputTranscription={"text": "Bye."}, turnComplete=True))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["AudioOut", "Transcript", "Transcript", "TurnDone"]  # final words before the turn ends


def test_interrupted_is_barge_in_and_late_audio_of_that_turn_is_dropped() -> None:
    mapper = LiveEventMapper(item_prefix="g")
    mapper.feed(audio_msg(pcm_ms(100)))
    events = mapper.feed({"serverContent": {"interrupted": True}})
    assert events == [SpeechStarted(item_id="g-1")]
    assert mapper.feed(audio_msg(pcm_ms(40))) == []
    assert mapper.feed({"serverContent": {"turnComplete": True}}) == [TurnDone(item_id="g-1", interrupted=True)]


def test_every_barge_in_is_paired_with_speech_stopped() -> None:
    """The renewal policy waits for SpeechStopped before it swaps sessions."""
    for end in (
        {"serverContent": {"inputTranscription": {"text": "wait", "finished": True}}},
        {"voiceActivity": {"voiceActivityType": "ACTIVITY_END"}},
        audio_msg(pcm_ms(20)),  # the model answering means the caller's turn ended
    ):
        mapper = LiveEventMapper()
        mapper.feed(audio_msg(pcm_ms(100)))
        started = mapper.feed({"serverContent": {"interrupted": True}})
        mapper.feed({"serverContent": {"turnComplete": True}})
        stopped = mapper.feed(end)
        assert of_type(started, SpeechStarted) and of_type(stopped, SpeechStopped) == [SpeechStopped()]
        assert of_type(mapper.feed(end), SpeechStopped) == []  # once


def test_stray_interrupted_after_turn_complete_is_ignored() -> None:
    """python-genai #2333: a spurious interrupted right after the greeting's turnComplete."""
    mapper = LiveEventMapper()
    mapper.feed(audio_msg(pcm_ms(10)))
    mapper.feed({"serverContent": {"turnComplete": True}})
    assert mapper.feed({"serverContent": {"interrupted": True}}) == []


def test_truncate_quotes_the_heard_part_of_the_answer() -> None:
    mapper = LiveEventMapper(item_prefix="g")
    words = [f"w{i:02d}" for i in range(1, 11)]
    for word in words:  # ten words over 1000 ms of audio
        mapper.feed(audio_msg(pcm_ms(100), outputTranscription={"text": " " + word}))
    mapper.feed({"serverContent": {"interrupted": True}})
    held = mapper.feed({"serverContent": {"turnComplete": True}})
    assert of_type(held, Transcript) == []  # waits for what the caller heard
    note, events = mapper.truncate("g-1", 420)
    assert note is not None
    assert note.total_ms == pytest.approx(1000.0)
    assert note.heard_text == "w01 w02 w03 w04"
    assert '"w01 w02 w03 w04"' in note.text and "did not hear the rest" in note.text
    assert events == [Transcript("bot", "w01 w02 w03 w04", final=True, item_id="g-1")]
    assert mapper.truncate("g-1", 420) == (None, [])  # once per answer


def test_truncate_when_everything_was_heard_sends_no_note() -> None:
    mapper = LiveEventMapper(item_prefix="g")
    mapper.feed(audio_msg(pcm_ms(200), outputTranscription={"text": "All of it."}))
    mapper.feed({"serverContent": {"interrupted": True}})
    note, events = mapper.truncate("g-1", 250)
    assert note is None
    mapper_events = mapper.feed({"serverContent": {"turnComplete": True}})
    assert Transcript("bot", "All of it.", final=True, item_id="g-1") in mapper_events + events


def test_truncate_before_any_word_and_without_transcription() -> None:
    mapper = LiveEventMapper(item_prefix="g")
    mapper.feed(audio_msg(pcm_ms(1000), outputTranscription={"text": "Hello there"}))
    note, _ = mapper.truncate("g-1", 0)
    assert note is not None and "before hearing any" in note.text
    other = LiveEventMapper(item_prefix="h")
    other.feed(audio_msg(pcm_ms(2000)))
    note, _ = other.truncate("h-1", 500, has_transcript=False)
    assert note is not None and "after 0.5 of its 2.0 seconds" in note.text
    assert LiveEventMapper().truncate("unknown", 100) == (None, [])


def test_unanswered_interrupted_transcript_is_flushed_by_the_next_turn() -> None:
    mapper = LiveEventMapper(item_prefix="g")
    mapper.feed(audio_msg(pcm_ms(100), outputTranscription={"text": "First"}))
    mapper.feed({"serverContent": {"interrupted": True}})
    mapper.feed({"serverContent": {"turnComplete": True}})
    events = mapper.feed(audio_msg(pcm_ms(100)))
    assert Transcript("bot", "First", final=True, item_id="g-1") in events


@pytest.mark.parametrize(
    ("text", "heard", "total", "expected"),
    [
        ("one two three four", 500, 1000, "one two"),
        ("one two three four", 1000, 1000, "one two three four"),
        ("one two three four", 0, 1000, ""),
        ("one two three four", 300, 1000, "one"),
        ("abcdefgh", 500, 1000, ""),  # never half a word
    ],
)
def test_heard_prefix_cuts_on_word_boundaries(text: str, heard: int, total: int, expected: str) -> None:
    assert heard_prefix(text, heard, total) == expected


def test_tool_call_maps_and_cancellation_forgets_the_call() -> None:
    mapper = LiveEventMapper()
    events = mapper.feed({"toolCall": {"functionCalls": [{"id": "fc1", "name": "get_time", "args": {"tz": "UTC"}}]}})
    assert events == [ToolCall(call_id="fc1", name="get_time", arguments={"tz": "UTC"})]
    assert mapper.pending_tool_calls == {"fc1": "get_time"}
    assert mapper.feed({"toolCallCancellation": {"ids": ["fc1"]}}) == []
    assert mapper.pending_tool_calls == {}


def test_go_away_resumption_update_and_usage() -> None:
    mapper = LiveEventMapper()
    assert mapper.feed({"goAway": {"timeLeft": "50s"}}) == [SessionExpiring("goAway", 50.0)]
    mapper.feed({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": True}})
    mapper.feed({"sessionResumptionUpdate": {"newHandle": "h2", "resumable": False}})
    mapper.feed({"sessionResumptionUpdate": {"resumable": True}})
    assert mapper.resume_handle == "h1"  # only resumable handles are worth keeping
    mapper.feed({"usageMetadata": {"promptTokenCount": 10, "responseTokenCount": 5, "totalTokenCount": 15}})
    mapper.feed({"usageMetadata": {"totalTokenCount": 5}})
    assert (mapper.usage.prompt_tokens, mapper.usage.total_tokens, mapper.usage.messages) == (10, 20, 2)


@pytest.mark.parametrize(("value", "seconds"), [("50s", 50.0), ("0.5s", 0.5), ("", None), ("soon", None)])
def test_duration_parsing(value: str, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


def config(**kw: Any) -> GeminiLiveConfig:
    return GeminiLiveConfig(api_key="k", **kw)


def test_config_rejects_mixed_backends_and_typos() -> None:
    with pytest.raises(ValidationError):
        GeminiLiveConfig(api_key="k", vertex_project="p", vertex_location="us-central1")
    with pytest.raises(ValidationError):
        GeminiLiveConfig(vertex_project="p")
    with pytest.raises(ValidationError):
        GeminiLiveConfig.model_validate({"type": "gemini_live", "api_key": "k", "voise": "Puck"})
    assert GeminiLiveConfig(vertex_project="p", vertex_location="us-central1").vertex


def test_connect_config_carries_route_overrides_and_session_settings() -> None:
    cfg = config(
        start_sensitivity="low",
        end_sensitivity="high",
        silence_duration_ms=400,
        prefix_padding_ms=20,
        compression_trigger_tokens=25600,
        compression_target_tokens=16000,
        input_transcription=False,
    )
    ctx = SessionContext(call_sid="CA1", instructions="Be terse.", voice="Kore", resume_handle="h9")
    live = connect_config(cfg, ctx, opening(ctx, cfg.model))
    assert live.system_instruction == f"Be terse.\n\n{CALL_NOTES}"
    assert live.speech_config is not None and live.speech_config.voice_config is not None
    assert live.speech_config.voice_config.prebuilt_voice_config is not None
    assert live.speech_config.voice_config.prebuilt_voice_config.voice_name == "Kore"
    assert live.session_resumption == types.SessionResumptionConfig(handle="h9")
    assert live.context_window_compression == types.ContextWindowCompressionConfig(
        trigger_tokens=25600, sliding_window=types.SlidingWindow(target_tokens=16000)
    )
    assert live.input_audio_transcription is None and live.output_audio_transcription is not None
    assert live.realtime_input_config is not None
    aad = live.realtime_input_config.automatic_activity_detection
    assert aad is not None and aad.silence_duration_ms == 400 and aad.prefix_padding_ms == 20
    assert aad.start_of_speech_sensitivity == types.StartSensitivity.START_SENSITIVITY_LOW
    assert live.realtime_input_config.activity_handling == types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS
    quiet = connect_config(config(activity_handling="no_interruption"), ctx, opening(ctx, cfg.model))
    assert quiet.realtime_input_config is not None
    assert quiet.realtime_input_config.activity_handling == types.ActivityHandling.NO_INTERRUPTION


def test_tool_spec_maps_to_function_declaration() -> None:
    spec = ToolSpec(
        "get_weather",
        "Weather for a city",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    decl = function_declaration(spec)
    assert decl.name == "get_weather" and decl.parameters is not None
    assert decl.parameters.type == types.Type.OBJECT and decl.parameters.required == ["city"]
    for schema in ({"type": "object", "properties": {"x": {"const": "a"}}}, {"type": ["object", "null"]}):
        odd = function_declaration(ToolSpec("t", "d", schema))
        assert odd.parameters is None and odd.parameters_json_schema == schema


def test_opening_replays_history_as_a_completed_seed_ending_with_the_caller() -> None:
    history = (Turn("caller", "Hi"), Turn("bot", "Hello, how can I help?"))
    plan = opening(SessionContext(call_sid="CA1", history=history), MODEL_25)
    assert [t.role for t in plan.seed] == ["user", "model", "user"]  # 2.5: seed ends with a user turn
    assert plan.prompt is None and not plan.declare_history
    greeting = opening(SessionContext(call_sid="CA1", history=history, greeting="Welcome to Acme."), MODEL_25)
    assert greeting.seed[-1].parts is not None and "Welcome to Acme." in (greeting.seed[-1].parts[0].text or "")
    assert opening(SessionContext(call_sid="CA1"), MODEL_25).seed == []


def test_opening_on_gemini_3_declares_the_seed_and_greets_by_realtime_text() -> None:
    history = (Turn("caller", "Hi"), Turn("bot", "Hello."))
    plan = opening(SessionContext(call_sid="CA1", history=history, greeting="Welcome."), MODEL_31)
    assert [t.role for t in plan.seed] == ["user", "model"] and plan.declare_history
    assert plan.prompt is not None and "Welcome." in plan.prompt
    live = connect_config(config(), SessionContext(call_sid="CA1", history=history), plan)
    assert live.history_config == types.HistoryConfig(initial_history_in_client_content=True)
    assert not opening(SessionContext(call_sid="CA1", greeting="Hi"), MODEL_31).declare_history


def test_a_resumed_session_replays_nothing() -> None:
    ctx = SessionContext(call_sid="CA1", history=(Turn("caller", "Hi"),), greeting="Hello", resume_handle="h")
    for model in (MODEL_25, MODEL_31):
        plan = opening(ctx, model)
        assert plan.seed == [] and plan.prompt is None


def test_a_held_note_is_due_once_the_caller_has_been_quiet_long_enough() -> None:
    from s2s.gemini_live.protocol import HeldNote

    loud = (np.full(320, 8000, dtype="<i2")).tobytes()  # 20 ms at 16 kHz, about -12 dBFS
    quiet = bytes(640)
    held = HeldNote("[Call note ...]", bot_turns=1, quiet_ms=200)
    assert not held.caller_audio(loud, 16000)
    assert not any(held.caller_audio(quiet, 16000) for _ in range(9))  # 180 ms
    assert not held.caller_audio(loud, 16000)  # the caller went on: the count starts again
    assert [held.caller_audio(quiet, 16000) for _ in range(10)][-1]


def test_the_protocol_object_decides_what_to_send_without_a_socket() -> None:
    """python-websockets' shape: requests in, typed LiveClientMessages out via data_to_send()."""
    from s2s.gemini_live.protocol import GeminiProtocol

    p = GeminiProtocol(config(), SessionContext(call_sid="CA1"))  # gemini-3.8-live by default
    p.send_audio(b"\x00\x01" * 320)
    p.send_text("1234#")
    [queued, text] = p.data_to_send()
    assert isinstance(queued, CallerAudio) and queued.pcm16 == b"\x00\x01" * 320
    audio = queued.message()
    assert audio.realtime_input is not None and audio.realtime_input.audio is not None
    assert audio.realtime_input.audio.mime_type == "audio/pcm;rate=16000"
    assert isinstance(text, types.LiveClientMessage)
    assert text.realtime_input is not None and text.realtime_input.text == "1234#"
    p.receive({"toolCall": {"functionCalls": [{"id": "fc1", "name": "lookup", "args": {"q": 1}}]}})
    assert [type(e).__name__ for e in p.events_received()] == ["ToolCall"]
    p.send_tool_result("fc1", '{"found": true}')
    [result] = p.data_to_send()
    assert result.tool_response is not None and result.tool_response.function_responses is not None
    response = result.tool_response.function_responses[0]
    assert (response.id, response.name, response.response) == ("fc1", "lookup", {"found": True})
    assert response.scheduling == types.FunctionResponseScheduling.WHEN_IDLE
    assert p.data_to_send() == []


def typed(messages: list[ClientMessage]) -> list[types.LiveClientMessage]:
    return [m.message() if isinstance(m, CallerAudio) else m for m in messages]


def kinds(messages: list[ClientMessage]) -> list[str]:
    """What each realtime message carries: activity_start / audio / text / activity_end."""
    out = []
    for message in typed(messages):
        assert message.realtime_input is not None
        out.append(next(k for k, v in message.realtime_input.model_dump(exclude_none=True).items() if v is not None))
    return out


def test_with_activity_detection_off_the_protocol_marks_the_callers_turn_with_the_onset_kept() -> None:
    """Quiet is held back (only the last 300 ms, as pre-roll); 100 ms of speech opens the turn
    with activityStart and the pre-roll, 500 ms of quiet closes it with activityEnd; text
    outside a turn makes a turn of its own, inside one it joins it."""
    from s2s.gemini_live.protocol import GeminiProtocol

    loud = np.full(320, 8000, dtype="<i2").tobytes()  # 20 ms at 16 kHz, about -12 dBFS
    quiet = bytes(640)
    p = GeminiProtocol(config(automatic_activity_detection=False), SessionContext(call_sid="CA1"))
    for _ in range(50):
        p.send_audio(quiet)
    assert p.data_to_send() == []  # no turn, nothing sent
    for _ in range(5):
        p.send_audio(loud)
    sent = p.data_to_send()
    assert kinds(sent) == ["activity_start"] + ["audio"] * 15  # 200 ms of quiet + 100 ms of speech
    chunks = [m.realtime_input.audio.data for m in typed(sent[1:]) if m.realtime_input and m.realtime_input.audio]
    assert chunks[-5:] == [loud] * 5 and chunks[:10] == [quiet] * 10
    p.send_text("5")  # a key pressed while the caller talks joins their turn
    for _ in range(24):
        p.send_audio(quiet)
    assert kinds(p.data_to_send()) == ["text"] + ["audio"] * 24
    p.send_audio(quiet)  # the 500th ms of quiet ends the turn
    assert kinds(p.data_to_send()) == ["audio", "activity_end"]
    p.send_text("1234#")
    assert kinds(p.data_to_send()) == ["activity_start", "text", "activity_end"]
    setup = connect_config(config(automatic_activity_detection=False), SessionContext("CA1"), opening_plan())
    assert setup.realtime_input_config is not None
    assert setup.realtime_input_config.automatic_activity_detection == types.AutomaticActivityDetection(disabled=True)


def opening_plan() -> Any:
    from s2s.gemini_live.setup import Opening

    return Opening([])


def test_proactive_audio_is_only_ever_sent_as_true_and_not_to_3_8() -> None:
    on = config(proactive_audio=True)
    assert connect_config(on, SessionContext("CA1", model=MODEL_25), opening_plan()).proactivity == (
        types.ProactivityConfig(proactive_audio=True)
    )
    assert connect_config(on, SessionContext("CA1"), opening_plan()).proactivity is None  # 3.8: always on
    assert connect_config(config(), SessionContext("CA1", model=MODEL_25), opening_plan()).proactivity is None


def test_caller_audio_goes_out_as_exactly_the_text_the_sdk_sends_for_it() -> None:
    """CallerAudio.wire_text skips the SDK's per-frame validation; what it writes must be what
    ``AsyncSession.send_realtime_input(audio=...)`` would have written (mldev and Vertex)."""
    from google.genai import _common
    from google.genai import _live_converters as converters

    pcm = np.arange(-320, 320, dtype="<i2").tobytes()
    params = types.LiveSendRealtimeInputParameters.model_validate(
        {"audio": types.Blob(data=pcm, mime_type="audio/pcm;rate=16000")}
    )
    for convert in (
        converters._LiveSendRealtimeInputParameters_to_mldev,
        converters._LiveSendRealtimeInputParameters_to_vertex,
    ):
        wire = _common.encode_unserializable_types(_common.convert_to_dict(convert(from_object=params)))
        assert CallerAudio(pcm).wire_text() == json.dumps({"realtime_input": wire})


@pytest.mark.parametrize("detection", [True, False])
def test_an_uninterruptible_greeting_gets_nothing_from_the_caller_until_its_turn_is_complete(detection: bool) -> None:
    """NO_INTERRUPTION is for a whole connection; for the greeting alone the protocol sends
    neither caller audio nor keypad text (nor, with activity detection off, activityStart)
    until the greeting's turn is complete, whichever side detects the caller's turns."""
    from s2s.gemini_live.protocol import GeminiProtocol

    ctx = SessionContext(call_sid="CA1", greeting="This call is recorded.", greeting_uninterruptible=True)
    p = GeminiProtocol(config(automatic_activity_detection=detection), ctx)
    p.open(opening(ctx, p.model))
    p.data_to_send()  # the greeting request
    loud = (np.sin(np.arange(320) / 3) * 12000).astype("<i2").tobytes()  # 20 ms at 16 kHz, -9 dBFS
    for _ in range(20):
        p.send_audio(loud)
    p.send_text("5")
    assert p.data_to_send() == []
    p.receive(audio_msg(pcm_ms(200)))
    p.receive({"serverContent": {"turnComplete": True}})
    [text_turn] = [m for m in typed(p.data_to_send()) if m.realtime_input and m.realtime_input.text]
    assert text_turn.realtime_input is not None and text_turn.realtime_input.text == "5"  # after the greeting
    for _ in range(20):
        p.send_audio(loud)
    sent = kinds(p.data_to_send())
    assert "audio" in sent and ("activity_start" in sent) is not detection


def test_a_greeting_that_never_completes_stops_holding_the_caller_back() -> None:
    from s2s.gemini_live.protocol import GREETING_HOLD_MAX_MS, GeminiProtocol

    ctx = SessionContext(call_sid="CA1", greeting="This call is recorded.", greeting_uninterruptible=True)
    p = GeminiProtocol(config(), ctx)
    p.open(opening(ctx, p.model))
    p.data_to_send()
    frames = [b"\x00\x01" * 320 for _ in range(GREETING_HOLD_MAX_MS // 20)]
    for frame in frames:
        p.send_audio(frame)
    assert len(p.data_to_send()) == 1  # the frame that reached GREETING_HOLD_MAX_MS of held audio


def test_without_the_flag_or_on_a_resumed_session_nothing_is_held() -> None:
    from s2s.gemini_live.protocol import GeminiProtocol

    for ctx in (
        SessionContext(call_sid="CA1", greeting="Hello."),
        SessionContext(call_sid="CA1", greeting="Hello.", greeting_uninterruptible=True, resume_handle="h1"),
    ):
        p = GeminiProtocol(config(), ctx)
        p.open(opening(ctx, p.model))
        p.data_to_send()
        p.send_audio(b"\x00\x01" * 320)
        assert len(p.data_to_send()) == 1
