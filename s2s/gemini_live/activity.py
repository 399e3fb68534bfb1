"""The caller's turns, found by voicebot when Gemini's automatic activity detection is off.

With ``realtimeInputConfig.automaticActivityDetection.disabled = true`` the service no longer
looks for speech: the client marks each turn with ``realtimeInput.activityStart`` and
``realtimeInput.activityEnd`` (``google.genai.types.ActivityStart`` / ``ActivityEnd``: "This
can only be sent if automatic (i.e. server-side) activity detection is disabled";
https://ai.google.dev/api/live, ``BidiGenerateContentRealtimeInput``), and the model answers
once a turn has ended. A route turns it off to own turn-taking on the phone line: the end of a
turn comes from the same level the bridge measures for its local barge-in detector, with the
route's own threshold and timings.

Pure: levels and audio in, what to send out.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

# Defaults for the timings when the route leaves prefix_padding_ms / silence_duration_ms
# unset: long enough that a click or a breath does not open a turn and a pause between
# words does not close one.
START_MS = 100
END_MS = 500
# Audio kept from before a turn opens, sent right after activityStart: the detector needs
# START_MS of speech before it opens the turn, and the word's onset must not be lost.
PREROLL_EXTRA_MS = 200


class Edge(enum.Enum):
    START = "start"
    END = "end"


@dataclass(slots=True)
class Frame:
    audio: bytes
    ms: float


class CallerTurns:
    """Start and end of the caller's speech from frame levels (dBFS), with the audio to send.

    A turn opens once the caller has been above ``threshold_dbfs`` for ``start_ms`` in a row
    and closes after ``end_ms`` in a row below it. Between turns the audio is not sent (the
    service takes no turn from it); the last ``start_ms + PREROLL_EXTRA_MS`` of it is kept and
    goes out right after ``activityStart``, so the turn holds the speech that opened it."""

    def __init__(self, threshold_dbfs: float, start_ms: int, end_ms: int) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.speaking = False
        self._voiced_ms = 0.0
        self._quiet_ms = 0.0
        self._preroll: deque[Frame] = deque()
        self._preroll_ms = 0.0

    def feed(self, audio: bytes, ms: float, level_dbfs: float) -> tuple[Edge | None, list[bytes]]:
        """One frame of caller audio: the edge it makes (if any) and the audio to send now,
        in order (after ``activityStart`` on a START edge, before ``activityEnd`` on END)."""
        loud = level_dbfs > self.threshold_dbfs
        if self.speaking:
            self._quiet_ms = 0.0 if loud else self._quiet_ms + ms
            if self._quiet_ms >= self.end_ms:
                self.speaking = False
                self._voiced_ms = self._quiet_ms = 0.0
                return Edge.END, [audio]
            return None, [audio]
        self._voiced_ms = self._voiced_ms + ms if loud else 0.0
        self._keep(Frame(audio, ms))
        if self._voiced_ms < self.start_ms:
            return None, []
        self.speaking = True
        self._quiet_ms = 0.0
        held = [frame.audio for frame in self._preroll]
        self._preroll.clear()
        self._preroll_ms = 0.0
        return Edge.START, held

    def _keep(self, frame: Frame) -> None:
        self._preroll.append(frame)
        self._preroll_ms += frame.ms
        limit = self.start_ms + PREROLL_EXTRA_MS
        while self._preroll and self._preroll_ms - self._preroll[0].ms >= limit:
            self._preroll_ms -= self._preroll.popleft().ms
