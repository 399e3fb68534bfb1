"""The echo line's "model", sans I/O: a VAD (energy, or a neural one: ``vad``, see
:mod:`transcoding.voice_activity`) that turns caller audio into utterances and replies that
repeat them.

It behaves like a cloud S2S provider where the bridge can tell: speech-started fires when
the caller starts talking, including over the bot (barge-in), a reply starts after the
caller pauses, and a reply is abandoned when the caller talks over it. That lets the whole
call path be exercised with no network.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2s.events import ProviderEvent, SpeechStarted, SpeechStopped, TurnDone
from transcoding.formats import AudioFormat
from transcoding.levels import frame_dbfs
from transcoding.mulaw import mulaw_to_pcm16
from transcoding.voice_activity import VadKind, voice_activity

FRAME_MS = 20


@dataclass(frozen=True, slots=True)
class VadSettings:
    threshold_dbfs: float = -38.0
    start_ms: int = 60
    silence_ms: int = 500
    max_utterance_ms: int = 15_000
    kind: VadKind = "energy"


class EchoEngine:
    """Feed caller audio, get events; finished utterances wait in :meth:`take_reply`."""

    def __init__(self, fmt: AudioFormat, vad: VadSettings) -> None:
        self.fmt = fmt
        self.vad = vad
        self._frame_bytes = fmt.nbytes(FRAME_MS)
        self._activity = voice_activity(vad.kind, fmt.sample_rate, vad.threshold_dbfs)
        self._partial = b""
        self._speaking = False
        self._voiced_ms = 0
        self._silent_ms = 0
        self._utterance = bytearray()
        self._lead_in: list[bytes] = []
        self._replies: list[bytes] = []
        self.replying_item: str | None = None
        self._items = 0

    def feed(self, audio: bytes) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        data = self._partial + audio
        n = len(data) - len(data) % self._frame_bytes
        self._partial = data[n:]
        for start in range(0, n, self._frame_bytes):
            events.extend(self._frame(data[start : start + self._frame_bytes]))
        return events

    def _frame(self, frame: bytes) -> list[ProviderEvent]:
        pcm = mulaw_to_pcm16(frame) if self.fmt.encoding == "mulaw" else frame
        voiced = self._activity.voiced(pcm, frame_dbfs(pcm))
        if not self._speaking:
            if voiced:
                self._voiced_ms += FRAME_MS
                self._lead_in.append(frame)
            else:
                self._voiced_ms = 0
                self._lead_in.clear()
            if self._voiced_ms < self.vad.start_ms:
                return []
            self._speaking = True
            self._silent_ms = 0
            self._utterance = bytearray(b"".join(self._lead_in))
            self._lead_in.clear()
            events: list[ProviderEvent] = [SpeechStarted(self.replying_item)]
            if self.replying_item is not None:  # caller talks over the bot: abandon the reply
                events.append(TurnDone(self.replying_item, interrupted=True))
                self.replying_item = None
            return events
        self._utterance += frame
        self._silent_ms = 0 if voiced else self._silent_ms + FRAME_MS
        too_long = self.fmt.duration_ms(len(self._utterance)) >= self.vad.max_utterance_ms
        if self._silent_ms < self.vad.silence_ms and not too_long:
            return []
        self._speaking = False
        self._voiced_ms = 0
        keep = len(self._utterance) - self.fmt.nbytes(self._silent_ms)
        self._replies.append(bytes(self._utterance[:keep]))
        self._utterance = bytearray()
        return [SpeechStopped()]

    def close(self) -> None:
        """The line hung up: a neural VAD's model goes back to the pool."""
        self._activity.reset()

    @property
    def has_reply(self) -> bool:
        return bool(self._replies)

    def take_reply(self) -> tuple[str, bytes] | None:
        """The next utterance to echo, with a fresh item id; None when there is none."""
        if not self._replies:
            return None
        self._items += 1
        self.replying_item = f"echo-{self._items}"
        return self.replying_item, self._replies.pop(0)

    def reply_finished(self, item_id: str) -> bool:
        """Mark the reply done unless it was abandoned meanwhile; True if it was current."""
        if self.replying_item != item_id:
            return False
        self.replying_item = None
        return True
