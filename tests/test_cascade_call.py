"""Whole calls through a cascade (speech-to-text -> chat model -> text-to-speech), driven by the
signing Twilio simulator against loopback fakes of OpenAI's transcription session, chat
completions and speech endpoints, through the ``openai`` package pointed at them by base URL.

The fake speech endpoint speaks every word as a tone of its own frequency (200 ms, 50 ms gap,
24 kHz PCM), so the caller's audio tells which words were heard, and at what rate."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import numpy as np
import pytest

from s2s.cascade.conversation import CUT_OFF_MARK
from tests.fakes.openai_cascade_fake import GAP_MS, WORD_MS, ChatReply, FakeOpenAIHttp, FakeTranscription, word_hz
from tests.fakes.openai_realtime_fake import FakeOptions, FakeRealtimeServer
from tests.support.audio import active_segments, dominant_frequency, from_mulaw, to_mulaw, tone
from tests.support.live_call import live_bridge
from tests.support.server import AUTH_TOKEN, running_server
from voicebot.devtools.twilio_sim import SimulatedCall

INSTRUCTIONS = "You answer the phone for a test."


def cascade_table(stt: FakeTranscription, http: FakeOpenAIHttp, name: str = "cascade") -> str:
    return f"""
[providers.{name}]
type = "cascade"
stt = {{ type = "openai_realtime", api_key = "test-key", base_url = "{stt.base_url}" }}
llm = {{ type = "openai_chat", api_key = "test-key", base_url = "{http.base_url}", model = "fake-chat" }}
tts = {{ type = "openai_speech", api_key = "test-key", base_url = "{http.base_url}", voice = "marin" }}
"""


def call_config(stt: FakeTranscription, http: FakeOpenAIHttp, route_keys: str = "", sections: str = "") -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[server]
outbound_chunk_ms = 40
local_barge_in_ms = 0

{sections}
{cascade_table(stt, http)}

[[routes]]
name = "default"
providers = ["cascade"]
instructions = "{INSTRUCTIONS}"
{route_keys}
"""


def spoken(text: str) -> list[int]:
    """The tones the fake speech endpoint speaks ``text`` as; the texts here are chosen so that
    no two neighbouring words share one (see :func:`heard_words`)."""
    tones = [round(word_hz(word) / 100) * 100 for word in text.split()]
    assert all(a != b for a, b in itertools.pairwise(tones)), text
    return tones


def heard_words(pcm: np.ndarray, start_ms: float = 0.0) -> list[tuple[float, float, float]]:
    """(start_ms, length_ms, frequency) of each tone burst the caller heard after ``start_ms``.
    A burst broken by playout underruns (a loaded machine) counts once; its length is then the
    sum of its parts."""
    out: list[tuple[float, float, float]] = []
    for start, end in active_segments(pcm, 8000, threshold_dbfs=-30):
        if start < start_ms or end - start < 30:
            continue
        hz = dominant_frequency(pcm[int(start * 8) + 40 : int(end * 8) - 40], 8000)
        if out and abs(out[-1][2] - hz) < 20:
            out[-1] = (out[-1][0], out[-1][1] + end - start, out[-1][2])
        else:
            out.append((start, end - start, hz))
    return [w for w in out if w[1] >= 60]


def tones_of(words: list[tuple[float, float, float]]) -> list[int]:
    """The words' tones, to the fake's 100 Hz steps."""
    return [round(hz / 100) * 100 for _, _, hz in words]


def record_bot_audio(call: SimulatedCall) -> bytearray:
    """The bot audio as the server sent it (the played timeline may have underrun gaps)."""
    sent = bytearray()

    def tap(direction: str, frame: str | bytes) -> None:
        message = json.loads(frame)
        if direction == "out" and message.get("event") == "media":
            sent.extend(base64.b64decode(message["media"]["payload"]))

    call.tap = tap
    return sent


def assistant_texts(request: dict[str, Any]) -> list[str]:
    return [m["content"] or "" for m in request["messages"] if m["role"] == "assistant"]


