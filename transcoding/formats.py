"""Audio formats as the bridge and providers name them.

Twilio Media Streams always carry G.711 mu-law at 8 kHz mono. Each provider declares the
format it takes and the one it emits; the bridge builds a :class:`~transcoding.pipeline.Transcoder`
between the two and passes bytes straight through when they are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["mulaw", "pcm16"]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Mono audio: mu-law (1 byte/sample) or 16-bit little-endian PCM, at ``sample_rate`` Hz."""

    encoding: Encoding
    sample_rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.encoding == "mulaw" else 2

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.bytes_per_sample

    def duration_ms(self, nbytes: int) -> float:
        return nbytes * 1000.0 / self.bytes_per_second

    def nbytes(self, ms: float) -> int:
        """Whole-sample byte count for ``ms`` milliseconds."""
        return int(self.sample_rate * ms / 1000.0) * self.bytes_per_sample

    def __str__(self) -> str:
        return f"{self.encoding}@{self.sample_rate}"


MULAW_8K = AudioFormat("mulaw", 8000)
PCM16_8K = AudioFormat("pcm16", 8000)
PCM16_16K = AudioFormat("pcm16", 16000)
PCM16_24K = AudioFormat("pcm16", 24000)
