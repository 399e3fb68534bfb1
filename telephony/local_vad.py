"""Caller speech onset, detected at the phone edge while bot audio is playing.

Providers signal barge-in only while they are generating: Gemini sends ``interrupted`` but
nothing once its turn is complete, even though Twilio may still be playing seconds of that
answer. This detector watches the caller's own audio whenever bot audio is queued or
playing, so the bridge can clear Twilio's buffer without waiting for the provider. It is
deliberately conservative (``min_ms`` of speech in a row), because a false trigger cuts the
bot off; the provider's own signal still works when this one stays quiet. Which frames count
as speech is the route's ``vad`` (:mod:`transcoding.voice_activity`): a level threshold, or
that threshold and a neural detector, which keeps line noise and room tone from cutting the
bot off.
"""

from __future__ import annotations

from transcoding.voice_activity import VoiceActivity


class SpeechOnsetDetector:
    def __init__(self, activity: VoiceActivity, min_ms: int) -> None:
        self.activity = activity
        self.min_ms = min_ms
        self._voiced_ms = 0.0

    def feed(self, pcm16: bytes, level_dbfs: float, duration_ms: float) -> bool:
        """One caller frame (8 kHz PCM16) and its level (measured once by the bridge, shared
        with the recovery layer's watchdog). True once per onset: when the caller has been
        speaking for ``min_ms`` in a row."""
        if self.activity.voiced(pcm16, level_dbfs):
            before = self._voiced_ms
            self._voiced_ms += duration_ms
            return before < self.min_ms <= self._voiced_ms
        self._voiced_ms = 0.0
        return False

    def reset(self) -> None:
        """Bot audio stopped: the caller's sound no longer matters (and a neural detector's
        model goes back to the pool until the next answer plays)."""
        self._voiced_ms = 0.0
        self.activity.reset()
