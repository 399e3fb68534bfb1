"""Barge-in detected at the phone edge, for providers that stop signalling once their
answer is generated (Gemini after turnComplete) while Twilio is still playing it."""

from __future__ import annotations

import pytest

from telephony.local_vad import SpeechOnsetDetector
from tests.support.audio import level_at, pcm_bytes, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, running_server
from transcoding.levels import frame_dbfs
from transcoding.voice_activity import EnergyActivity


def test_onset_needs_sustained_speech_and_fires_once() -> None:
    detector = SpeechOnsetDetector(EnergyActivity(threshold_dbfs=-30), min_ms=100)
    loud, quiet = pcm_bytes(tone(300, 20, dbfs=-15)), pcm_bytes(tone(300, 20, dbfs=-45))
    assert [detector.feed(loud, frame_dbfs(loud), 20) for _ in range(4)] == [False] * 4
    assert detector.feed(quiet, frame_dbfs(quiet), 20) is False  # a dip restarts the count
    fired = [detector.feed(loud, frame_dbfs(loud), 20) for _ in range(7)]
    assert fired == [False, False, False, False, True, False, False]


# The echo line's own VAD is set deaf here (threshold 0 dBFS), so it never signals speech: the
# only barge-in trigger left is the bridge's detector, as with a provider that went quiet.
DEAF_ECHO = f"""
[server]
local_barge_in_ms = 160

[twilio]
auth_token = "{AUTH_TOKEN}"

[providers.parrot]
type = "echo"
vad_threshold_dbfs = -1
speed = 50

[[routes]]
name = "default"
providers = ["parrot"]
"""


async def test_caller_speech_over_playing_audio_clears_without_the_provider() -> None:
    async with running_server(DEAF_ECHO) as server, server.twilio().call() as call:
        await call.wait_for(lambda: call.call_sid in server.runtime.active)
        bridge = server.runtime.active[call.call_sid]
        await call.wait_for(lambda: bridge.session is not None)
        # Put 3 s of bot audio in Twilio's buffer directly through the bridge's outbound path.
        await server.run_on_server(bridge._send_mulaw(to_mulaw(tone(600, 3000)), "bot-1"))
        await call.pause(500)
        await call.say(to_mulaw(tone(300, 400, dbfs=-12)))
        await call.wait_for(lambda: bool(call.clear_times), timeout=3)
        clear_at = call.clear_times[0]
        await call.pause(300)
        heard = call.heard_pcm()
        assert level_at(heard[int((clear_at + 40) * 8) : int((clear_at + 300) * 8)], 8000, 600) < -50
        barge = bridge.summary.barge_ins[0]
        assert barge.item_id == "bot-1"
        assert barge.heard_ms == pytest.approx(500 + 160, abs=120)
