"""WAV in and out for the developer tools: any WAV to the phone line's 8 kHz mu-law, and a
call's two tracks to a stereo WAV (caller left, bot right, as the caller heard it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.io import wavfile

from transcoding.formats import MULAW_8K
from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw
from transcoding.resample import make_resampler


def _to_int16(samples: npt.NDArray[np.generic]) -> npt.NDArray[np.int16]:
    if samples.dtype == np.int16:
        return samples.astype(np.int16)
    if samples.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        return ((samples.astype(np.int32) - 128) << 8).astype(np.int16)
    if samples.dtype == np.int32:  # 24-bit WAVs come back as int32 too
        return (samples.astype(np.int64) >> 16).astype(np.int16)
    if np.issubdtype(samples.dtype, np.floating):
        return (np.clip(samples.astype(np.float64), -1.0, 1.0) * 32767).astype(np.int16)
    raise ValueError(f"unsupported WAV sample type {samples.dtype}")


def wav_to_mulaw(path: str | Path) -> bytes:
    """Read a WAV of any rate, channel count and sample type as 8 kHz mono mu-law, through
    the same streaming resampler the call path uses."""
    rate, data = wavfile.read(str(path))
    samples = np.asarray(data)
    if samples.ndim == 2:  # mix down: average the channels in float to avoid clipping
        samples = samples.astype(np.float64).mean(axis=1).astype(samples.dtype)
    pcm = _to_int16(samples).astype("<i2").tobytes()
    if rate != MULAW_8K.sample_rate:
        resampler = make_resampler(int(rate), MULAW_8K.sample_rate)
        pcm = resampler.process(pcm) + resampler.flush()
    return pcm16_to_mulaw(pcm)


def write_call_wav(path: str | Path, caller_mulaw: bytes, bot_mulaw: bytes) -> float:
    """Stereo 8 kHz PCM16: caller left, bot right. Returns the duration in seconds."""
    left = np.frombuffer(mulaw_to_pcm16(caller_mulaw), dtype="<i2")
    right = np.frombuffer(mulaw_to_pcm16(bot_mulaw), dtype="<i2")
    n = max(left.size, right.size)
    stereo = np.zeros((n, 2), dtype=np.int16)
    stereo[: left.size, 0] = left
    stereo[: right.size, 1] = right
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(str(path), MULAW_8K.sample_rate, stereo)
    return n / MULAW_8K.sample_rate
