"""Caller speech onset, detected at the phone edge while bot audio is playing.

Providers signal barge-in only while they are generating: Gemini sends ``interrupted`` but
nothing once its turn is complete, even though Twilio may still be playing seconds of that
answer. This detector watches the caller's own audio whenever bot audio is queued or
playing, so the bridge can clear Twilio's buffer without waiting for the provider. It is
deliberately conservative (a sustained level well above line noise), because a false
trigger cuts the bot off; the provider's own signal still works when this one stays quiet.
"""

from __future__ import annotations


class SpeechOnsetDetector:
    def __init__(self, threshold_dbfs: float, min_ms: int) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.min_ms = min_ms
        self._voiced_ms = 0.0

    def feed(self, level_dbfs: float, duration_ms: float) -> bool:
        """One caller frame's level (measured once by the bridge, shared with the recovery
        layer's watchdog). True once per onset: when the caller has been loud for ``min_ms``
        in a row."""
        if level_dbfs > self.threshold_dbfs:
            before = self._voiced_ms
            self._voiced_ms += duration_ms
            return before < self.min_ms <= self._voiced_ms
        self._voiced_ms = 0.0
        return False

    def reset(self) -> None:
        self._voiced_ms = 0.0
