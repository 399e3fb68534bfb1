"""Gemini Live sessions through the real google-genai SDK against the TLS fake Live server.

The provider is configured exactly as in production, with ``base_url`` pointing at the fake
and ``ca_file`` trusting its throwaway certificate."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect as ws_connect

from s2s.events import (
    AudioOut,
    Closed,
    ProviderError,
    SessionExpiring,
    SpeechStarted,
    ToolCall,
    Transcript,
    TurnDone,
)
from s2s.gemini_live import SPEC, GeminiLiveConfig, GeminiLiveProvider, GeminiLiveSession
from s2s.gemini_live.setup import CALL_NOTES
from s2s.provider import ProviderConnectError, SessionContext, Turn
from s2s.registry import provider_spec
from s2s.tools import ToolSpec
from tests.fakes.gemini_live_fake import GeminiLiveFake, tone_pcm
from tests.support.audio import dominant_frequency, from_pcm_bytes
from tests.support.session_events import EventLog


@pytest.fixture
async def fake() -> AsyncIterator[GeminiLiveFake]:
    async with GeminiLiveFake() as server:
        yield server


def make_provider(fake: GeminiLiveFake, **overrides: Any) -> GeminiLiveProvider:
    settings: dict[str, Any] = {
        "api_key": "test-key",
        "base_url": fake.base_url,
        "ca_file": fake.ca_file,
        "connect_timeout_s": 3.0,
    }
    settings.update(overrides)
    return GeminiLiveProvider("gemini", GeminiLiveConfig(**settings))


async def speak(session: GeminiLiveSession, freq: float = 440.0, ms: int = 400, silence_ms: int = 400) -> None:
    """Caller audio as the bridge sends it: 16 kHz PCM in 20 ms chunks."""
    pcm = tone_pcm(freq, ms, 16000) + bytes(16 * silence_ms * 2)
    for i in range(0, len(pcm), 640):
        await session.send_audio(pcm[i : i + 640])


async def open_session(provider: GeminiLiveProvider, **ctx: Any) -> tuple[GeminiLiveSession, EventLog]:
    session = await provider.open_session(SessionContext(call_sid="CA-test", **ctx))
    return session, EventLog(session)


def test_spec_is_registered_for_the_type() -> None:
    assert provider_spec("gemini_live") is SPEC
    assert SPEC.config_model is GeminiLiveConfig


async def test_setup_carries_model_voice_transcription_compression_and_resumption(
    fake: GeminiLiveFake,
) -> None:
    provider = make_provider(fake, compression_trigger_tokens=25600, compression_target_tokens=16000)
    tool = ToolSpec("get_time", "Current time", {"type": "object", "properties": {"tz": {"type": "string"}}})
    session, _ = await open_session(provider, instructions="Be brief.", voice="Kore", tools=(tool,))
    try:
        setup = fake.setups[0]
        assert setup["model"] == "models/gemini-3.8-live"
        assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
        voice = setup["generationConfig"]["speechConfig"]["voice_config"]["prebuilt_voice_config"]
        assert voice["voice_name"] == "Kore"
        assert setup["systemInstruction"]["parts"][0]["text"] == f"Be brief.\n\n{CALL_NOTES}"
        assert setup["inputAudioTranscription"] == {} and setup["outputAudioTranscription"] == {}
        assert setup["sessionResumption"] == {}
        assert setup["contextWindowCompression"] == {
            "trigger_tokens": 25600,
            "sliding_window": {"target_tokens": 16000},
        }
        assert setup["realtimeInputConfig"]["activity_handling"] == "START_OF_ACTIVITY_INTERRUPTS"
        assert setup["tools"][0]["functionDeclarations"][0]["name"] == "get_time"
        conn = fake.last
        assert conn.path.endswith("/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent")
        assert conn.headers["x-goog-api-key"] == "test-key"
    finally:
        await session.close()


async def test_caller_audio_arrives_at_16k_and_reply_comes_back_at_24k(fake: GeminiLiveFake) -> None:
    fake.reply_freqs = (600.0,)
    session, events = await open_session(make_provider(fake))
    try:
        await speak(session, freq=440.0, ms=500)
        done = await events.wait(TurnDone)
        conn = fake.last
        assert conn.audio_mime_types == {"audio/pcm;rate=16000"}
        received = np.frombuffer(bytes(conn.audio_in), dtype="<i2")
        assert len(received) == 16000 * 900 // 1000  # 500 ms tone + 400 ms silence, nothing lost
        assert dominant_frequency(received[: 16000 * 500 // 1000], 16000) == pytest.approx(440.0, abs=3)
        reply = events.audio()
        assert session.output_format.duration_ms(len(reply)) == pytest.approx(fake.reply_ms, abs=1)
        assert dominant_frequency(from_pcm_bytes(reply), 24000) == pytest.approx(600.0, abs=3)
        assert {e.item_id for e in events.of(AudioOut)} == {done[0].item_id}
        finals = [(e.role, e.text) for e in events.of(Transcript) if e.final]
        assert ("caller", "caller spoke for 500 milliseconds") in finals
        assert any(role == "bot" and text.startswith("word01 word02") for role, text in finals)
        assert session.resume_handle == fake.last.handles_sent[-1]
    finally:
        await session.close()


async def test_session_keeps_reading_across_turns(fake: GeminiLiveFake) -> None:
    fake.reply_freqs = (500.0, 700.0)
    session, events = await open_session(make_provider(fake))
    try:
        for _ in range(2):
            await speak(session)
            await events.wait(TurnDone, count=len(events.of(TurnDone)) + 1)
        first, second = (e.item_id for e in events.of(TurnDone))
        assert first != second
        second_audio = b"".join(e.audio for e in events.of(AudioOut) if e.item_id == second)
        assert dominant_frequency(from_pcm_bytes(second_audio), 24000) == pytest.approx(700.0, abs=3)
    finally:
        await session.close()


async def test_interrupted_is_barge_in_and_truncate_tells_the_model_what_was_heard(
    fake: GeminiLiveFake,
) -> None:
    fake.reply_ms = 2000.0
    fake.reply_words = 10
    session, events = await open_session(make_provider(fake))
    try:
        await speak(session, ms=300, silence_ms=320)
        audio = await events.wait(AudioOut)
        item = audio[0].item_id
        await events.wait(Transcript, count=12)  # the whole answer has been generated
        await speak(session, freq=300.0, ms=200, silence_ms=0)  # caller barges in mid-playback
        started = await events.wait(SpeechStarted)
        assert started[0].item_id == item
        done = await events.wait(TurnDone)
        assert done[0] == TurnDone(item_id=item, interrupted=True)
        await session.truncate(item, heard_ms=600)
        conn = fake.last
        await fake.wait_for(lambda: conn.client_contents)
        # gemini-3.8-live: clientContent without turnComplete, which waits for the caller's turn.
        [content] = conn.client_contents
        assert content["turnComplete"] is False and content["turns"][0]["role"] == "user"
        text = content["turns"][0]["parts"][0]["text"]
        assert '"word01 word02 word03"' in text  # 600 of 2000 ms -> 3 of 10 words
        assert "word04" not in text
        assert conn.realtime_texts == []
        await speak(session, freq=300.0, ms=0, silence_ms=400)  # the caller stops talking...
        await events.wait(TurnDone, count=2)  # ...and gets an answer
        assert fake.last.interruptions == 1
        bot_finals = [e.text for e in events.of(Transcript) if e.final and e.role == "bot"]
        assert bot_finals[0] == "word01 word02 word03"
    finally:
        await session.close()


async def test_go_away_then_a_new_session_with_the_handle_continues_the_conversation(
    fake: GeminiLiveFake,
) -> None:
    provider = make_provider(fake)
    first, events = await open_session(provider)
    await speak(first)
    await events.wait(TurnDone)
    await fake.go_away("5s")
    expiring = await events.wait(SessionExpiring)
    assert expiring == [SessionExpiring(reason="goAway", seconds_left=5.0)]
    handle = first.resume_handle
    assert handle == fake.connections[0].handles_sent[-1]
    await first.close()

    second, events2 = await open_session(provider, resume_handle=handle, greeting="Hello again")
    try:
        conn = fake.last
        assert conn.setup["sessionResumption"] == {"handle": handle}
        assert conn.resumed_from == handle
        assert conn.conversation is fake.connections[0].conversation
        assert conn.client_contents == []  # resumed: no history replay and no second greeting
        await speak(second)
        await events2.wait(TurnDone)
        assert conn.conversation is not None
        roles = [role for role, _ in conn.conversation.turns]
        assert roles == ["caller", "bot", "caller", "bot"]
        assert {e.item_id for e in events.of(AudioOut)}.isdisjoint({e.item_id for e in events2.of(AudioOut)})
    finally:
        await second.close()


@pytest.mark.parametrize("model", ["gemini-2.5-flash-native-audio-preview-12-2025", "gemini-3.8-live"])
async def test_a_refused_handle_falls_back_to_a_fresh_session_with_history(fake: GeminiLiveFake, model: str) -> None:
    history = (Turn("caller", "My order is 42."), Turn("bot", "Thanks, looking it up."))
    session, _ = await open_session(make_provider(fake, model=model), resume_handle="expired", history=history)
    try:
        assert fake.connections[0].setup["sessionResumption"] == {"handle": "expired"}
        fresh = fake.last
        assert fresh.index == 1 and fresh.resumed_from is None
        await fake.wait_for(lambda: fresh.client_contents)
        seed = fresh.client_contents[0]
        assert seed["turns"][0]["parts"][0]["text"] == "My order is 42."
        if model == "gemini-3.8-live":
            # 3.8: an incomplete seed waits for the caller instead of speaking up on its own.
            assert [t["role"] for t in seed["turns"]] == ["user", "model"] and seed["turnComplete"] is False
        else:
            assert [t["role"] for t in seed["turns"]] == ["user", "model", "user"]
            assert seed["turnComplete"] is True  # on 2.5 an incomplete seed would mute later answers
        assert session.resume_handle is None
    finally:
        await session.close()


async def test_a_transport_failure_with_a_handle_is_left_to_the_recovery_layer(fake: GeminiLiveFake) -> None:
    fake.refuse_status = 503
    with pytest.raises(ProviderConnectError) as info:
        await make_provider(fake).open_session(SessionContext(call_sid="CA-r", resume_handle="h1"))
    assert info.value.retryable
    assert fake.setups == []  # no fresh session behind the recovery layer's back


async def test_greeting_makes_the_bot_speak_first(fake: GeminiLiveFake) -> None:
    session, events = await open_session(make_provider(fake), greeting="Thanks for calling Acme.")
    try:
        await events.wait(TurnDone)
        content = fake.last.client_contents[0]
        assert content["turnComplete"] is True
        assert "Thanks for calling Acme." in content["turns"][-1]["parts"][0]["text"]
        assert len(events.audio()) > 0 and fake.last.audio_in == bytearray()
    finally:
        await session.close()


async def test_gemini_3_models_get_a_declared_seed_and_realtime_text_only(fake: GeminiLiveFake) -> None:
    """3.1 closes the socket (1007) on clientContent other than the declared opening history."""
    fake.reply_ms = 1500.0
    history = (Turn("caller", "Hi"), Turn("bot", "Hello, Acme here."))
    provider = make_provider(fake, model="gemini-3.1-flash-live-preview")
    session, events = await open_session(provider, history=history, greeting="Welcome back.")
    try:
        conn = fake.last
        assert conn.declared_history  # SDK 3.6.1 sends {"historyConfig": {"initial_history_in_client_content": true}}
        done = await events.wait(TurnDone)  # the greeting, asked for by realtime text
        assert conn.client_contents[0]["turnComplete"] is True
        assert "Welcome back." in conn.realtime_texts[0]
        await speak(session, ms=300, silence_ms=320)
        audio = await events.wait(AudioOut, count=len(events.of(AudioOut)) + 1)
        await speak(session, freq=300.0, ms=200, silence_ms=0)
        await events.wait(SpeechStarted)
        await session.truncate(audio[-1].item_id, heard_ms=20)
        await speak(session, freq=300.0, ms=0, silence_ms=400)
        # Held until the caller went quiet, then sent inside their turn as realtime text.
        await fake.wait_for(lambda: conn.texts_during_speech)
        await events.wait(TurnDone, count=len(done) + 2)
        assert not events.of(Closed) and conn.open
    finally:
        await session.close()


async def test_tool_call_round_trip(fake: GeminiLiveFake) -> None:
    fake.tool_call_next = ("get_time", {"tz": "UTC"})
    tool = ToolSpec("get_time", "Current time", {"type": "object", "properties": {"tz": {"type": "string"}}})
    session, events = await open_session(make_provider(fake), tools=(tool,))
    try:
        await speak(session)
        call = (await events.wait(ToolCall))[0]
        assert (call.name, call.arguments) == ("get_time", {"tz": "UTC"})
        await session.send_tool_result(call.call_id, json.dumps({"time": "12:00"}))
        await events.wait(TurnDone)
        response = fake.last.tool_responses[0]["functionResponses"][0]
        # 3.8 calls are NON_BLOCKING: the result is spoken when the model is idle.
        assert response == {
            "id": call.call_id,
            "name": "get_time",
            "response": {"time": "12:00"},
            "scheduling": "WHEN_IDLE",
        }
        finals = [e.text for e in events.of(Transcript) if e.final and e.role == "bot"]
        assert finals == ['the tool said {"time": "12:00"}']
    finally:
        await session.close()


async def test_dtmf_goes_as_realtime_text(fake: GeminiLiveFake) -> None:
    session, events = await open_session(make_provider(fake))
    try:
        await session.send_text("1 2 #")
        await events.wait(TurnDone)
        assert fake.last.realtime_texts == ["1 2 #"]
    finally:
        await session.close()


async def test_refused_upgrade_is_a_retryable_connect_error(fake: GeminiLiveFake) -> None:
    fake.refuse_status = 503
    started = time.monotonic()
    with pytest.raises(ProviderConnectError, match="HTTP 503") as info:
        await make_provider(fake).open_session(SessionContext(call_sid="CA-503"))
    assert info.value.retryable and time.monotonic() - started < 2.0


async def test_bad_key_close_is_not_retryable(fake: GeminiLiveFake) -> None:
    fake.close_on_setup = (1007, "API key not valid. Please pass a valid API key.")
    with pytest.raises(ProviderConnectError, match="1007") as info:
        await make_provider(fake).open_session(SessionContext(call_sid="CA-key"))
    assert not info.value.retryable


async def test_hanging_setup_times_out_promptly(fake: GeminiLiveFake) -> None:
    fake.hang = True
    started = time.monotonic()
    with pytest.raises(ProviderConnectError, match="no setupComplete"):
        await make_provider(fake, connect_timeout_s=0.5).open_session(SessionContext(call_sid="CA-hang"))
    assert time.monotonic() - started < 1.5


async def test_unexpected_close_mid_call_is_a_fatal_error_then_closed(fake: GeminiLiveFake) -> None:
    session, events = await open_session(make_provider(fake))
    await fake.close_active(1011, "Internal error encountered.")
    closed = await events.wait(Closed, timeout=2.0)
    assert closed == [Closed("gemini ended the session", error=True)]
    errors = events.of(ProviderError)
    assert errors and errors[-1].fatal and "1011" in errors[-1].message
    await session.send_audio(b"\x00\x00" * 320)  # a late frame after Closed is a no-op
    await session.truncate("anything", 100)


async def test_unknown_server_message_is_reported_and_the_call_goes_on(fake: GeminiLiveFake) -> None:
    session, events = await open_session(make_provider(fake))
    try:
        await fake.send_raw({"somethingNew": {"x": 1}})
        await fake.send_raw("not json")
        await events.wait(ProviderError, count=2)
        assert not any(e.fatal for e in events.of(ProviderError))
        await speak(session)
        await events.wait(TurnDone)
        assert not events.of(Closed)
    finally:
        await session.close()


async def test_model_audio_at_the_wrong_rate_fails_loudly(fake: GeminiLiveFake) -> None:
    fake.out_mime = "audio/pcm;rate=16000"
    session, events = await open_session(make_provider(fake))
    await speak(session)
    closed = await events.wait(Closed)
    assert closed[0].error
    assert [e.code for e in events.of(ProviderError)] == ["bad_audio_format"]
    assert events.of(AudioOut) == []


async def test_fake_speaks_both_key_casings_and_base64_alphabets(fake: GeminiLiveFake) -> None:
    """The fake must accept what other clients send too (docs: camelCase, standard base64)."""
    pcm = bytes(range(256)) * 4  # covers the bytes that differ between the two alphabets
    url = f"wss://127.0.0.1:{fake.port}/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    async with ws_connect(url, ssl=fake.client_ssl_context()) as ws:
        await ws.send(json.dumps({"setup": {"model": "models/x"}}))
        assert json.loads(await ws.recv()) == {"setupComplete": {}}
        standard = base64.b64encode(pcm).decode()
        urlsafe = base64.urlsafe_b64encode(pcm).decode().rstrip("=")
        assert standard != urlsafe
        await ws.send(json.dumps({"realtimeInput": {"audio": {"data": standard, "mimeType": "audio/pcm;rate=16000"}}}))
        chunk = {"data": urlsafe, "mime_type": "audio/pcm;rate=16000"}
        await ws.send(json.dumps({"realtime_input": {"media_chunks": [chunk]}}))
        await fake.wait_for(lambda: len(fake.last.audio_in) == 2 * len(pcm))
    assert bytes(fake.last.audio_in) == pcm + pcm
    assert fake.last.realtime_keys == {"realtimeInput", "realtime_input"}


async def test_cancelling_an_open_closes_the_connection(fake: GeminiLiveFake) -> None:
    """The caller hung up while the provider was connecting: nothing may stay open."""
    fake.hang = True
    opening = asyncio.ensure_future(make_provider(fake).open_session(SessionContext(call_sid="CA-gone")))
    await fake.wait_for(lambda: fake.setups)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    await fake.wait_for(lambda: not fake.last.open, timeout=2)


@pytest.fixture
def vertex_credentials(monkeypatch: pytest.MonkeyPatch) -> str:
    """Application Default Credentials as google.auth resolves them in production, here an
    OAuth token that needs no refresh (no machine in the tests reaches Google)."""
    import google.auth
    from google.oauth2.credentials import Credentials

    token = "ya29.test-vertex-token"
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (Credentials(token=token), "acme-voice"))
    return token


async def test_a_vertex_session_uses_the_vertex_url_a_bearer_token_and_the_project_model_path(
    fake: GeminiLiveFake, vertex_credentials: str
) -> None:
    provider = make_provider(fake, api_key=None, vertex_project="acme-voice", vertex_location="us-central1")
    session, events = await open_session(provider, history=(Turn("caller", "Hi"), Turn("bot", "Hello.")))
    try:
        conn = fake.last
        assert conn.path == "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
        assert conn.headers["Authorization"] == f"Bearer {vertex_credentials}"
        assert conn.setup["model"] == (
            "projects/acme-voice/locations/us-central1/publishers/google/models/gemini-3.8-live"
        )
        assert "historyConfig" not in conn.setup and "history_config" not in conn.setup
        await speak(session)
        assert dominant_frequency(from_pcm_bytes(b"".join(e.audio for e in await events.wait(AudioOut))), 24000) > 0
    finally:
        await session.close()


async def test_vertex_gets_no_history_config_and_a_3_1_model_hears_the_history_in_its_instruction(
    fake: GeminiLiveFake, vertex_credentials: str
) -> None:
    provider = make_provider(
        fake,
        api_key=None,
        vertex_project="acme-voice",
        vertex_location="europe-west4",
        model="gemini-3.1-flash-live-preview",
    )
    session, _ = await open_session(provider, history=(Turn("caller", "My order is 42."), Turn("bot", "Got it.")))
    try:
        setup = fake.last.setup
        assert "historyConfig" not in setup and "history_config" not in setup
        assert fake.last.client_contents == []
        instruction = json.dumps(setup.get("systemInstruction") or setup.get("system_instruction"))
        assert "Caller: My order is 42." in instruction and "You: Got it." in instruction
    finally:
        await session.close()


def test_vertex_refuses_the_gemini_api_version() -> None:
    with pytest.raises(ValueError, match="v1beta1"):
        GeminiLiveConfig(vertex_project="p", vertex_location="us-central1", api_version="v1beta")
    assert GeminiLiveConfig(vertex_project="p", vertex_location="l").resolved_api_version == "v1beta1"
    assert GeminiLiveConfig(api_key="k").resolved_api_version == "v1beta"  # type: ignore[arg-type]


async def test_keepalive_tolerates_slow_pongs_and_setup_sends_nothing_3_8_refuses(fake: GeminiLiveFake) -> None:
    """gemini-3.8-live: proactive audio is always on (proactive_audio=false is an error) and
    affective dialog is gone, so the setup names neither; keepalive pings wait 60 s for a pong."""
    session, _ = await open_session(make_provider(fake))
    try:
        ws = session._live._ws
        assert (ws.ping_interval, ws.ping_timeout) == (20.0, 60.0)
        setup = json.dumps(fake.last.setup)
        assert "proactiv" not in setup.lower() and "affective" not in setup.lower()
    finally:
        await session.close()