async def test_caller_hears_the_chat_models_answer_spoken_word_by_word_at_the_right_rate() -> None:
    reply = "Good morning. The shop opens at nine."
    async with (
        FakeTranscription() as stt,
        FakeOpenAIHttp([ChatReply(reply)]) as http,
        running_server(call_config(stt, http)) as server,
        server.twilio().call() as call,
    ):
        sent = record_bot_audio(call)
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 600)))
        await call.wait_for(lambda: len(heard_words(call.heard_pcm())) >= len(reply.split()), timeout=10)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)

        # The transcription session got the caller's mu-law untouched and named the tone.
        conn = stt.connections[0]
        assert conn.session is not None and conn.session.audio is not None
        assert bytes(conn.audio_in) == bytes(call.caller_track[: len(conn.audio_in)])
        request = http.chat_requests[0]
        assert request["stream"] is True and request["model"] == "fake-chat"
        assert request["messages"] == [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": "tone 1000 hertz"},
        ]
        # Sentence by sentence: one speech request per sentence, in order.
        assert [r["input"] for r in http.speech_requests] == ["Good morning.", "The shop opens at nine."]

        assert tones_of(heard_words(call.heard_pcm())) == spoken(reply)
        # 24 kHz from the speech endpoint, resampled to the line's 8 kHz: every word as long as
        # the fake made it, 50 ms apart (a wrong rate would change lengths and pitches alike).
        words = heard_words(from_mulaw(bytes(sent)))
        assert tones_of(words) == spoken(reply)
        assert all(length == pytest.approx(WORD_MS, abs=20) for _, length, _ in words)
        assert words[1][0] - words[0][0] == pytest.approx(WORD_MS + GAP_MS, abs=20)

        bridge = await live_bridge(server, call)
        assert [(t.role, t.text) for t in bridge.summary.transcript] == [("caller", "tone 1000 hertz"), ("bot", reply)]


async def test_barge_in_stops_the_speech_stream_and_history_keeps_only_the_heard_words() -> None:
    # Short sentences: once one has been spoken, its audio length times the words of the next.
    long_reply = (
        "One two three. Four five six. Seven eight nine. Ten eleven twelve. Thirteen fourteen fifteen."
        " Sixteen seventeen eighteen. Nineteen twenty."
    )
    async with (
        FakeTranscription(["tell me a story", "stop please"]) as stt,
        FakeOpenAIHttp([ChatReply(long_reply), ChatReply("Okay.")], speedup=2.0) as http,
        running_server(call_config(stt, http)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(700, 500)))
        await call.wait_for(lambda: len(heard_words(call.heard_pcm())) >= 5, timeout=10)
        barge_at = call.now_ms()
        await call.say(to_mulaw(tone(1500, 500)))
        await call.wait_for(lambda: len(http.chat_requests) == 2, timeout=10)
        await call.wait_for(lambda: http.speech_streams[-1].text == "Okay." and call.queued_ms == 0, timeout=10)

        # The rest of the answer was never synthesised (test_cascade_session checks that the
        # sentence in progress is abandoned and no audio of it follows speech-started).
        sentences = long_reply.replace(". ", ".|").split("|")
        texts = [stream.text for stream in http.speech_streams]
        assert texts[:-1] == sentences[: len(texts) - 1] and len(texts) - 1 < len(sentences)
        # Twilio was cleared and nothing of the story played after the caller spoke.
        bridge = await live_bridge(server, call)
        assert len(bridge.summary.barge_ins) == 1
        story_words = [w for w in heard_words(call.heard_pcm(), 0) if w[0] < barge_at + 400]
        assert tones_of(story_words) == spoken(long_reply)[: len(story_words)]
        assert 5 <= len(story_words) < len(long_reply.split())

        # The model's history holds the words the caller heard, not the planned answer.
        said = assistant_texts(http.chat_requests[1])[0]
        assert said.endswith(CUT_OFF_MARK)
        kept = said.removesuffix(CUT_OFF_MARK).split()
        assert kept == long_reply.split()[: len(kept)]
        assert abs(len(kept) - len(story_words)) <= 1
        assert http.chat_requests[1]["messages"][-1] == {"role": "user", "content": "stop please"}
        # ...and so does the call's transcript (recovery, fallback and agents read it).
        await call.wait_for(lambda: len(bridge.summary.transcript) == 4, timeout=5)
        assert [t.text for t in bridge.summary.transcript if t.role == "bot"] == [said, "Okay."]


async def order_status(call: dict[str, Any]) -> dict[str, Any]:
    """The route's tool (``handler = "tests.test_cascade_call:order_status"``)."""
    return {"order": call["arguments"]["order"], "status": "shipped"}


