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


class EncodingCheck:
    """Judges the first audio of a stream against the encoding it was declared in.

    Audio is fed as it arrives and judged, on what has arrived so far, before it is passed on,
    so a stream of the wrong kind is caught on its first chunk and never played. Checking stops
    at the first clear verdict, or after ``max_windows`` windows of ``window_bytes`` that all
    stayed unclear (silence, pure tones): a correct stream is never ended on a guess.

    An unclear sample is judged again once it has doubled (in the first window) or once the
    next window is full, not on every chunk: a tone or silence stays unclear for all windows,
    and judging it per 40 ms chunk was ~6 % of the server's CPU under load (``bench load``)."""

    def __init__(self, expected: Sniffed, *, window_bytes: int = 4800, max_windows: int = 8) -> None:
        self.expected = expected
        self.window_bytes = window_bytes
        self.max_windows = max_windows
        self.done = False
        self._sample = bytearray()
        self._windows = 0
        self._judge_at = min(MIN_BYTES, window_bytes)  # sample size at which it is judged next

    def feed(self, audio: bytes) -> Sniffed | None:
        """The encoding the audio clearly has when it is *not* the expected one; else None."""
        if self.done:
            return None
        self._sample += audio
        if len(self._sample) < self._judge_at:
            return None
        verdict = sniff_encoding(bytes(self._sample[: self.window_bytes]))
        while verdict is None and len(self._sample) >= self.window_bytes:
            del self._sample[: self.window_bytes]  # an unclear window: judge the next one
            self._windows += 1
            if self._windows >= self.max_windows:
                self._finish()
                return None
            if len(self._sample) >= self.window_bytes:
                verdict = sniff_encoding(bytes(self._sample[: self.window_bytes]))
        if verdict is None:
            self._judge_at = min(2 * len(self._sample), self.window_bytes) if self._windows == 0 else self.window_bytes
            return None
        self._finish()
        return None if verdict == self.expected else verdict

    def _finish(self) -> None:
        self.done = True
        self._sample.clear()


def implausible_pcm16(audio: bytes) -> bool:
    """Whether ``audio`` read as PCM16 has more than 5 % of its samples beyond half of full
    scale: no voice does (that is clipping), but 8-bit codes paired into samples do (mu-law's
    quiet codes 0xFF, 0x7E read as 0x7EFF). Such audio is worth holding back until the
    sniffer has a verdict."""
    samples = np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2")
    return samples.size > 0 and float(np.mean(np.abs(samples.astype(np.int32)) > 16384)) > 0.05
