"""Nova Sonic sessions driven end to end against the in-memory fake model (tests/fakes)."""

from __future__ import annotations

import asyncio
import contextlib
import wave
from collections.abc import AsyncIterator
from pathlib import Path

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
from s2s.nova_sonic import SPEC, NovaSonicConfig, NovaSonicProvider
from s2s.nova_sonic.config import NOVA_SONIC_V1
from s2s.nova_sonic.session import NovaSonicSession, greeting_request
from s2s.nova_sonic.transport import NovaStreamError, register_stream_factory, unregister_stream_factory
from s2s.provider import ProviderConnectError, SessionContext, Turn
from s2s.registry import build_provider, provider_spec
from s2s.tools import ToolSpec
from tests.fakes.nova_sonic_fake import FakeNovaModel, FakeNovaService, ToolPlan, dominant_hz, sine_pcm16
from tests.support.session_events import EventLog
from tests.test_openai_realtime_protocol import spoken_mulaw


@contextlib.asynccontextmanager
async def nova_session(
    service: FakeNovaService, ctx: SessionContext | None = None, **config: object
) -> AsyncIterator[tuple[NovaSonicSession, EventLog]]:
    provider = NovaSonicProvider("nova", NovaSonicConfig(**config), stream_factory=service)  # type: ignore[arg-type]
    session = await provider.open_session(ctx or SessionContext(call_sid="CA-test"))
    recorder = EventLog(session)
    try:
        yield session, recorder
    finally:
        await session.close()
        await recorder.stop()
        service.shutdown()


async def speak(session: NovaSonicSession, pcm: bytes, *, realtime: bool = False) -> None:
    """Send caller audio in 20 ms frames (paced at real time when it matters for barge-in)."""
    frame = session.input_format.nbytes(20)
    for offset in range(0, len(pcm), frame):
        await session.send_audio(pcm[offset : offset + frame])
        if realtime:
            await asyncio.sleep(0.02)
        else:
            await asyncio.sleep(0)