async def test_tool_call_from_the_chat_model_runs_and_its_result_goes_back_before_the_answer() -> None:
    tool = """
[[routes.tools]]
name = "order_status"
description = "Where an order is."
parameters = { type = "object", properties = { order = { type = "string" } }, required = ["order"] }
handler = "tests.test_cascade_call:order_status"
"""
    replies = [ChatReply("Let me check.", tool=("order_status", {"order": "42"})), ChatReply("It has shipped.")]
    async with (
        FakeTranscription(["where is order forty two"]) as stt,
        FakeOpenAIHttp(replies) as http,
        running_server(call_config(stt, http, route_keys=tool)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(800, 500)))
        await call.wait_for(lambda: len(http.speech_requests) == 2, timeout=10)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)

        first, second = http.chat_requests
        assert [t["function"]["name"] for t in first["tools"]] == ["order_status"]
        call_msg, result_msg = second["messages"][-2:]
        assert call_msg["role"] == "assistant" and call_msg["content"] == "Let me check."
        (tool_call,) = call_msg["tool_calls"]
        assert tool_call["function"]["name"] == "order_status"
        assert json.loads(tool_call["function"]["arguments"]) == {"order": "42"}
        assert result_msg["role"] == "tool" and result_msg["tool_call_id"] == tool_call["id"]
        assert json.loads(result_msg["content"]) == {"order": "42", "status": "shipped"}
        heard = tones_of(heard_words(call.heard_pcm()))
        assert heard == [round(word_hz(w)) for w in ["Let", "me", "check.", "It", "has", "shipped."]]
        assert len(server.runtime.active) == 1


async def test_refusing_s2s_provider_falls_back_to_the_cascade_mid_call_with_the_conversation() -> None:
    async with (
        FakeRealtimeServer(FakeOptions(tone_hz=440.0, response_ms=600)) as s2s,
        FakeTranscription(["and now"]) as stt,
        FakeOpenAIHttp([ChatReply("Still here.")]) as http,
    ):
        config = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.s2s]
type = "openai_realtime"
api_key = "test-key"
base_url = "{s2s.base_url}"
{cascade_table(stt, http)}

[resilience]
connect_attempts = 1

[[routes]]
name = "default"
providers = ["s2s", "cascade"]
instructions = "{INSTRUCTIONS}"
retry_budget_s = 5
"""
        async with running_server(config) as server, server.twilio().call() as call:
            await call.pause(200)
            await call.say(to_mulaw(tone(1000, 600)))
            bridge = await live_bridge(server, call)
            await call.wait_for(lambda: len(bridge.summary.transcript) >= 2, timeout=10)
            await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
            before = [(t.role, t.text) for t in bridge.summary.transcript]

            s2s.options.refuse_status = 503  # the speech-to-speech provider now refuses...
            await s2s.drop()  # ...and drops the live session
            await call.wait_for(lambda: len(stt.connections) == 1, timeout=10)
            said_at = call.now_ms()
            await call.say(to_mulaw(tone(600, 500)))
            await call.wait_for(lambda: len(heard_words(call.heard_pcm(), said_at)) >= 2, timeout=10)

            messages = http.chat_requests[0]["messages"]
            carried = [(m["role"], m["content"]) for m in messages[1:-1]]
            assert carried == [("user" if role == "caller" else "assistant", text) for role, text in before]
            assert messages[-1] == {"role": "user", "content": "and now"}
            heard = [round(hz) for _, _, hz in heard_words(call.heard_pcm(), said_at)]
            assert heard == [round(word_hz(w)) for w in ["Still", "here."]]
            assert not call.closed.is_set()


async def test_greeting_is_spoken_first_and_keypad_digits_reach_the_model_as_one_turn() -> None:
    route = 'greeting = "Welcome back."\n[routes.dtmf]\nfinish_on = "#"'
    async with (
        FakeTranscription() as stt,
        FakeOpenAIHttp([ChatReply("Got it.")]) as http,
        running_server(call_config(stt, http, route_keys=route)) as server,
        server.twilio().call() as call,
    ):
        await call.wait_for(lambda: len(heard_words(call.heard_pcm())) == 2, timeout=10)
        assert tones_of(heard_words(call.heard_pcm())) == spoken("Welcome back.")
        assert http.chat_requests == []  # the greeting is spoken as written, not generated
        for digit in "42#":
            await call.press(digit)
        await call.wait_for(lambda: len(heard_words(call.heard_pcm())) == 4, timeout=10)
        (request,) = http.chat_requests
        assert request["messages"][1] == {"role": "assistant", "content": "Welcome back."}
        assert "42" in request["messages"][-1]["content"] and request["messages"][-1]["role"] == "user"
        assert tones_of(heard_words(call.heard_pcm()))[2:] == spoken("Got it.")
