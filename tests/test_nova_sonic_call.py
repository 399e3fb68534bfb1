"""Whole phone calls on a Nova Sonic route: the signing Twilio simulator calls the running
server, whose nova_sonic provider is built from the TOML config.

Two seams, both selected by ``endpoint_url`` in the config:
* ``https://localhost:PORT`` — the production path: aws-sdk-bedrock-runtime over awscrt
  HTTP/2 to the loopback event-stream fake (tests/fakes/nova_sonic_h2.py);
* ``memory://NAME`` — the in-process fake stream registered with
  ``register_stream_factory`` (cheaper; used where the wire adds nothing).

Nova runs at 8 kHz both ways, so the bridge only converts mu-law <-> PCM16: the caller's tone
must reach the model at 8 kHz with its length and pitch intact, and the 8 kHz reply must reach
the caller unchanged."""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Callable, Iterator

import numpy as np
import pytest

from s2s.nova_sonic.session import greeting_request
from s2s.nova_sonic.transport import register_stream_factory, unregister_stream_factory
from tests.fakes.nova_sonic_fake import FakeNovaModel, FakeNovaService, ToolPlan
from tests.fakes.nova_sonic_h2 import NovaH2Fake
from tests.support.audio import active_segments, dominant_frequency, longest, to_mulaw, tone
from tests.support.barge_in import assert_cut_at_the_clear, talk_over_the_answer
from tests.support.server import AUTH_TOKEN, RunningServer, running_server
from tests.test_nova_sonic_sdk import tls  # noqa: F401 - fixture: trusted throwaway CA + dummy AWS keys
from tests.test_openai_realtime_protocol import spoken_mulaw


def nova_config(endpoint_url: str, extra: str = "", route_extra: str = "") -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.nova]
type = "nova_sonic"
region = "us-east-1"
endpoint_url = "{endpoint_url}"
voice = "tiffany"
connect_timeout_s = 10
{extra}

