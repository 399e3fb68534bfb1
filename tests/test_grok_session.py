"""Grok Voice Agent sessions against the Grok dialect of the realtime fake, over websockets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from s2s.events import AudioOut, Closed, ProviderError, Transcript, TurnDone
from s2s.grok import SPEC, GrokConfig, GrokProvider
from s2s.provider import ProviderConnectError, SessionContext
from s2s.registry import provider_spec
from s2s.tools import ToolSpec
from tests.fakes.grok_voice_fake import fake_grok
from tests.fakes.openai_realtime_fake import FakeRealtimeServer
from tests.support.session_events import EventLog
from transcoding.formats import MULAW_8K
from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw


def provider_for(fake: FakeRealtimeServer, **overrides: Any) -> GrokProvider:
    config = GrokConfig.model_validate(
        {"type": "grok", "api_key": "test-key", "base_url": fake.base_url, "connect_timeout_s": 2.0} | overrides
    )
    return GrokProvider("grok", config)


def caller_tone(freq: float = 1000.0, ms: int = 400) -> bytes:
    t = np.arange(8 * ms) / 8000
    pcm = (10000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes() + bytes(2 * 8 * 400)
    return pcm16_to_mulaw(pcm)


async def speak(session: Any, audio: bytes) -> None:
    for i in range(0, len(audio), 160):
        await session.send_audio(audio[i : i + 160])


def test_spec_is_registered_for_the_config_type() -> None:
    assert provider_spec("grok") is SPEC and SPEC.config_model is GrokConfig


async def test_handshake_uses_grok_layout_after_conversation_created() -> None:
    async with fake_grok() as fake:
        tools = (ToolSpec("lookup", "Look up", {"type": "object", "properties": {}}),)
        provider = provider_for(fake, turn_detection={"silence_duration_ms": 700})
        session = await provider.open_session(SessionContext("CG1", instructions="Hi.", voice="rex", tools=tools))
        conn = fake.last
        assert conn.headers["authorization"] == "Bearer test-key"
        assert conn.path == "/v1/realtime?model=grok-voice-latest"
        # conversation.created and session.created both arrive; one session.update answers them.
        assert len(conn.session_updates) == 1
        assert conn.session_updates[0] == {
            "instructions": "Hi.",
            "voice": "rex",
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
            "audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}},
            "tools": [
                {"type": "function", "name": "lookup", "description": "Look up", "parameters": tools[0].parameters}
            ],
        }
        assert not conn.errors_sent
        assert session.input_format == MULAW_8K
        await session.close()


async def test_tone_round_trip_with_pings_and_grok_partial_transcripts() -> None:
    async with fake_grok(tone_hz=500.0, response_ms=600, ping_interval_s=0.02) as fake:
        session = await provider_for(fake).open_session(SessionContext("CG2"))
        log = EventLog(session)
        audio = caller_tone()
        await speak(session, audio)
        done = await log.wait_for(lambda e: isinstance(e, TurnDone))
        assert bytes(fake.last.audio_in) == audio
        caller = [e for e in log.of(Transcript) if e.role == "caller"]
        assert [(e.text, e.final) for e in caller] == [
            ("caller", False),  # ...transcription.updated
            ("caller tone", False),  # .completed with status in_progress
            ("caller tone 1000 hertz", True),
        ]
        out = b"".join(e.audio for e in log.of(AudioOut) if e.item_id == done.item_id)
        spectrum = np.abs(np.fft.rfft(np.frombuffer(mulaw_to_pcm16(out), dtype="<i2") * np.hanning(len(out))))
        assert (np.argmax(spectrum[1:]) + 1) * 8000 / len(out) == pytest.approx(500.0, abs=10)
        assert not log.of(ProviderError)  # pings are tolerated silently
        await session.close()


async def test_truncate_is_best_effort_an_error_reply_is_ignored() -> None:
    async with fake_grok(truncate_supported=False, response_ms=320) as fake:
        session = await provider_for(fake).open_session(SessionContext("CG3"))
        log = EventLog(session)
        await speak(session, caller_tone())
        done = await log.wait_for(lambda e: isinstance(e, TurnDone))
        await session.truncate(done.item_id, 5000)
        await fake.wait_for(lambda: fake.last.errors_sent)
        t = fake.last.truncates[0]
        assert (t.audio_end_ms, t.accepted) == (320, False)  # sent, capped at the audio produced
        await speak(session, caller_tone(700.0))  # the session carries on
        await log.wait_for(lambda e: isinstance(e, TurnDone) and e.item_id != done.item_id)
        assert not log.of(ProviderError) and not log.of(Closed)
        await session.close()


async def test_supported_truncate_is_acknowledged() -> None:
    async with fake_grok(response_ms=300) as fake:
        session = await provider_for(fake).open_session(SessionContext("CG4"))
        log = EventLog(session)
        await speak(session, caller_tone())
        done = await log.wait_for(lambda e: isinstance(e, TurnDone))
        await session.truncate(done.item_id, 120)
        await fake.wait_for(lambda: fake.last.truncates)
        assert (fake.last.truncates[0].audio_end_ms, fake.last.truncates[0].accepted) == (120, True)
        await session.close()


async def test_refused_and_silent_servers_raise_connect_errors() -> None:
    async with fake_grok(refuse_status=401) as fake:
        with pytest.raises(ProviderConnectError, match="HTTP 401") as err:
            await provider_for(fake).open_session(SessionContext("CG5"))
        assert not err.value.retryable
    async with FakeRealtimeServer(silent_tcp=True) as fake:
        with pytest.raises(ProviderConnectError, match=r"no session\.updated"):
            await provider_for(fake, connect_timeout_s=0.4).open_session(SessionContext("CG6"))


async def test_drop_mid_call_gives_closed_error() -> None:
    async with fake_grok(close_after_chunks=2, speedup=1.0) as fake:
        session = await provider_for(fake).open_session(SessionContext("CG7"))
        log = EventLog(session)
        await speak(session, caller_tone())
        await log.ended(timeout=3)
        assert isinstance(log.events[-1], Closed) and log.events[-1].error


async def test_a_grok_tool_call_runs_once_and_its_result_gets_the_answer() -> None:
    """Grok's shape: the call completes with function_call_arguments.done and an item without a
    status; the tool runs once and one response.create follows its output."""
    import json

    from s2s.events import ToolCall
    from tests.fakes.openai_realtime_fake import ToolCue

    async with fake_grok(tool_call=ToolCue("get_time", {"zone": "UTC"}), response_ms=200) as fake:
        tools = (ToolSpec("get_time", "Current time", {"type": "object", "properties": {"zone": {"type": "string"}}}),)
        session = await provider_for(fake).open_session(SessionContext("CG9", tools=tools))
        log = EventLog(session)
        await session.send_text("what time is it?")
        call = await log.wait_for(lambda e: isinstance(e, ToolCall))
        assert (call.name, call.arguments) == ("get_time", {"zone": "UTC"})
        await log.wait_for(lambda e: isinstance(e, TurnDone))
        assert len([e for e in log.events if isinstance(e, ToolCall)]) == 1
        await session.send_tool_result(call.call_id, json.dumps({"time": "12:00"}))
        bot = await log.wait_for(lambda e: isinstance(e, Transcript) and e.role == "bot" and e.final)
        assert bot.text == 'the tool said {"time": "12:00"}'
        types = fake.last.types()
        after_output = types[types.index("conversation.item.create", types.index("response.create") + 1) :]
        assert after_output.count("response.create") == 1
        await session.close()
