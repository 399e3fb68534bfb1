"""Caller audio kept aside while a lost session is replaced, and replayed to the next one."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from transcoding.formats import AudioFormat
from transcoding.pipeline import Transcoder, make_transcoder


@dataclass(frozen=True, slots=True)
class Replay:
    """What to send to the new session, in order, and how much was sent or dropped."""

    chunks: list[bytes]
    sent_ms: float
    dropped_ms: float


@dataclass(slots=True)
class KeptAudio:
    """At most ``limit_ms`` of the newest caller audio, each chunk with its time and format
    (the lost session's format; the replacement may take another)."""

    limit_ms: float
    _chunks: deque[tuple[float, AudioFormat, bytes]] = field(default_factory=deque)
    _ms: float = 0.0

    def __bool__(self) -> bool:
        return bool(self._chunks)

    @property
    def duration_ms(self) -> float:
        return self._ms

    def keep(self, now: float, fmt: AudioFormat, audio: bytes) -> None:
        self._chunks.append((now, fmt, audio))
        self._ms += fmt.duration_ms(len(audio))
        while self._chunks and self._ms > self.limit_ms:
            _, old_fmt, old = self._chunks.popleft()
            self._ms -= old_fmt.duration_ms(len(old))

    def take(self, now: float, to: AudioFormat) -> Replay:
        """Empty the buffer: chunks younger than ``limit_ms`` in the new session's format,
        oldest first; older ones are dropped, since a provider answering a sentence the
        caller said long ago would be worse than asking again."""
        chunks: list[bytes] = []
        sent_ms = dropped_ms = 0.0
        converters: dict[AudioFormat, Transcoder] = {}
        while self._chunks:
            at, fmt, audio = self._chunks.popleft()
            duration_ms = fmt.duration_ms(len(audio))
            if now - at > self.limit_ms / 1000.0:
                dropped_ms += duration_ms
                continue
            sent_ms += duration_ms
            if fmt != to:
                if fmt not in converters:
                    converters[fmt] = make_transcoder(fmt, to)
                audio = converters[fmt].convert(audio)
            if audio:
                chunks.append(audio)
        self._ms = 0.0
        return Replay(chunks, sent_ms, dropped_ms)
