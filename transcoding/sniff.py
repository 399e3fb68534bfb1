"""Tell 16-bit PCM from an 8-bit encoding by looking at the bytes.

Third-party reports exist of a realtime service sending PCM16 at 24 kHz although mu-law was
requested. Played as mu-law, PCM is loud noise; the reverse plays garbled at the wrong speed.
The audio carries no header, but the two look different:

- In little-endian PCM16 speech the high byte of each sample (every odd byte) sits near 0x00
  or 0xFF, because most samples are well below full scale, while the low byte is spread
  evenly. In a mu-law (or A-law) stream even and odd bytes are the same kind of thing.
- Read as PCM16, real audio is smooth (neighbouring samples are close); mu-law bytes paired
  into int16 values jump about, while decoding them as mu-law gives a smooth signal again.

Only clear cases get a verdict: silence, full-scale noise and pure low tones stay undecided,
so a correct session is never ended on a guess.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from transcoding.mulaw import mulaw_to_pcm16

Sniffed = Literal["pcm16", "8bit"]

MIN_BYTES = 960  # 20 ms of PCM16 at 24 kHz, 120 ms of mu-law: enough samples for the counts


def _near_zero_share(data: np.ndarray) -> float:
    """Share of bytes in 0x00-0x1F or 0xE0-0xFF: the high byte of a sample within +-8192."""
    return float(np.count_nonzero((data < 0x20) | (data >= 0xE0))) / max(1, data.size)


def _roughness(samples: np.ndarray) -> float:
    """Mean step between neighbouring samples relative to their mean level."""
    x = samples.astype(np.float64)
    return float(np.mean(np.abs(np.diff(x))) / (np.mean(np.abs(x)) + 1e-9))


def sniff_encoding(audio: bytes) -> Sniffed | None:
    """``"pcm16"`` or ``"8bit"`` when the bytes clearly say so; None when too short or unclear."""
    if len(audio) < MIN_BYTES:
        return None
    audio = audio[: len(audio) // 2 * 2]
    as_pcm16 = np.frombuffer(audio, dtype="<i2")
    if float(np.mean(np.abs(as_pcm16.astype(np.float64)))) < 64:
        return None  # silence (or near it) in either format
    data = np.frombuffer(audio, dtype=np.uint8)
    even, odd = _near_zero_share(data[0::2]), _near_zero_share(data[1::2])
    if odd - even > 0.5:
        return "pcm16"  # high bytes near zero, low bytes spread: little-endian PCM16
    if abs(odd - even) < 0.1:
        rough16 = _roughness(as_pcm16)
        rough8 = _roughness(np.frombuffer(mulaw_to_pcm16(audio), dtype="<i2"))
        if rough16 > 0.9 and rough8 < 0.8 * rough16:
            return "8bit"  # nonsense as PCM16, a signal as mu-law
    return None