async def test_caller_tone_in_and_bot_tone_out_at_8khz_both_ways() -> None:
    service = FakeNovaService(lambda: FakeNovaModel(reply_hz=440, reply_ms=600))
    async with nova_session(service) as (session, rec):
        assert session.input_format.sample_rate == session.output_format.sample_rate == 8000
        await speak(session, sine_pcm16(700, 300, 8000) + bytes(2 * 8000 * 300 // 1000))
        await rec.until(lambda ev: any(isinstance(e, Transcript) and e.role == "bot" and e.final for e in ev))
        model = service.models[0]
        assert model.errors == []
        assert (model.input_rate, model.output_rate, model.voice) == (8000, 8000, "matthew")
        assert abs(dominant_hz(bytes(model.caller_audio), 8000) - 700) < 15
        assert rec.of(Transcript)[0] == Transcript("caller", "tone 700 Hz")
        audio = rec.audio()
        assert len(audio) == 2 * 8000 * 600 // 1000  # 600 ms of PCM16 at 8 kHz
        assert abs(dominant_hz(audio, 8000) - 440) < 15
        item = rec.of(AudioOut)[0].item_id
        assert {e.item_id for e in rec.of(AudioOut)} == {item}
        assert rec.of(TurnDone) == [TurnDone(item, interrupted=False)]


async def test_16k_in_24k_out_when_configured() -> None:
    service = FakeNovaService(lambda: FakeNovaModel(reply_hz=1000, reply_ms=400))
    async with nova_session(service, input_sample_rate=16000, output_sample_rate=24000) as (session, rec):
        assert (session.input_format.sample_rate, session.output_format.sample_rate) == (16000, 24000)
        await speak(session, sine_pcm16(500, 300, 16000) + bytes(2 * 16000 * 300 // 1000))
        await rec.until(lambda ev: bool([e for e in ev if isinstance(e, TurnDone)]))
        assert (service.models[0].input_rate, service.models[0].output_rate) == (16000, 24000)
        assert abs(dominant_hz(rec.audio(), 24000) - 1000) < 20
        assert rec.of(Transcript)[0].text == "tone 500 Hz"


async def test_barge_in_emits_speech_started_for_the_playing_item_and_ends_the_turn() -> None:
    service = FakeNovaService(lambda: FakeNovaModel(reply_ms=3000, speed=1.0))
    async with nova_session(service) as (session, rec):
        await speak(session, sine_pcm16(600, 300, 8000) + bytes(2 * 8000 * 300 // 1000))
        await rec.until(lambda ev: len([e for e in ev if isinstance(e, AudioOut)]) >= 3)
        item = rec.of(AudioOut)[0].item_id
        await speak(session, sine_pcm16(900, 200, 8000), realtime=True)  # the caller talks over the bot
        await rec.until(lambda ev: any(isinstance(e, TurnDone) for e in ev))
        assert rec.of(SpeechStarted) == [SpeechStarted(item)]
        assert rec.of(TurnDone) == [TurnDone(item, interrupted=True)]
        assert len(rec.audio()) < 2 * 8000 * 3  # the bot stopped well before its 3 s answer
        assert service.models[0].interruptions == 1 and service.models[0].errors == []


async def test_tool_call_round_trip() -> None:
    plan = ToolPlan("get_weather", {"city": "Oslo"})
    service = FakeNovaService(lambda: FakeNovaModel(tool=plan, reply_ms=200))
    tools = (ToolSpec("get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}}),)
    async with nova_session(service, SessionContext("CA-tool", tools=tools)) as (session, rec):
        await speak(session, sine_pcm16(600, 200, 8000) + bytes(2 * 8000 * 300 // 1000))
        await rec.until(lambda ev: any(isinstance(e, ToolCall) for e in ev))
        assert rec.of(ToolCall) == [ToolCall("tooluse-1", "get_weather", {"city": "Oslo"})]
        assert not rec.of(AudioOut)  # the model waits for the result
        await session.send_tool_result("tooluse-1", '{"temp_c": 21}')
        await rec.until(lambda ev: any(isinstance(e, Transcript) and e.role == "bot" and e.final for e in ev))
        model = service.models[0]
        assert model.tool_results == [("tooluse-1", '{"temp_c": 21}')] and model.errors == []
        assert model.tools_declared[0]["toolSpec"]["name"] == "get_weather"
        assert 'The tool said {"temp_c": 21}.' in [t.text for t in rec.of(Transcript)]


async def test_nova2_greeting_is_a_user_text_turn_and_the_bot_speaks_first() -> None:
    service = FakeNovaService(lambda: FakeNovaModel(reply_ms=300))
    ctx = SessionContext("CA-greet", greeting="Thanks for calling Acme.")
    async with nova_session(service, ctx) as (session, rec):
        await rec.until(lambda ev: any(isinstance(e, TurnDone) for e in ev))
        model = service.models[0]
        assert model.user_texts == [greeting_request("Thanks for calling Acme.")]
        assert model.caller_audio == b"" and model.errors == []
        assert len(rec.audio()) == 2 * 8000 * 300 // 1000
        await session.send_text("The caller pressed 1 2 3")  # DTMF as Nova 2 text input
        await service.wait_for(lambda: len(model.user_texts) == 2)
        assert model.errors == []


async def test_v1_greeting_streams_the_recorded_cue_and_text_input_is_refused(tmp_path: Path) -> None:
    cue = tmp_path / "hello.wav"
    with wave.open(str(cue), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(sine_pcm16(300, 200, 8000))
    service = FakeNovaService(lambda: FakeNovaModel(reply_ms=200))
    ctx = SessionContext("CA-v1", greeting="Hello from Acme.")
    async with nova_session(service, ctx, model_id=NOVA_SONIC_V1, greeting_audio=cue) as (session, rec):
        model = service.models[0]
        assert "Hello from Acme." in model.system_prompt
        for _ in range(100):  # the line stays open: Twilio keeps sending (silent) frames
            if rec.of(TurnDone):
                break
            await session.send_audio(bytes(320))  # dropped while the cue plays, heard after it
            await asyncio.sleep(0.02)
        await rec.until(lambda ev: any(isinstance(e, TurnDone) for e in ev), timeout=2)
        assert rec.of(Transcript)[0] == Transcript("caller", "tone 300 Hz")  # the model heard the cue
        await session.send_text("1 2 3")
        await rec.until(lambda ev: any(isinstance(e, ProviderError) for e in ev))
        assert rec.of(ProviderError)[-1] == ProviderError("unsupported", rec.of(ProviderError)[-1].message)
        assert model.errors == [] and model.user_texts == []


async def test_expiring_then_a_new_session_replays_history_in_order() -> None:
    service = FakeNovaService(lambda: FakeNovaModel(reply_ms=200))
    async with nova_session(service, renew_after_s=0.3, stream_limit_s=2.0) as (_session, rec):
        await rec.until(lambda ev: any(isinstance(e, SessionExpiring) for e in ev), timeout=2)
        assert rec.of(SessionExpiring) == [SessionExpiring("stream limit", seconds_left=1.7)]
    history = (
        Turn("bot", "Welcome to Acme."),
        Turn("caller", "I'd like a taxi"),
        Turn("caller", "to the airport"),
        Turn("bot", "When should it come?"),
        Turn("caller", "At noon."),
    )
    ctx = SessionContext("CA-renew", history=history, greeting="Welcome to Acme.")
    async with nova_session(service, ctx) as (session, rec):
        model = service.models[1]
        assert model.user_texts == []  # a renewed session does not greet again
        assert model.history == [
            ("USER", "I'd like a taxi to the airport"),
            ("ASSISTANT", "When should it come?"),
            ("USER", "At noon."),
        ]
        assert model.errors == []
        await speak(session, sine_pcm16(800, 200, 8000) + bytes(2 * 8000 * 300 // 1000))
        await rec.until(lambda ev: any(isinstance(e, TurnDone) for e in ev))


async def test_model_timeout_at_the_stream_limit_is_fatal_and_closes_with_error() -> None:
    service = FakeNovaService(lambda: FakeNovaModel(limit_s=0.2))
    async with nova_session(service) as (_session, rec):
        await rec.until(lambda ev: any(isinstance(e, Closed) for e in ev))
        assert rec.of(ProviderError)[0].code == "model_timeout" and rec.of(ProviderError)[0].fatal
        assert rec.of(Closed)[0].error is True


async def test_unexpected_end_of_stream_is_a_drop() -> None:
    service = FakeNovaService()
    async with nova_session(service) as (session, rec):
        service.models[0].drop()
        await rec.until(lambda ev: any(isinstance(e, Closed) for e in ev))
        assert rec.of(ProviderError)[0].code == "stream_dropped"
        assert rec.events[-1] == Closed("nova ended the session", error=True)
        await session.send_audio(b"\0\0" * 160)  # late caller frames are no-ops
        await service.wait_for(lambda: service.streams[0].closed, timeout=3)  # released, not leaked


async def test_close_sends_the_goodbye_in_order_and_ends_cleanly() -> None:
    service = FakeNovaService()
    async with nova_session(service) as (session, rec):
        await speak(session, bytes(320))
        await session.close()
        await rec.until(lambda ev: any(isinstance(e, Closed) for e in ev))
        model = service.models[0]
        tail = [next(iter(e["event"])) for e in model.inputs[-3:]]
        assert tail == ["contentEnd", "promptEnd", "sessionEnd"] and model.errors == []
        assert rec.events[-1] == Closed("closed by voicebot", error=False)
        await session.send_audio(bytes(320))
        assert len(model.inputs) > 0 and next(iter(model.inputs[-1]["event"])) == "sessionEnd"


async def test_refused_and_hanging_opens_raise_connect_errors() -> None:
    refused = FakeNovaService(refuse=NovaStreamError("access_denied", "no model access", retryable=False))
    provider = NovaSonicProvider("nova", NovaSonicConfig(), stream_factory=refused)
    with pytest.raises(ProviderConnectError) as info:
        await provider.open_session(SessionContext("CA-1"))
    assert not info.value.retryable and "access_denied" in str(info.value)
    hanging = FakeNovaService(hang=True)
    provider = NovaSonicProvider("nova", NovaSonicConfig(connect_timeout_s=0.2), stream_factory=hanging)
    with pytest.raises(ProviderConnectError, match=r"no response within 0\.2 s") as info:
        await provider.open_session(SessionContext("CA-2"))
    assert info.value.retryable and hanging.streams[0].closed


async def test_provider_built_from_config_uses_a_registered_memory_stream_factory() -> None:
    assert provider_spec("nova_sonic") is SPEC
    service = FakeNovaService(lambda: FakeNovaModel(reply_ms=200))
    register_stream_factory("nova-test", service)
    try:
        config = SPEC.config_model.model_validate({"type": "nova_sonic", "endpoint_url": "memory://nova-test"})
        provider = build_provider("nova-main", config)
        session = await provider.open_session(SessionContext("CA-mem", voice="amy"))
        await session.close()
        assert service.models[0].voice == "amy" and service.models[0].errors == []
        missing = build_provider("x", NovaSonicConfig(endpoint_url="memory://nothing"))
        with pytest.raises(ProviderConnectError, match="nothing"):
            await missing.open_session(SessionContext("CA-none"))
    finally:
        unregister_stream_factory("nova-test")


def test_boto3_credential_chain_feeds_the_sdk_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import boto3

    from s2s.nova_sonic.sdk_stream import Boto3CredentialsResolver

    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(NovaStreamError, match="no AWS credentials") as info:
        asyncio.run(Boto3CredentialsResolver(boto3.Session()).get_identity(properties={}))
    assert not info.value.retryable
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    identity = asyncio.run(Boto3CredentialsResolver(boto3.Session()).get_identity(properties={}))
    assert (identity.access_key_id, identity.secret_access_key) == ("AKIDEXAMPLE", "secret")


def test_fake_tone_helpers_are_accurate() -> None:
    """Guards the assertions above: the detector must tell 440 Hz from 700 Hz."""
    tone = sine_pcm16(440, 200, 8000)
    assert abs(dominant_hz(tone, 8000) - 440) < 10
    assert abs(dominant_hz(sine_pcm16(700, 200, 8000), 8000) - 440) > 200
    assert np.frombuffer(tone, "<i2").max() > 10000


async def test_announced_rate_is_adopted_and_mulaw_bytes_end_the_session_unplayed() -> None:
    service = FakeNovaService(lambda: FakeNovaModel(reply_hz=1000, reply_ms=400, send_rate=16000))
    async with nova_session(service) as (session, rec):
        await speak(session, sine_pcm16(500, 300, 8000) + bytes(2 * 8000 * 300 // 1000))
        await rec.until(lambda ev: bool([e for e in ev if isinstance(e, TurnDone)]))
        assert session.output_format.sample_rate == 16000  # what the audio contentStart said
        assert len(rec.audio()) == 2 * 16000 * 400 // 1000
        assert abs(dominant_hz(rec.audio(), 16000) - 1000) < 20
        assert not rec.of(ProviderError)

    speech = spoken_mulaw()  # the byte sniffer is tuned on speech, not on tones
    service = FakeNovaService(lambda: FakeNovaModel(reply_hz=1000, reply_ms=400, send_bytes=speech))
    async with nova_session(service) as (session, rec):
        await speak(session, sine_pcm16(500, 300, 8000) + bytes(2 * 8000 * 300 // 1000))
        await rec.until(lambda ev: any(isinstance(e, Closed) for e in ev))
        [error] = rec.of(ProviderError)
        assert error.fatal and error.code == "audio_format_mismatch" and "8bit" in error.message
        assert rec.of(Closed)[0].error
        # Nothing audible went out: at most the utterance's leading silence, silent either way.
        played = np.frombuffer(rec.audio(), dtype="<i2")
        assert not np.any(np.abs(played) >= 64)


async def test_samples_split_across_chunks_are_rejoined() -> None:
    service = FakeNovaService(lambda: FakeNovaModel(reply_hz=1000, reply_ms=400, odd_chunks=True))
    async with nova_session(service) as (session, rec):
        await speak(session, sine_pcm16(500, 300, 8000) + bytes(2 * 8000 * 300 // 1000))
        await rec.until(lambda ev: bool([e for e in ev if isinstance(e, TurnDone)]))
        assert all(len(e.audio) % 2 == 0 for e in rec.of(AudioOut))
        assert rec.audio() == sine_pcm16(1000, 400, 8000)  # byte for byte