[[routes]]
name = "default"
providers = ["nova"]
instructions = "You are the Acme line."
{route_extra}
"""


@pytest.fixture
async def h2(tls: ssl.SSLContext) -> AsyncIterator[NovaH2Fake]:  # noqa: F811
    async with NovaH2Fake(tls, make_model=lambda: FakeNovaModel(reply_hz=1000, reply_ms=800)) as fake:
        yield fake


@pytest.mark.timeout(60)
async def test_tone_reaches_nova_at_8k_through_the_sdk_and_its_8k_reply_reaches_the_caller(h2: NovaH2Fake) -> None:
    async with running_server(nova_config(h2.url)) as server, server.twilio().call() as call:
        # The first stream of a process also builds the SDK client and resolves credentials;
        # speak once it is up, so the bridge's pre-session buffer policy is not under test here.
        await call.wait_for(lambda: bool(h2.models) and h2.models[0].input_rate == 8000, timeout=10)
        await call.pause(200)
        await call.say(to_mulaw(tone(440, 600)))
        await call.wait_for(lambda: call.received_media_ms() >= 790, timeout=10)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        await call.pause(100)

        model = h2.models[0]
        assert model.errors == []
        assert (model.input_rate, model.output_rate, model.voice) == (8000, 8000, "tiffany")
        assert model.system_prompt == "You are the Acme line."
        received = np.frombuffer(bytes(model.caller_audio), dtype="<i2")
        start, end = longest(active_segments(received, 8000, threshold_dbfs=-35))
        # Declared at the wrong rate, the 600 ms tone would be heard as 300/1200 ms at 880/220 Hz.
        assert end - start == pytest.approx(600, abs=40)
        assert dominant_frequency(received[int((start + 20) * 8) : int((end - 20) * 8)], 8000) == pytest.approx(
            440, abs=5
        )

        start, end = longest(active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35))
        assert end - start == pytest.approx(800, abs=60)
        assert dominant_frequency(call.heard_pcm(start + 40, end - 40), 8000) == pytest.approx(1000, abs=10)
        # The answer follows the end of the caller's tone (fake endpointing: 240 ms of silence),
        # both measured on the stream clock in whole 20 ms frames: where the tone really went
        # out, not when say() was called (a late sender tick puts it up to a frame earlier).
        _, said_end = longest(active_segments(call.caller_pcm(), 8000, threshold_dbfs=-35))
        assert said_end + 240 <= start <= said_end + 1000

        summary = server.runtime.active[call.call_sid].summary
        assert [(t.role, t.text) for t in summary.transcript] == [
            ("caller", "tone 440 Hz"),
            ("bot", "You said tone 440 Hz."),
        ]


@pytest.fixture
def memory_nova() -> Iterator[FakeNovaService]:
    service = FakeNovaService(lambda: FakeNovaModel(reply_ms=2000, speed=4.0, reply_freqs=(600.0, 900.0)))
    register_stream_factory("call-tests", service)
    yield service
    unregister_stream_factory("call-tests")
    service.shutdown()


@pytest.fixture
async def memory_server(memory_nova: FakeNovaService) -> AsyncIterator[RunningServer]:
    async with running_server(nova_config("memory://call-tests")) as running:
        yield running


@pytest.mark.timeout(60)
async def test_barge_in_clears_twilio_and_the_interrupted_answer_never_plays_again(
    memory_nova: FakeNovaService, memory_server: RunningServer
) -> None:
    async with memory_server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(440, 500)))
        # Nova streams ahead of playback: the whole 2 s answer sits in Twilio's buffer.
        reply_start, clear_at = await talk_over_the_answer(
            call, answered=lambda: memory_nova.wait_for(lambda: memory_nova.models[0].answers == 2, timeout=5)
        )
        assert_cut_at_the_clear(call, reply_start, clear_at)
        model = memory_nova.models[0]
        # The clear followed the caller's barge-in promptly (server-side detection in the fake).
        assert model.interruptions == 1 and model.errors == []
        bridge = memory_server.runtime.active[call.call_sid]
        assert len(bridge.summary.barge_ins) == 1


@contextlib.asynccontextmanager
async def memory_route(
    make_model: Callable[[], FakeNovaModel], route_extra: str = "", extra: str = ""
) -> AsyncIterator[tuple[FakeNovaService, RunningServer]]:
    service = FakeNovaService(make_model)
    register_stream_factory("call-tests-2", service)
    try:
        config = nova_config("memory://call-tests-2", extra=extra, route_extra=route_extra)
        async with running_server(config) as server:
            yield service, server
    finally:
        unregister_stream_factory("call-tests-2")
        service.shutdown()


@pytest.mark.timeout(60)
async def test_route_greeting_makes_nova2_speak_first_and_dtmf_is_a_text_turn() -> None:
    model = lambda: FakeNovaModel(reply_ms=400, speed=4.0, reply_freqs=(620.0, 820.0))  # noqa: E731
    async with (
        memory_route(model, 'greeting = "Thanks for calling Acme."') as (service, server),
        server.twilio().call() as call,
    ):
        # The caller says nothing: the greeting is heard anyway.
        await call.wait_for(lambda: call.received_media_ms() >= 390, timeout=5)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        nova = service.models[0]
        assert nova.user_texts == [greeting_request("Thanks for calling Acme.")]
        assert np.abs(np.frombuffer(bytes(nova.caller_audio), "<i2")).max() < 100  # the line was silent
        start, end = longest(active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35))
        assert end - start == pytest.approx(400, abs=40)
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(620, abs=5)

        await call.press("5")
        await call.wait_for(lambda: call.received_media_ms() >= 790, timeout=5)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        assert len(nova.user_texts) == 2 and "5" in nova.user_texts[1]
        later = [s for s in active_segments(call.heard_pcm(), 8000, -35) if s[0] > end]
        start, end = longest(later)
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(820, abs=5)
        assert nova.errors == []


@pytest.mark.timeout(60)
async def test_tool_call_goes_to_the_dispatcher_and_its_result_back_to_nova() -> None:
    model = lambda: FakeNovaModel(reply_ms=400, reply_hz=500, tool=ToolPlan("get_time", {"tz": "UTC"}))  # noqa: E731
    async with memory_route(model) as (service, server), server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: call.received_media_ms() >= 390, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        nova = service.models[0]
        [(tool_use_id, output)] = nova.tool_results
        # This route has no tools, so the dispatcher answers with an error the model can voice.
        assert tool_use_id == "tooluse-1" and json.loads(output)["error"].startswith("no tool named 'get_time'")
        start, end = longest(active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35))
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(500, abs=5)
        summary = server.runtime.active[call.call_sid].summary
        assert summary.transcript[-1].text.startswith("The tool said")
        assert nova.errors == []


@pytest.mark.timeout(60)
async def test_stream_renewal_between_turns_replays_history_and_the_call_goes_on() -> None:
    """A short stream limit: the session announces it, the rotation policy opens the next
    stream in the background with the conversation as Nova history, swaps between turns, and
    the caller's next utterance is answered by the new stream with nothing lost or clipped."""
    made: list[FakeNovaModel] = []

    def model() -> FakeNovaModel:  # the first stream answers at 600 Hz, every later one at 900 Hz
        made.append(FakeNovaModel(reply_ms=600, speed=4.0, reply_hz=900.0 if made else 600.0, limit_s=6.0))
        return made[-1]

    limits = "renew_after_s = 1.5\nstream_limit_s = 6.0"
    async with memory_route(model, extra=limits) as (service, server), server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(440, 500)))
        await call.wait_for(lambda: call.received_media_ms() >= 590, timeout=8)
        await service.wait_for(lambda: len(service.models) >= 2, timeout=5)  # renewal opened
        first, second = service.models[:2]
        await service.wait_for(lambda: first.ended, timeout=5)  # old stream closed: the swap happened
        await call.pause(300)
        await call.say(to_mulaw(tone(700, 600)))
        await call.wait_for(lambda: call.received_media_ms() >= 1190, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)

        assert second.history == [("USER", "tone 440 Hz"), ("ASSISTANT", "You said tone 440 Hz.")]
        assert second.user_texts == [] and second.errors == [] and first.errors == []
        assert (first.transcripts, second.transcripts) == (["tone 440 Hz"], ["tone 700 Hz"])
        # Nothing of the second utterance was lost at the handover: all 600 ms reached stream 2.
        received = np.frombuffer(bytes(second.caller_audio), dtype="<i2")
        start, end = longest(active_segments(received, 8000, threshold_dbfs=-35))
        assert end - start == pytest.approx(600, abs=40)

        heard = active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35)
        assert len(heard) == 2
        for (start, end), freq in zip(heard, (600, 900), strict=True):
            assert end - start == pytest.approx(600, abs=40)
            assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(freq, abs=5)

        session = server.runtime.active[call.call_sid].session
        assert session is not None and session.recoveries == 0
        # (The second stream expires 1.5 s after it opened too, so a third may be opening now.)
        assert [name for name, _ in session.opened][:2] == ["nova", "nova"]
        assert [t.role for t in session.opened[1][1].history] == ["caller", "bot"]
        summary = server.runtime.active[call.call_sid].summary
        assert [t.text for t in summary.transcript] == [
            "tone 440 Hz",
            "You said tone 440 Hz.",
            "tone 700 Hz",
            "You said tone 700 Hz.",
        ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["send_rate", "odd_chunks"])
