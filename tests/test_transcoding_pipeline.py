"""Format negotiation between Twilio's mu-law and provider PCM: passthrough, codec, resampling, chunking."""

from __future__ import annotations

from math import ceil

import numpy as np
import numpy.typing as npt
import pytest

from transcoding.formats import MULAW_8K, PCM16_8K, PCM16_16K, PCM16_24K, AudioFormat
from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw
from transcoding.pipeline import Transcoder, make_transcoder

Floats = npt.NDArray[np.float64]


def tone(freqs: list[float], seconds: float, rate: int, amplitude: float = 8000.0) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    wave = sum(amplitude * np.sin(2 * np.pi * f * t) for f in freqs)
    return np.rint(wave).astype("<i2").tobytes()


def pcm(data: bytes) -> Floats:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def level_db(samples: Floats, rate: int, freq: float) -> float:
    """Amplitude (dB re 1 LSB) at ``freq`` by a Hann-windowed projection over the steady part."""
    samples = samples[rate // 50 : -rate // 50]
    n = np.arange(len(samples))
    window = np.hanning(len(samples))
    projection = np.sum(window * samples * np.exp(-2j * np.pi * freq * n / rate))
    return float(20 * np.log10(2 * abs(projection) / window.sum() + 1e-9))


def dominant_frequency(samples: Floats, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


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
    original = tone([1000], 0.5, 8000)
    encode, decode = make_transcoder(PCM16_8K, MULAW_8K), make_transcoder(MULAW_8K, PCM16_8K)
    mulaw = stream(encode, original, 320)
    assert len(mulaw) == len(original) // 2
    back = pcm(stream(decode, mulaw, 160))
    noise = back - pcm(original)
    snr_db = 10 * np.log10(np.mean(pcm(original) ** 2) / np.mean(noise**2))
    assert snr_db > 30  # G.711 gives ~38 dB on a -12 dBFS tone


def test_caller_mulaw_8k_becomes_pcm_16k_with_the_same_tone_and_duration() -> None:
    caller = pcm16_to_mulaw(tone([1000], 0.5, 8000))
    t = make_transcoder(MULAW_8K, PCM16_16K)
    out = stream(t, caller, 160)  # Twilio's 20 ms frames
    assert len(out) == 2 * 2 * len(caller)
    y = pcm(out)
    assert abs(dominant_frequency(y, 16000) - 1000) <= 2
    assert abs(level_db(y, 16000, 1000) - 20 * np.log10(8000)) < 0.5
    assert 0 < t.delay_ms <= 5


def test_bot_pcm_24k_becomes_mulaw_8k_and_its_out_of_band_content_does_not_alias() -> None:
    bot = tone([1000, 6000], 0.5, 24000)  # 6 kHz would fold to 2 kHz at 8 kHz
    out = stream(make_transcoder(PCM16_24K, MULAW_8K), bot, 960)
    assert len(out) == len(bot) // 2 // 3
    y = pcm(mulaw_to_pcm16(out))
    assert abs(dominant_frequency(y, 8000) - 1000) <= 2
    assert level_db(y, 8000, 1000) - level_db(y, 8000, 2000) >= 40


@pytest.mark.parametrize(
    ("src", "dst"),
    [(PCM16_24K, MULAW_8K), (PCM16_16K, PCM16_8K), (PCM16_24K, PCM16_16K), (PCM16_8K, MULAW_8K)],
    ids=str,
)
def test_pcm_chunks_that_split_a_sample_give_the_same_audio(src: AudioFormat, dst: AudioFormat) -> None:
    data = tone([440, 2500], 0.3, src.sample_rate)
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
        assert np.abs(pcm(chunked) - pcm(whole)).max() <= 1
    else:  # a 1 LSB difference can move a mu-law code by one step
        assert np.abs(pcm(mulaw_to_pcm16(chunked)) - pcm(mulaw_to_pcm16(whole))).max() <= 64


def test_end_of_turn_flush_delivers_the_tail_and_then_starts_clean() -> None:
    turn = tone([800], 0.2, 24000)
    t = make_transcoder(PCM16_24K, MULAW_8K)
    body = t.convert(turn)
    tail = t.flush()
    assert len(body) + len(tail) == ceil(len(turn) / 2 / 3)
    assert len(tail) == pytest.approx(t.delay_ms * 8, abs=1)
    # The tail is the end of the tone, not silence.
    assert np.abs(pcm(mulaw_to_pcm16(tail))).max() > 4000
    assert t.convert(turn) + t.flush() == body + tail


def test_reset_after_barge_in_drops_the_held_tail() -> None:
    t = make_transcoder(PCM16_24K, MULAW_8K)
    t.convert(tone([800], 0.2, 24000) + b"\x01")  # ends mid-sample too
    t.reset()
    assert t.flush() == b""
    next_turn = tone([300], 0.1, 24000)
    assert stream(t, next_turn, 480) == stream(make_transcoder(PCM16_24K, MULAW_8K), next_turn, 480)


def test_same_rate_encoding_change_adds_no_delay() -> None:
    t = make_transcoder(PCM16_8K, MULAW_8K)
    assert not t.passthrough
    assert t.delay_ms == 0.0
    assert len(t.convert(tone([1000], 0.02, 8000))) == 160


def test_soxr_resampler_can_be_chosen_per_transcoder() -> None:
    t = make_transcoder(MULAW_8K, PCM16_24K, resampler="soxr-hq")
    out = pcm(stream(t, pcm16_to_mulaw(tone([1000], 0.5, 8000)), 160))
    assert abs(len(out) - 3 * 4000) <= 3
    assert abs(dominant_frequency(out, 24000) - 1000) <= 2
    with pytest.raises(ValueError, match="unknown resampler kind"):
        make_transcoder(MULAW_8K, PCM16_24K, resampler="nearest")
