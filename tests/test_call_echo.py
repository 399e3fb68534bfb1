"""A whole phone call on the built-in echo line, driven as Twilio drives it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.audio import active_segments, dominant_frequency, level_at, to_mulaw, tone
from tests.support.server import echo_line_config, running_server


def echo_config(encoding: str = "mulaw", rate: int = 8000, speed: float = 4.0, chunk_ms: int = 100) -> str:
    parrot = f"""encoding = "{encoding}"
sample_rate = {rate}
speed = {speed}
chunk_ms = {chunk_ms}"""
    return echo_line_config(parrot=parrot)


def loudest_segment(pcm: np.ndarray) -> tuple[float, float]:
    segments = active_segments(pcm, 8000, threshold_dbfs=-35)
    assert segments, "the caller heard nothing"
    return max(segments, key=lambda s: s[1] - s[0])


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [("mulaw", 8000), ("pcm16", 16000), ("pcm16", 24000)],
    ids=["mulaw-passthrough", "pcm16-16k", "pcm16-24k"],
)
async def test_tone_is_heard_back_at_the_same_frequency(encoding: str, rate: int) -> None:
    async with running_server(echo_config(encoding, rate)) as server, server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 800)))
        await call.wait_for(lambda: call.received_media_ms() >= 700, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        await call.pause(100)
        start, end = loudest_segment(call.heard_pcm())
        heard = call.heard_pcm(start + 50, end - 50)
        assert dominant_frequency(heard, 8000) == pytest.approx(1000, abs=15)
        assert end - start == pytest.approx(800, abs=80)
        # The reply starts after the caller's pause (VAD silence 500 ms) plus the line's latency.
        assert 1000 + 500 <= start <= 1000 + 1500


async def test_barge_in_clears_twilio_buffer_and_no_stale_audio_plays() -> None:
    # speed=50: the whole reply reaches Twilio's buffer almost at once, as cloud providers do.
    async with running_server(echo_config(speed=50)) as server, server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(600, 2000)))
        await call.wait_for(lambda: call.received_media_ms() >= 1900, timeout=8)
        reply_start = next(e.t_ms for e in call.log if e.event == "media")
        await call.pause(600)  # let the caller hear ~0.6 s of the 2 s reply, then talk over it
        await call.say(to_mulaw(tone(400, 600)))
        await call.wait_for(lambda: bool(call.clear_times), timeout=3)
        clear_at = call.clear_times[0]
        await call.pause(300)

        # The bot's 600 Hz reply stopped at the clear: no stale audio afterwards.
        heard = call.heard_pcm()
        after_clear = heard[int((clear_at + 40) * 8) : int((clear_at + 300) * 8)]
        assert level_at(after_clear, 8000, 600) < -50
        played = call.heard_pcm(reply_start, clear_at)
        assert dominant_frequency(played, 8000) == pytest.approx(600, abs=15)

        # What the caller actually heard of the reply, measured on the audio itself...
        segments = [s for s in active_segments(heard, 8000, -35) if s[0] >= reply_start - 20]
        heard_ms = segments[0][1] - segments[0][0]
        assert 400 < heard_ms < 1900
        # ...is what the provider was told, within one mark interval (40 ms chunks) plus a frame.
        bridge = server.runtime.active[call.call_sid]
        barge = bridge.summary.barge_ins[0]
        assert abs(barge.heard_ms - heard_ms) <= 40 + 20
        assert barge.sent_ms == pytest.approx(2000, abs=60)
        assert barge.latency_ms < 50


async def test_caller_hangup_tears_the_call_down() -> None:
    async with running_server(echo_config()) as server:
        async with server.twilio().call() as call:
            await call.say(to_mulaw(tone(500, 300)))
            assert call.call_sid in server.runtime.active
        for _ in range(100):
            if not server.runtime.active:
                break
            await call.pause(20)
        assert not server.runtime.active
