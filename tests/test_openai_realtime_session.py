"""OpenAI Realtime sessions against the GA fake, through the production client (the openai SDK)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest

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
from s2s.openai_realtime import SPEC, OpenAIRealtimeConfig, OpenAIRealtimeProtocol, OpenAIRealtimeProvider
from s2s.provider import ProviderConnectError, SessionContext, Turn
from s2s.registry import provider_spec
from s2s.tools import ToolSpec
from tests.fakes.openai_realtime_fake import FakeOptions, FakeRealtimeServer, ToolCue
from tests.support.session_events import EventLog
from transcoding.formats import MULAW_8K, PCM16_24K
from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw


def tone_pcm(freq: float, ms: int, rate: int, dbfs: float = -10.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (32767 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def dominant_hz(pcm16: bytes, rate: int) -> float:
    x = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum[1:]) + 1) * rate / x.size


def provider_for(fake: FakeRealtimeServer, **overrides: Any) -> OpenAIRealtimeProvider:
    config = OpenAIRealtimeConfig.model_validate(
        {"type": "openai_realtime", "api_key": "test-key", "base_url": fake.base_url, "connect_timeout_s": 2.0}
        | overrides
    )
    return OpenAIRealtimeProvider("openai", config)


async def stream(session: Any, audio: bytes, chunk: int) -> None:
    """Send ``audio`` in 20 ms chunks as the bridge does (faster than real time is fine here)."""
    for i in range(0, len(audio), chunk):
        await session.send_audio(audio[i : i + chunk])


async def speak(session: Any, fmt: Any, freq: float = 1000.0, ms: int = 400) -> None:
    pcm = tone_pcm(freq, ms, fmt.sample_rate) + bytes(fmt.nbytes(400) * (2 // fmt.bytes_per_sample))
    audio = pcm16_to_mulaw(pcm) if fmt == MULAW_8K else pcm
    await stream(session, audio, fmt.nbytes(20))


def test_spec_is_registered_for_the_config_type() -> None:
    assert provider_spec("openai_realtime") is SPEC
    assert SPEC.config_model is OpenAIRealtimeConfig


async def test_handshake_sends_one_ga_session_update_with_bearer_and_no_beta_header() -> None:
    async with FakeRealtimeServer() as fake:
        provider = provider_for(fake, voice="cedar", transcription_model="whisper-1", noise_reduction="near_field")
        tools = (ToolSpec("lookup", "Look up an order", {"type": "object", "properties": {"id": {"type": "string"}}}),)
        ctx = SessionContext("CA1", instructions="Be brief.", model="gpt-realtime-mini", language="fr-FR", tools=tools)
        session = await provider.open_session(ctx)
        try:
            conn = fake.last
            assert conn.headers["authorization"] == "Bearer test-key"
            assert not any(k.lower() == "openai-beta" for k in conn.headers)
            assert conn.path == "/v1/realtime?model=gpt-realtime-mini"
            assert len(conn.session_updates) == 1
            s = conn.session_updates[0]
            assert s["type"] == "realtime" and s["model"] == "gpt-realtime-mini"
            assert s["instructions"] == "Be brief." and s["output_modalities"] == ["audio"]
            assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
            assert s["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "cedar"}
            assert s["audio"]["input"]["turn_detection"] == {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
                "create_response": True,
                "interrupt_response": True,
            }
            assert s["audio"]["input"]["transcription"] == {"model": "whisper-1", "language": "fr"}
            assert s["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
            assert s["tools"] == [
                {
                    "type": "function",
                    "name": "lookup",
                    "description": "Look up an order",
                    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
                }
            ]
            assert not conn.errors_sent
            assert session.input_format == MULAW_8K and session.output_format == MULAW_8K
        finally:
            await session.close()


async def test_semantic_vad_config_maps_to_the_wire() -> None:
    async with FakeRealtimeServer() as fake:
        provider = provider_for(fake, turn_detection={"type": "semantic_vad", "eagerness": "high"})
        session = await provider.open_session(SessionContext("CA2"))
        await session.close()
        td = fake.last.session_updates[0]["audio"]["input"]["turn_detection"]
        assert td == {"type": "semantic_vad", "eagerness": "high", "create_response": True, "interrupt_response": True}


async def test_pcmu_round_trip_caller_tone_reaches_fake_byte_exact_and_bot_tone_comes_back() -> None:
    async with FakeRealtimeServer(FakeOptions(tone_hz=600.0, response_ms=800)) as fake:
        session = await provider_for(fake).open_session(SessionContext("CA3"))
        log = EventLog(session)
        pcm = tone_pcm(1000.0, 400, 8000) + bytes(2 * 8000 * 400 // 1000)
        caller = pcm16_to_mulaw(pcm)
        await stream(session, caller, 160)
        done = await log.wait_for(lambda e: isinstance(e, TurnDone))
        assert bytes(fake.last.audio_in) == caller  # pcmu passes through byte-exact
        heard = await log.wait_for(lambda e: isinstance(e, Transcript) and e.role == "caller" and e.final)
        assert heard.text == "caller tone 1000 hertz"
        audio = b"".join(e.audio for e in log.of(AudioOut))
        assert {e.item_id for e in log.of(AudioOut)} == {done.item_id}
        assert len(audio) == 8 * 800  # 800 ms of mu-law at 8 kHz
        assert dominant_hz(mulaw_to_pcm16(audio), 8000) == pytest.approx(600.0, abs=10)
        bot = await log.wait_for(lambda e: isinstance(e, Transcript) and e.role == "bot" and e.final)
        assert bot.text == "bot tone 600 hertz" and bot.item_id == done.item_id
        assert not done.interrupted
        assert session.protocol.sent_ms(done.item_id) == 800
        await session.close()
        await log.ended()
        assert log.events[-1] == Closed("closed by voicebot")


async def test_pcm24k_session_sends_and_receives_24khz_pcm() -> None:
    async with FakeRealtimeServer(FakeOptions(tone_hz=700.0, response_ms=400)) as fake:
        session = await provider_for(fake, audio_format="pcm24k").open_session(SessionContext("CA4"))
        assert session.input_format == PCM16_24K and session.output_format == PCM16_24K
        s = fake.last.session_updates[0]
        assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        log = EventLog(session)
        await speak(session, PCM16_24K, freq=1500.0)
        done = await log.wait_for(lambda e: isinstance(e, TurnDone))
        assert fake.last.input_rate == 24000
        assert dominant_hz(fake.last.input_pcm()[: 24000 * 400 // 1000].tobytes(), 24000) == pytest.approx(1500, abs=10)
        audio = b"".join(e.audio for e in log.of(AudioOut))
        assert len(audio) == 48 * 400  # 24 kHz * 2 bytes
        assert dominant_hz(audio, 24000) == pytest.approx(700.0, abs=10)
        assert session.protocol.sent_ms(done.item_id) == 400  # bytes / 48
        await session.close()


async def test_truncate_after_the_answer_caps_at_audio_sent_and_sends_no_cancel() -> None:
    async with FakeRealtimeServer(FakeOptions(response_ms=600)) as fake:
        session = await provider_for(fake).open_session(SessionContext("CA5"))
        log = EventLog(session)
        await speak(session, MULAW_8K)
        done = await log.wait_for(lambda e: isinstance(e, TurnDone))
        await session.truncate(done.item_id, 10_000)  # the bridge over-estimates: cap at 600
        await fake.wait_for(lambda: fake.last.truncates)
        t = fake.last.truncates[0]
        assert (t.item_id, t.content_index, t.audio_end_ms, t.accepted) == (done.item_id, 0, 600, True)
        assert "response.cancel" not in fake.last.types()
        await session.close()


async def test_barge_in_mid_generation_cancels_then_truncates_at_heard_ms() -> None:
    async with FakeRealtimeServer(FakeOptions(response_ms=4000, speedup=1.0)) as fake:
        session = await provider_for(fake).open_session(SessionContext("CA6"))
        log = EventLog(session)
        await speak(session, MULAW_8K)
        first = await log.wait_for(lambda e: isinstance(e, AudioOut))
        await fake.wait_for(lambda: session.protocol.sent_ms(first.item_id) >= 200)
        await session.truncate(first.item_id, 123)
        await fake.wait_for(lambda: fake.last.truncates)
        types = fake.last.types()
        assert types.index("response.cancel") < types.index("conversation.item.truncate")
        assert fake.last.truncates[0].audio_end_ms == 123 and fake.last.truncates[0].accepted
        done = await log.wait_for(lambda e: isinstance(e, TurnDone))
        assert done.interrupted
        count = len(log.of(AudioOut))
        await asyncio.sleep(0.2)
        assert len(log.of(AudioOut)) == count  # nothing of the truncated item after the barge-in
        assert not [e for e in log.of(ProviderError)]
        await session.close()


async def test_caller_speech_during_answer_surfaces_speech_started_for_the_bot_item() -> None:
    async with FakeRealtimeServer(FakeOptions(response_ms=3000, speedup=1.0)) as fake:
        session = await provider_for(fake).open_session(SessionContext("CA7"))
        log = EventLog(session)
        await speak(session, MULAW_8K)
        first = await log.wait_for(lambda e: isinstance(e, AudioOut))
        n = len(log.of(SpeechStarted))
        await speak(session, MULAW_8K, freq=800.0, ms=200)
        await log.wait_for(lambda e: len(log.of(SpeechStarted)) > n)
        assert log.of(SpeechStarted)[n].item_id == first.item_id
        done = await log.wait_for(lambda e: isinstance(e, TurnDone))
        assert done.interrupted and done.item_id == first.item_id  # server's interrupt_response
        await session.close()


async def test_tool_call_round_trip_sends_output_then_one_response_create() -> None:
    cue = ToolCue("get_time", {"zone": "UTC"})
    async with FakeRealtimeServer(FakeOptions(tool_call=cue, response_ms=200)) as fake:
        tools = (ToolSpec("get_time", "Current time", {"type": "object", "properties": {"zone": {"type": "string"}}}),)
        session = await provider_for(fake).open_session(SessionContext("CA8", tools=tools))
        log = EventLog(session)
        await session.send_text("what time is it?")
        call = await log.wait_for(lambda e: isinstance(e, ToolCall))
        assert (call.name, call.arguments) == ("get_time", {"zone": "UTC"})
        await log.wait_for(lambda e: isinstance(e, TurnDone))
        await session.send_tool_result(call.call_id, json.dumps({"time": "12:00"}))
        bot = await log.wait_for(lambda e: isinstance(e, Transcript) and e.role == "bot" and e.final)
        assert bot.text == 'the tool said {"time": "12:00"}'
        types = fake.last.types()
        out = [i for i in fake.last.items_created if i.get("type") == "function_call_output"]
        assert out == [{"type": "function_call_output", "call_id": call.call_id, "output": '{"time": "12:00"}'}]
        after_output = types[types.index("conversation.item.create", types.index("response.create") + 1) :]
        assert after_output.count("response.create") == 1
        assert not fake.last.errors_sent
        await session.close()


async def test_history_is_replayed_and_greeting_makes_the_bot_speak_first() -> None:
    async with FakeRealtimeServer(FakeOptions(response_ms=200)) as fake:
        history = (Turn("caller", "I need a plumber"), Turn("bot", "Sure, where are you?"))
        ctx = SessionContext("CA9", history=history, greeting="Welcome back to Acme.")
        session = await provider_for(fake).open_session(ctx)
        log = EventLog(session)
        await log.wait_for(lambda e: isinstance(e, AudioOut))  # no caller audio needed
        assert fake.last.items_created == [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "I need a plumber"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Sure, where are you?"}],
            },
        ]
        create = [m for m in fake.last.received if m["type"] == "response.create"]
        assert len(create) == 1 and "Welcome back to Acme." in create[0]["response"]["instructions"]
        assert not fake.last.errors_sent
        await session.close()


async def test_send_text_adds_a_user_item_and_asks_for_a_response() -> None:
    async with FakeRealtimeServer(FakeOptions(response_ms=200)) as fake:
        session = await provider_for(fake).open_session(SessionContext("CA10"))
        log = EventLog(session)
        await session.send_text("DTMF 5")
        await log.wait_for(lambda e: isinstance(e, TurnDone))
        assert fake.last.items_created[0]["content"] == [{"type": "input_text", "text": "DTMF 5"}]
        await session.close()


async def test_recoverable_error_is_reported_and_the_session_continues() -> None:
    async with FakeRealtimeServer(FakeOptions(response_ms=200)) as fake:
        session = await provider_for(fake).open_session(SessionContext("CA11"))
        log = EventLog(session)
        await session.truncate("item_unknown", 50)  # no audio sent for it: nothing goes out
        await fake.push(
            {"type": "error", "error": {"type": "invalid_request_error", "code": "response_cancel_not_active"}}
        )
        await fake.push(
            {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value", "message": "x"}}
        )
        err = await log.wait_for(lambda e: isinstance(e, ProviderError))
        assert (err.code, err.fatal) == ("invalid_value", False)
        await fake.push({"type": "mystery.event"})
        await fake.last.ws.send("not json")  # type: ignore[union-attr]
        bad = await log.wait_for(lambda e: isinstance(e, ProviderError) and e.code == "bad_frame")
        assert not bad.fatal
        await speak(session, MULAW_8K)
        await log.wait_for(lambda e: isinstance(e, TurnDone))
        assert len(log.of(ProviderError)) == 2 and not log.of(Closed)
        assert not fake.last.truncates
        await session.close()


async def test_fatal_error_ends_the_session_with_closed_error() -> None:
    async with FakeRealtimeServer() as fake:
        session = await provider_for(fake).open_session(SessionContext("CA12"))
        log = EventLog(session)
        await fake.push(
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "code": "session_expired", "message": "max duration"},
            }
        )
        await log.ended(timeout=2)
        assert log.of(ProviderError)[0].fatal and log.of(ProviderError)[0].code == "session_expired"
        assert log.events[-1].error is True
        await session.send_audio(b"\xff" * 160)  # late frames are no-ops
        await session.close()


async def test_close_mid_response_gives_closed_error_promptly() -> None:
    async with FakeRealtimeServer(FakeOptions(close_after_chunks=3, speedup=1.0)) as fake:
        session = await provider_for(fake).open_session(SessionContext("CA13"))
        log = EventLog(session)
        await speak(session, MULAW_8K)
        await log.ended(timeout=3)
        closed = log.events[-1]
        assert isinstance(closed, Closed) and closed.error
        assert len(log.of(AudioOut)) == 3
        await session.send_audio(b"\xff" * 160)


@pytest.mark.parametrize(("status", "retryable"), [(401, False), (403, False), (503, True)])
async def test_refused_handshake_raises_connect_error(status: int, retryable: bool) -> None:
    async with FakeRealtimeServer(FakeOptions(refuse_status=status)) as fake:
        with pytest.raises(ProviderConnectError) as err:
            await provider_for(fake).open_session(SessionContext("CA14"))
        assert f"HTTP {status}" in str(err.value) and err.value.retryable is retryable


async def test_wrong_api_key_is_a_permanent_connect_error() -> None:
    async with FakeRealtimeServer() as fake:
        with pytest.raises(ProviderConnectError) as err:
            await provider_for(fake, api_key="wrong").open_session(SessionContext("CA15"))
        assert "HTTP 401" in str(err.value) and not err.value.retryable


@pytest.mark.parametrize("fault", ["silent_tcp", "never_update"])
async def test_a_server_that_never_finishes_the_handshake_times_out(fault: str) -> None:
    fake = FakeRealtimeServer(FakeOptions(never_update=True)) if fault == "never_update" else None
    fake = fake or FakeRealtimeServer(silent_tcp=True)
    async with fake:
        start = time.monotonic()
        with pytest.raises(ProviderConnectError) as err:
            await provider_for(fake, connect_timeout_s=0.5).open_session(SessionContext("CA16"))
        assert time.monotonic() - start < 2.0
        assert "no session.updated within 0.5s" in str(err.value) and err.value.retryable


async def test_nothing_listening_is_a_connect_error() -> None:
    async with FakeRealtimeServer() as fake:
        url = fake.base_url
    config = OpenAIRealtimeConfig(type="openai_realtime", api_key="k", base_url=url, connect_timeout_s=1.0)
    with pytest.raises(ProviderConnectError, match="connect failed"):
        await OpenAIRealtimeProvider("openai", config).open_session(SessionContext("CA17"))


async def test_a_rejected_session_update_fails_the_handshake() -> None:
    async with FakeRealtimeServer() as fake:
        provider = provider_for(fake)
        provider.make_protocol = lambda ctx: _BetaShaped(ctx, provider.config)  # type: ignore[method-assign]
        with pytest.raises(ProviderConnectError, match="unknown_parameter"):
            await provider.open_session(SessionContext("CA18"))
        # The SDK's own types flag the same frame, independently of the fake's check.
        assert [e for e in fake.conformance_errors if "session.voice" in e]
        fake.conformance_errors.clear()


class _BetaShaped(OpenAIRealtimeProtocol):
    """The retired beta layout (flat ``voice``), which the GA server rejects."""

    def session_config(self) -> dict[str, Any]:
        return {**super().session_config(), "voice": "alloy"}


async def test_session_expiring_is_announced_before_the_session_limit() -> None:
    async with FakeRealtimeServer() as fake:
        session = await provider_for(fake, session_limit_s=0.5, renew_after_s=0.2).open_session(SessionContext("CA19"))
        log = EventLog(session)
        start = time.monotonic()
        expiring = await log.wait_for(lambda e: isinstance(e, SessionExpiring), timeout=2)
        assert 0.15 <= time.monotonic() - start < 1.0
        assert expiring.seconds_left == pytest.approx(0.3)
        await session.close()


def test_renewal_must_come_before_the_limit() -> None:
    with pytest.raises(ValueError, match="renew_after_s"):
        OpenAIRealtimeConfig(type="openai_realtime", api_key="k", session_limit_s=60, renew_after_s=60)


async def test_pcm_confirmed_instead_of_mulaw_is_adopted_and_plays_at_the_right_rate() -> None:
    from transcoding.formats import PCM16_24K

    async with FakeRealtimeServer(FakeOptions(pcm_anyway="confirmed", tone_dbfs=-24.0, response_ms=300)) as fake:
        session = await provider_for(fake).open_session(SessionContext("CA-fmt1"))
        assert session.input_format == MULAW_8K and session.output_format == PCM16_24K
        log = EventLog(session)
        await session.send_text("hello")
        await log.wait_for(lambda e: isinstance(e, TurnDone))
        pcm = b"".join(e.audio for e in log.events if isinstance(e, AudioOut))
        assert dominant_hz(pcm, 24000) == pytest.approx(440, abs=5)
        assert not [e for e in log.events if isinstance(e, ProviderError)]
        await session.close()


async def test_pcm_sent_on_a_mulaw_session_without_a_word_ends_it_loudly_and_never_plays() -> None:
    async with FakeRealtimeServer(FakeOptions(pcm_anyway="silent", tone_dbfs=-24.0, response_ms=300)) as fake:
        session = await provider_for(fake).open_session(SessionContext("CA-fmt2"))
        assert session.output_format == MULAW_8K  # what the server confirmed
        log = EventLog(session)
        await session.send_text("hello")
        closed = await log.wait_for(lambda e: isinstance(e, Closed))
        assert closed.error
        assert [e.code for e in log.events if isinstance(e, ProviderError)] == ["audio_format_mismatch"]
        assert not [e for e in log.events if isinstance(e, AudioOut)]
