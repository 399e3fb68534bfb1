"""Tell 16-bit PCM from an 8-bit encoding by looking at the bytes.

Third-party reports exist of a realtime service sending PCM16 at 24 kHz although mu-law was
requested. Played as mu-law, PCM is loud noise; the reverse plays at a third of the speed. The
declared format cannot be trusted blindly, and the audio carries no header, but the two look
different: in little-endian PCM16 speech the high byte of each sample (every odd byte) sits
near 0x00 or 0xFF, because most samples are small, while the low byte is spread evenly. In a
mu-law (or A-law) stream, even and odd bytes are the same kind of thing and share one spread.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Sniffed = Literal["pcm16", "8bit"]

MIN_BYTES = 960  # 20 ms of PCM16 at 24 kHz, 120 ms of mu-law: enough samples for the counts


def _near_zero_share(data: np.ndarray) -> float:
    """Share of bytes in 0x00-0x0F or 0xF0-0xFF: small positive or negative high bytes."""
    return float(np.count_nonzero((data < 0x10) | (data >= 0xF0))) / max(1, data.size)


def sniff_encoding(audio: bytes) -> Sniffed | None:
    """``"pcm16"`` or ``"8bit"`` when the bytes clearly say so; None when too short or unclear
    (silence in either format, or full-scale noise)."""
    if len(audio) < MIN_BYTES:
        return None
    data = np.frombuffer(audio[: len(audio) // 2 * 2], dtype=np.uint8)
    even, odd = _near_zero_share(data[0::2]), _near_zero_share(data[1::2])
    if odd - even > 0.5:
        return "pcm16"  # high bytes near zero, low bytes spread: little-endian PCM16
    if abs(odd - even) < 0.1 and np.unique(data).size > 16:
        return "8bit"
    return None
