"""Streaming resamplers: audio quality measured with tones, exact stream bookkeeping, state handling."""

from __future__ import annotations

from math import ceil

import numpy as np
import pytest
from scipy import signal

from tests.support.audio import dominant_frequency, tone
from tests.support.tone_level import tone_level_dbfs
from transcoding.resample import PolyphaseResampler, make_resampler, polyphase_design

PATHS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]
PATH_IDS = [f"{a // 1000}k-{b // 1000}k" for a, b in PATHS]
TONE_DBFS = -12.0


def resample_all(in_rate: int, out_rate: int, samples: np.ndarray, kind: str = "polyphase") -> np.ndarray:
    r = make_resampler(in_rate, out_rate, kind)
    return np.frombuffer(r.process(samples.astype("<i2").tobytes()) + r.flush(), dtype="<i2")


def gain_db(freq: float, in_rate: int, out_rate: int) -> float:
    """Level of a tone after resampling, relative to the same tone before."""
    x = tone(freq, 500, in_rate, TONE_DBFS)
    return tone_level_dbfs(resample_all(in_rate, out_rate, x), out_rate, freq) - tone_level_dbfs(x, in_rate, freq)


@pytest.mark.parametrize(("in_rate", "out_rate"), PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_tone_comes_out_at_the_same_frequency_and_level(in_rate: int, out_rate: int, freq: float) -> None:
    out = resample_all(in_rate, out_rate, tone(freq, 500, in_rate, TONE_DBFS))
    assert len(out) == out_rate // 2
    assert abs(dominant_frequency(out, out_rate) - freq) <= 1.0
    assert abs(tone_level_dbfs(out, out_rate, freq) - TONE_DBFS) < 0.5


@pytest.mark.parametrize(("in_rate", "out_rate"), PATHS, ids=PATH_IDS)
def test_passband_is_flat_within_1db_up_to_3400_hz(in_rate: int, out_rate: int) -> None:
    for freq in [100.0, 300.0, 1000.0, 2000.0, 3000.0, 3300.0, 3400.0]:
        assert abs(gain_db(freq, in_rate, out_rate)) <= 1.0, freq


def test_upsampling_8k_to_16k_leaves_no_image_of_a_1khz_tone_at_7khz() -> None:
    out = resample_all(8000, 16000, tone(1000, 500, 8000, TONE_DBFS))
    assert tone_level_dbfs(out, 16000, 1000) - tone_level_dbfs(out, 16000, 7000) >= 40


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (8000, 24000), (16000, 24000)])
def test_upsampling_images_are_rejected_by_40db_across_the_passband(in_rate: int, out_rate: int) -> None:
    # Passband: up to 3.4 kHz for 8 kHz input, 6.8 kHz for 16 kHz; images sit at m*in_rate -+ f.
    for freq in np.linspace(300, 0.85 * in_rate / 2, 7):
        out = resample_all(in_rate, out_rate, tone(freq, 500, in_rate, TONE_DBFS))
        images = [m * in_rate + s * freq for m in range(1, out_rate // in_rate + 1) for s in (-1, 1)]
        in_band = [f for f in images if 0 < f < out_rate / 2]
        if in_band:
            worst = max(tone_level_dbfs(out, out_rate, f) for f in in_band)
            assert tone_level_dbfs(out, out_rate, freq) - worst >= 40, freq


def test_downsampling_24k_to_8k_attenuates_a_6khz_tone_by_40db() -> None:
    out = resample_all(24000, 8000, tone(6000, 500, 24000, TONE_DBFS))
    # 6 kHz folds to 2 kHz at 8 kHz; whatever survives must be 40 dB under the input tone.
    assert TONE_DBFS - tone_level_dbfs(out, 8000, 2000) >= 40
    total_dbfs = 20 * np.log10(np.sqrt(2) * out[160:-160].std() / 32768 + 1e-12)  # all of it, any frequency
    assert TONE_DBFS - total_dbfs >= 40


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16000, 8000), (24000, 8000), (24000, 16000)])
def test_downsampling_aliases_into_the_voice_band_are_rejected_by_40db(in_rate: int, out_rate: int) -> None:
    # Tones from 4.6 kHz (for an 8 kHz output) up to the input Nyquist would fold onto 0-3.4 kHz.
    low, high = 1.15 * out_rate / 2, in_rate / 2 - 100
    for freq in np.linspace(low, high, 9):
        out = resample_all(in_rate, out_rate, tone(freq, 500, in_rate, TONE_DBFS))
        alias = abs(freq - round(freq / out_rate) * out_rate)
        assert TONE_DBFS - tone_level_dbfs(out, out_rate, alias) >= 40, freq


