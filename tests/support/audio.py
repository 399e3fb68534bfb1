"""Signals and measurements for asserting on audio itself."""

from __future__ import annotations

import numpy as np

from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw


def tone(freq_hz: float, ms: float, rate: int = 8000, dbfs: float = -12.0) -> np.ndarray:
    n = int(rate * ms / 1000)
    amplitude = 32767 * 10 ** (dbfs / 20)
    return (amplitude * np.sin(2 * np.pi * freq_hz * np.arange(n) / rate)).astype(np.int16)


def to_mulaw(pcm: np.ndarray) -> bytes:
    return pcm16_to_mulaw(pcm.astype("<i2").tobytes())


def from_mulaw(data: bytes) -> np.ndarray:
    return np.frombuffer(mulaw_to_pcm16(data), dtype="<i2")


def pcm_bytes(pcm: np.ndarray) -> bytes:
    return pcm.astype("<i2").tobytes()


def from_pcm_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2")


def rms_dbfs(pcm: np.ndarray) -> float:
    if pcm.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    return 20 * np.log10(max(rms, 1e-3) / 32768)


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    """Peak of the windowed spectrum, refined by parabolic interpolation."""
    x = pcm.astype(np.float64)
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    k = int(np.argmax(spectrum[1:]) + 1)
    if 1 <= k < spectrum.size - 1:
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        k = k + 0.5 * (a - c) / (a - 2 * b + c)
    return float(k * rate / x.size)


def level_at(pcm: np.ndarray, rate: int, freq_hz: float, width_hz: float = 30.0) -> float:
    """Energy (dB relative to full scale sine) in a narrow band around ``freq_hz``."""
    x = pcm.astype(np.float64)
    window = np.hanning(x.size)
    spectrum = np.abs(np.fft.rfft(x * window)) / (window.sum() / 2) / 32768
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    band = (freqs > freq_hz - width_hz) & (freqs < freq_hz + width_hz)
    return float(20 * np.log10(max(float(spectrum[band].max()), 1e-9)))


def active_segments(
    pcm: np.ndarray, rate: int, threshold_dbfs: float = -40.0, frame_ms: int = 10
) -> list[tuple[float, float]]:
    """(start_ms, end_ms) runs of frames louder than the threshold."""
    n = int(rate * frame_ms / 1000)
    segments: list[tuple[float, float]] = []
    start: float | None = None
    frames = pcm.size // n
    for i in range(frames):
        loud = rms_dbfs(pcm[i * n : (i + 1) * n]) > threshold_dbfs
        if loud and start is None:
            start = i * frame_ms
        elif not loud and start is not None:
            segments.append((start, i * frame_ms))
            start = None
    if start is not None:
        segments.append((start, frames * frame_ms))
    return segments


def longest(segments: list[tuple[float, float]]) -> tuple[float, float]:
    """The longest of ``active_segments``' runs."""
    assert segments, "no audio above the threshold"
    return max(segments, key=lambda s: s[1] - s[0])
