"""The cascade's pure pieces and config: sentences out of streamed text, the words a caller
heard by each sentence's audio length, history carried in, and part tables validated by the
registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from s2s.cascade import CascadeConfig
from s2s.cascade.conversation import CUT_OFF_MARK, DEFAULT_MS_PER_WORD, SentenceSplitter, SpokenAnswer, history_messages
from s2s.cascade.llm_openai import OpenAIChatConfig, chat_messages
from s2s.cascade.parts import Message
from s2s.cascade.stt_openai import OpenAITranscriptionConfig, TranscriptionProtocol
from s2s.events import SpeechStarted, ToolCall, Transcript
from s2s.provider import Turn
from voicebot.config import load_config


def test_sentences_come_out_as_soon_as_they_end_and_the_rest_on_flush() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Sure. The price is 3.5") == ["Sure."]
    assert splitter.feed(" euros! Anything") == ["The price is 3.5 euros!"]
    assert splitter.feed(" else?\nBye") == ["Anything else?"]
    assert splitter.flush() == "Bye"
    assert splitter.flush() is None


def test_heard_text_keeps_whole_sentences_then_the_words_whose_time_had_passed() -> None:
    answer = SpokenAnswer("a1")
    answer.spoken("One two three four.", 1000.0)  # 250 ms a word
    answer.spoken("Five six.", 500.0)
    assert answer.heard_text(1500.0) == "One two three four. Five six."
    assert answer.heard_text(1000.0) == "One two three four." + CUT_OFF_MARK
    assert answer.heard_text(1260.0) == "One two three four. Five" + CUT_OFF_MARK
    assert answer.heard_text(600.0) == "One two" + CUT_OFF_MARK
    assert answer.heard_text(100.0) == ""


def test_a_sentence_stopped_part_way_is_timed_at_the_measured_rate_else_the_default() -> None:
    answer = SpokenAnswer("a1")
    answer.spoken("One two.", 400.0)  # 200 ms a word
    answer.begin("Three four five six.")
    answer.played(300.0)
    answer.stopped()
    assert answer.heard_text(400.0 + 450.0) == "One two. Three four" + CUT_OFF_MARK
    alone = SpokenAnswer("a2")
    alone.begin("Alpha beta gamma.")
    alone.played(200.0)
    alone.stopped()
    assert alone.heard_text(DEFAULT_MS_PER_WORD * 2 + 10) == "Alpha beta" + CUT_OFF_MARK


def test_history_from_another_provider_becomes_chat_messages_with_the_tool_round_trip() -> None:
    messages = history_messages((Turn("caller", "Hi"), Turn("bot", "Hello!"), Turn("caller", "")))
    assert messages == [Message("user", "Hi"), Message("assistant", "Hello!")]
    messages += [
        Message("assistant", "", tool_calls=(ToolCall("c1", "lookup", {"q": "x"}),)),
        Message("tool", '{"ok": true}', call_id="c1"),
    ]
    assert chat_messages("Be brief.", messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'},
    ]


def test_part_tables_are_validated_by_the_model_their_type_names() -> None:
    config = CascadeConfig.model_validate(
        {
            "type": "cascade",
            "stt": {"type": "openai_realtime", "api_key": "k", "language": "en"},
            "llm": {"type": "openai_chat", "base_url": "http://127.0.0.1:11434/v1", "model": "llama3.2"},
            "tts": {"type": "espeak", "voice": "en-gb"},
        }
    )
    assert isinstance(config.llm, OpenAIChatConfig) and config.llm.model == "llama3.2"
    with pytest.raises(ValidationError, match="unknown tts type 'nope'"):
        CascadeConfig.model_validate(
            {"stt": {"type": "pocketsphinx"}, "llm": {"type": "responder"}, "tts": {"type": "nope"}}
        )
    with pytest.raises(ValidationError, match="voise"):
        CascadeConfig.model_validate(
            {"stt": {"type": "pocketsphinx"}, "llm": {"type": "responder"}, "tts": {"type": "espeak", "voise": "x"}}
        )


def test_transcription_protocol_configures_a_transcription_session_and_maps_its_events() -> None:
    protocol = TranscriptionProtocol(OpenAITranscriptionConfig(api_key="k", language="en"))  # type: ignore[arg-type]
    protocol.receive('{"type": "session.created", "event_id": "e1", "session": {"type": "transcription"}}')
    (update,) = protocol.data_to_send()
    assert '"type": "transcription"' in update and '"audio/pcmu"' in update and '"language": "en"' in update
    assert not protocol.ready
    protocol.receive('{"type": "session.updated", "event_id": "e2", "session": {"type": "transcription"}}')
    assert protocol.ready
    protocol.receive(
        '{"type": "input_audio_buffer.speech_started", "event_id": "e3", "audio_start_ms": 0, "item_id": "i"}'
    )
    protocol.receive("not json")
    protocol.receive(
        '{"type": "conversation.item.input_audio_transcription.completed", "event_id": "e4", "item_id": "i",'
        ' "content_index": 0, "transcript": "hello", "usage": {"type": "duration", "seconds": 1}}'
    )
    assert protocol.events_received() == [SpeechStarted(), Transcript("caller", "hello")]


def test_the_cascade_example_config_is_valid_and_puts_the_cascade_behind_the_realtime_provider() -> None:
    env = {"TWILIO_AUTH_TOKEN": "t", "OPENAI_API_KEY": "sk-test"}
    config = load_config(Path(__file__).resolve().parent.parent / "examples" / "cascade.toml", env=env)
    assert {route.name: route.providers for route in config.routes} == {
        "local-demo": ["local"],
        "own-model": ["own-model"],
        "default": ["openai", "cascade"],
    }
    own = config.providers["own-model"]
    assert isinstance(own, CascadeConfig) and isinstance(own.llm, OpenAIChatConfig)
    assert own.llm.base_url == "http://127.0.0.1:11434/v1"
