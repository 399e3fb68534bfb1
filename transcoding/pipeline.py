"""Format negotiation: one stateful converter per call and direction.

The bridge asks for ``make_transcoder(src, dst)`` once per call and direction and feeds it
every chunk. Equal formats pass bytes through untouched (the mu-law fast path for providers
that speak G.711); otherwise audio is decoded to PCM16, resampled by a streaming resampler
that keeps its filter state across chunks, and re-encoded.
"""

from __future__ import annotations

from transcoding.formats import AudioFormat
from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw
from transcoding.resample import StreamingResampler, make_resampler, polyphase_design


class Transcoder:
    """Converts a stream of chunks from ``src`` to ``dst``.

    ``flush()`` emits what the resampler still holds (its filter delay) and resets it; the
    bridge calls it when a bot turn ends so the last few milliseconds are not held back
    until the next turn. ``reset()`` drops that state instead (after a barge-in, where the
    tail must not play)."""

    def __init__(self, src: AudioFormat, dst: AudioFormat, resampler: str = "polyphase") -> None:
        self.src = src
        self.dst = dst
        self.passthrough = src == dst
        self._resampler: StreamingResampler | None = None
        if not self.passthrough and src.sample_rate != dst.sample_rate:
            self._resampler = make_resampler(src.sample_rate, dst.sample_rate, kind=resampler)
        self._odd = b""  # a PCM16 chunk may split a sample; keep the dangling byte

    def convert(self, chunk: bytes) -> bytes:
        if self.passthrough:
            return chunk
        pcm = self._to_pcm(chunk)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return self._from_pcm(pcm)

    def flush(self) -> bytes:
        self._odd = b""
        if self._resampler is None:
            return b""
        return self._from_pcm(self._resampler.flush())

    def reset(self) -> None:
        self._odd = b""
        if self._resampler is not None:
            self._resampler.reset()

    @property
    def delay_ms(self) -> float:
        return 0.0 if self._resampler is None else self._resampler.delay_ms

    def _to_pcm(self, chunk: bytes) -> bytes:
        if self.src.encoding == "mulaw":
            return mulaw_to_pcm16(chunk)
        if self._odd:
            chunk = self._odd + chunk
            self._odd = b""
        if len(chunk) % 2:
            chunk, self._odd = chunk[:-1], chunk[-1:]
        return chunk

    def _from_pcm(self, pcm: bytes) -> bytes:
        return pcm16_to_mulaw(pcm) if self.dst.encoding == "mulaw" else pcm


def make_transcoder(src: AudioFormat, dst: AudioFormat, resampler: str = "polyphase") -> Transcoder:
    return Transcoder(src, dst, resampler)


def prewarm(rates: tuple[int, ...] = (16000, 24000)) -> None:
    """Design the 8 kHz <-> ``rates`` filters now (a few ms each, then cached), so the first
    call on each path does not pay for it inside the event loop."""
    for rate in rates:
        polyphase_design(8000, rate)
        polyphase_design(rate, 8000)
