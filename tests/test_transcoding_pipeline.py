"""Format negotiation between Twilio's mu-law and provider PCM: passthrough, codec, resampling, chunking."""

from __future__ import annotations

from math import ceil

import numpy as np
import pytest

from tests.support.audio import dominant_frequency, from_mulaw, from_pcm_bytes, pcm_bytes, to_mulaw, tone
from tests.support.tone_level import tone_level_dbfs
from transcoding.formats import MULAW_8K, PCM16_8K, PCM16_16K, PCM16_24K, AudioFormat
from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw
from transcoding.pipeline import Transcoder, make_transcoder


def chord(freqs: list[float], ms: float, rate: int) -> bytes:
    """PCM16 bytes of equal-level tones (-12 dBFS each)."""
    return pcm_bytes(np.sum([tone(f, ms, rate).astype(np.int32) for f in freqs], axis=0))


def stream(t: Transcoder, data: bytes, chunk: int) -> bytes:
    return b"".join(t.convert(data[i : i + chunk]) for i in range(0, len(data), chunk)) + t.flush()


def test_mulaw_to_mulaw_passes_bytes_through_untouched() -> None:
    t = make_transcoder(MULAW_8K, MULAW_8K)
    frame = bytes(range(256)) * 2
    assert t.passthrough
    assert t.convert(frame) == frame
    assert t.convert(b"\x7f") == b"\x7f"  # odd sizes too: mu-law is one byte per sample
    assert t.flush() == b""
    assert t.delay_ms == 0.0


def test_mulaw_codes_survive_a_round_trip_through_pcm16() -> None:
    codes = bytes(c for c in range(256) if c != 0x7F)  # 0x7F is mu-law's "-0"; it encodes back as 0xFF
    assert pcm16_to_mulaw(mulaw_to_pcm16(codes)) == codes
    assert pcm16_to_mulaw(mulaw_to_pcm16(b"\x7f")) == b"\xff"


def test_pcm_through_mulaw_and_back_keeps_a_tone_with_g711_quality() -> None:
    original = chord([1000], 500, 8000)
    encode, decode = make_transcoder(PCM16_8K, MULAW_8K), make_transcoder(MULAW_8K, PCM16_8K)
    mulaw = stream(encode, original, 320)
    assert len(mulaw) == len(original) // 2
    before = from_pcm_bytes(original).astype(np.float64)
    noise = from_pcm_bytes(stream(decode, mulaw, 160)) - before
    snr_db = 10 * np.log10(np.mean(before**2) / np.mean(noise**2))
    assert snr_db > 30  # G.711 gives ~38 dB on a -12 dBFS tone


def test_caller_mulaw_8k_becomes_pcm_16k_with_the_same_tone_and_duration() -> None:
    caller = to_mulaw(tone(1000, 500, 8000))
    t = make_transcoder(MULAW_8K, PCM16_16K)
    out = stream(t, caller, 160)  # Twilio's 20 ms frames
    assert len(out) == 2 * 2 * len(caller)
    y = from_pcm_bytes(out)
    assert abs(dominant_frequency(y, 16000) - 1000) <= 2
    assert abs(tone_level_dbfs(y, 16000, 1000) - tone_level_dbfs(from_mulaw(caller), 8000, 1000)) < 0.5
    assert 0 < t.delay_ms <= 5


def test_bot_pcm_24k_becomes_mulaw_8k_and_its_out_of_band_content_does_not_alias() -> None:
    bot = chord([1000, 6000], 500, 24000)  # 6 kHz would fold to 2 kHz at 8 kHz
    out = stream(make_transcoder(PCM16_24K, MULAW_8K), bot, 960)
    assert len(out) == len(bot) // 2 // 3
    y = from_mulaw(out)
    assert abs(dominant_frequency(y, 8000) - 1000) <= 2
    assert tone_level_dbfs(y, 8000, 1000) - tone_level_dbfs(y, 8000, 2000) >= 40


@pytest.mark.parametrize(
    ("src", "dst"),
    [(PCM16_24K, MULAW_8K), (PCM16_16K, PCM16_8K), (PCM16_24K, PCM16_16K), (PCM16_8K, MULAW_8K)],
    ids=str,
)
def test_pcm_chunks_that_split_a_sample_give_the_same_audio(src: AudioFormat, dst: AudioFormat) -> None:
    data = chord([440, 2500], 300, src.sample_rate)
    whole = stream(make_transcoder(src, dst), data, len(data))
    t = make_transcoder(src, dst)
    rng = np.random.default_rng(11)
    parts, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, 700)) | 1  # odd byte counts: every other chunk ends mid-sample
        parts.append(t.convert(data[i : i + n]))
        i += n
    parts.append(t.flush())
    chunked = b"".join(parts)
    assert len(chunked) == len(whole)
    if dst.encoding == "pcm16":
        assert np.abs(from_pcm_bytes(chunked).astype(np.int32) - from_pcm_bytes(whole)).max() <= 1
    else:  # a 1 LSB difference can move a mu-law code by one step
        assert np.abs(from_mulaw(chunked).astype(np.int32) - from_mulaw(whole)).max() <= 64


def test_end_of_turn_flush_delivers_the_tail_and_then_starts_clean() -> None:
    turn = chord([800], 200, 24000)
    t = make_transcoder(PCM16_24K, MULAW_8K)
    body = t.convert(turn)
    tail = t.flush()
    assert len(body) + len(tail) == ceil(len(turn) / 2 / 3)
    assert len(tail) == pytest.approx(t.delay_ms * 8, abs=1)
    # The tail is the end of the tone, not silence.
    assert np.abs(from_mulaw(tail)).max() > 4000
    assert t.convert(turn) + t.flush() == body + tail


def test_reset_after_barge_in_drops_the_held_tail() -> None:
    t = make_transcoder(PCM16_24K, MULAW_8K)
    t.convert(chord([800], 200, 24000) + b"\x01")  # ends mid-sample too
    t.reset()
    assert t.flush() == b""
    next_turn = chord([300], 100, 24000)
    assert stream(t, next_turn, 480) == stream(make_transcoder(PCM16_24K, MULAW_8K), next_turn, 480)


def test_same_rate_encoding_change_adds_no_delay() -> None:
    t = make_transcoder(PCM16_8K, MULAW_8K)
    assert not t.passthrough
    assert t.delay_ms == 0.0
    assert len(t.convert(chord([1000], 20, 8000))) == 160


def test_soxr_resampler_can_be_chosen_per_transcoder() -> None:
    t = make_transcoder(MULAW_8K, PCM16_24K, resampler="soxr-hq")
    out = from_pcm_bytes(stream(t, to_mulaw(tone(1000, 500, 8000)), 160))
    assert abs(len(out) - 3 * 4000) <= 3
    assert abs(dominant_frequency(out, 24000) - 1000) <= 2
    with pytest.raises(ValueError, match="unknown resampler kind"):
        make_transcoder(MULAW_8K, PCM16_24K, resampler="nearest")
