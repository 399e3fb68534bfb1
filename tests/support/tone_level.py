"""Exact-frequency tone level, for resampler quality checks.

``audio.level_at`` reads the peak FFT bin near a frequency, which loses up to 1.4 dB when the
tone falls between bins (Hann scalloping): too coarse to check "flat within 1 dB". Projecting
onto the exact frequency has no scalloping, and with a Hann window the leakage from a tone
500 Hz away over 0.5 s is far below -100 dB, so images and aliases 40-60 dB down are measurable.
"""

from __future__ import annotations

import numpy as np


def tone_level_dbfs(pcm: np.ndarray, rate: int, freq_hz: float, trim_ms: float = 20.0) -> float:
    """Amplitude of the ``freq_hz`` component in dB re full-scale sine, ignoring ``trim_ms`` at
    each end (the onset/offset transients of a tone burst)."""
    trim = int(rate * trim_ms / 1000)
    x = pcm[trim : len(pcm) - trim].astype(np.float64)
    window = np.hanning(x.size)
    projection = np.sum(window * x * np.exp(-2j * np.pi * freq_hz * np.arange(x.size) / rate))
    return float(20 * np.log10(2 * abs(projection) / window.sum() / 32768 + 1e-12))