@pytest.mark.parametrize(("in_rate", "out_rate"), PATHS, ids=PATH_IDS)
def test_output_matches_an_independent_scipy_upfirdn_reference(in_rate: int, out_rate: int) -> None:
    """Same taps through scipy's upfirdn: proves the polyphase bookkeeping and the clipping (a
    full-scale square wave: the band-limited edges overshoot int16 and must clip, not wrap)."""
    rng = np.random.default_rng(7)
    square = 32767.0 * signal.square(2 * np.pi * 250 * np.arange(in_rate // 4) / in_rate)
    x = np.clip(square + rng.normal(0, 3000, len(square)), -32768, 32767).astype(np.int16)
    design = polyphase_design(in_rate, out_rate)
    full = signal.upfirdn(design.taps, x.astype(np.float64), design.up, 1)
    n_out = ceil(len(x) * design.up / design.down)
    index = np.arange(n_out) * design.down + design.group_delay
    expected = np.clip(np.rint(np.where(index < len(full), full[np.minimum(index, len(full) - 1)], 0)), -32768, 32767)
    got = resample_all(in_rate, out_rate, x)
    assert len(got) == n_out
    assert np.abs(got - expected).max() <= 1
    assert got.max() == 32767 and got.min() == -32768  # clipped, not wrapped


@pytest.mark.parametrize(("in_rate", "out_rate"), PATHS, ids=PATH_IDS)
def test_any_chunking_gives_the_same_output_as_one_chunk(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(in_rate + out_rate)
    x = np.clip(rng.normal(0, 6000, in_rate // 2), -32768, 32767).astype(np.int16)
    whole = resample_all(in_rate, out_rate, x)
    r = make_resampler(in_rate, out_rate)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.choice([0, 1, 2, 3, 7, 80, 160, 161, 480, 1000]))
        parts.append(r.process(x[i : i + n].tobytes()))
        i += n
    parts.append(r.flush())
    chunked = np.frombuffer(b"".join(parts), dtype="<i2")
    assert len(chunked) == len(whole)
    assert np.abs(chunked.astype(np.int32) - whole).max() <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), PATHS, ids=PATH_IDS)
def test_output_length_tracks_input_minus_the_delay_without_drift(in_rate: int, out_rate: int) -> None:
    r = make_resampler(in_rate, out_rate)
    delay_samples = r.delay_ms * out_rate / 1000
    rng = np.random.default_rng(3)
    received = emitted = 0
    for _ in range(3000):  # ~ a minute of 20 ms frames, with uneven chunks
        n = int(rng.integers(1, in_rate // 25))
        emitted += len(r.process(bytes(2 * n))) // 2
        received += n
        assert abs(emitted - (received * out_rate / in_rate - delay_samples)) <= 1
    emitted += len(r.flush()) // 2
    assert emitted == ceil(received * out_rate / in_rate)


@pytest.mark.parametrize(("in_rate", "out_rate"), PATHS, ids=PATH_IDS)
def test_delay_is_under_5ms_and_an_impulse_emerges_that_late(in_rate: int, out_rate: int) -> None:
    """Feed one sample at a time; the impulse's output peak appears once the input has run
    ``delay_ms`` past it (within one input sample), and sits at the impulse's own time."""
    r = make_resampler(in_rate, out_rate)
    assert 0 < r.delay_ms <= 5.0
    at = in_rate // 10
    x = np.zeros(in_rate // 5, dtype=np.int16)
    x[at] = 20000
    out = bytearray()
    for i in range(len(x)):
        out += r.process(x[i : i + 1].tobytes())
        y = np.frombuffer(bytes(out), dtype="<i2")
        if len(y) and y.max() > 5000 and np.argmax(y) < len(y) - 1:  # peak passed
            peak = int(np.argmax(y))
            break
    else:
        pytest.fail("impulse never came out")
    assert abs(peak / out_rate - at / in_rate) <= 1 / out_rate
    latency_ms = (i - at) * 1000 / in_rate
    assert abs(latency_ms - r.delay_ms) <= 1000 / min(in_rate, out_rate) + 1e-9


@pytest.mark.parametrize(("in_rate", "out_rate"), PATHS, ids=PATH_IDS)
def test_flush_returns_the_tail_and_resets(in_rate: int, out_rate: int) -> None:
    x = tone(1000, 100, in_rate, TONE_DBFS)
    r = make_resampler(in_rate, out_rate)
    head = r.process(x.tobytes())
    tail = r.flush()
    # The tail is the held-back delay, ending in the last of the tone (not silence).
    assert abs(len(tail) / 2 - r.delay_ms * out_rate / 1000) <= 1
    assert np.abs(np.frombuffer(tail, dtype="<i2")).max() > 4000
    assert (len(head) + len(tail)) // 2 == ceil(len(x) * out_rate / in_rate)
    # Flushed means reset: the same input again gives the same output.
    assert r.process(x.tobytes()) + r.flush() == head + tail
    assert r.flush() == b""


def test_reset_drops_held_audio() -> None:
    r = make_resampler(8000, 24000)
    r.process(tone(1000, 100, 8000).tobytes())
    r.reset()
    assert r.flush() == b""
    fresh = make_resampler(8000, 24000)
    second = tone(440, 100, 8000).tobytes()
    assert r.process(second) + r.flush() == fresh.process(second) + fresh.flush()


def test_designs_are_cached_per_rate_pair() -> None:
    assert PolyphaseResampler(8000, 24000)._design is PolyphaseResampler(8000, 24000)._design


def test_rejects_bad_requests() -> None:
    with pytest.raises(ValueError, match="unknown resampler kind"):
        make_resampler(8000, 16000, "linear")
    with pytest.raises(ValueError, match="nothing to resample"):
        make_resampler(8000, 8000)
    with pytest.raises(ValueError, match="splits a sample"):
        make_resampler(8000, 16000).process(b"\x00\x01\x02")


@pytest.mark.parametrize("kind", ["soxr-qq", "soxr-lq", "soxr-hq", "soxr-vhq"])
def test_soxr_kinds_keep_the_tone_and_the_duration(kind: str) -> None:
    x = tone(1000, 500, 8000)
    r = make_resampler(8000, 24000, kind)
    out = bytearray()
    for frame in x.reshape(-1, 160):
        out += r.process(frame.tobytes())
    out += r.flush()
    y = np.frombuffer(bytes(out), dtype="<i2")
    assert abs(len(y) - 3 * len(x)) <= 2
    assert abs(dominant_frequency(y[2400:-2400], 24000) - 1000) <= 2.0