async def test_output_format_nova_announces_is_adopted_and_split_samples_are_rejoined(fault: str) -> None:
    """Nova says its audio block is 24 kHz although 8 kHz was asked for (adopted: the bridge
    resamples from 24 kHz), or cuts its chunks mid-sample (rejoined): either way the caller
    hears the answer at its pitch and length, never noise."""

    def model() -> FakeNovaModel:
        fake = FakeNovaModel(reply_hz=1000, reply_ms=800)
        if fault == "send_rate":
            fake.send_rate = 24000
        else:
            fake.odd_chunks = True
        return fake

    async with memory_route(model) as (service, server), server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(440, 400)))
        await call.wait_for(lambda: call.received_media_ms() >= 790, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        start, end = longest(active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35))
        # Played at the declared 8 kHz, 24 kHz audio would last 2.4 s at 333 Hz.
        assert end - start == pytest.approx(800, abs=60)
        assert dominant_frequency(call.heard_pcm(start + 40, end - 40), 8000) == pytest.approx(1000, abs=10)
        # Nothing but the tone: a split sample played as is would be broadband noise.
        pcm = call.heard_pcm(start + 40, end - 40).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size))) ** 2
        freqs = np.fft.rfftfreq(pcm.size, 1 / 8000)
        assert spectrum[np.abs(freqs - 1000) < 60].sum() / spectrum.sum() > 0.95
        assert service.models[0].errors == []
        assert server.runtime.active[call.call_sid].summary.outcome == "in-progress"


@pytest.mark.timeout(60)
async def test_mulaw_bytes_sent_as_16_bit_pcm_end_the_session_loudly_and_never_play() -> None:
    """Nova's audio block says 16-bit LPCM but the bytes are mu-law speech: played, that is
    loud noise. The session ends on the first chunk and the caller hears none of it."""
    speech = spoken_mulaw()
    model = lambda: FakeNovaModel(reply_hz=1000, reply_ms=800, send_bytes=speech)  # noqa: E731
    async with memory_route(model) as (service, server), server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(440, 400)))
        await call.wait_for(lambda: bool(service.models) and service.models[0].answers >= 1, timeout=8)
        # Recovery opens a new stream, which answers the same way: give its audio time to arrive.
        await call.wait_for(lambda: len(service.models) >= 2, timeout=8)
        await call.pause(500)
        assert not active_segments(call.heard_pcm(), 8000, threshold_dbfs=-45)  # nothing played
        assert service.models[0].audio_out_bytes > 0  # it was sent, and refused
