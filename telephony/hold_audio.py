"""What a caller on hold hears (:mod:`telephony.hold`), as Twilio's mu-law at 8 kHz mono,
looped: a configured WAV clip, or :func:`builtin_hold_tone`. Pure, whole-clip work done once
per config load; the streaming paths use :mod:`transcoding.pipeline`.

Reads linear PCM WAV (8/16/24/32-bit integer, any rate, any channel count) with the standard
library's :mod:`wave`, averages the channels, and resamples with :func:`scipy.signal.resample_poly`
(its default Kaiser low-pass keeps the telephone band and removes what would alias)."""

from __future__ import annotations

import io
import wave
from functools import cache
from math import gcd

import numpy as np
import numpy.typing as npt
from scipy import signal

from s2s.errors import VoicebotError
from transcoding.formats import MULAW_8K
from transcoding.mulaw import pcm16_to_mulaw


class BadWav(VoicebotError):
    """The file is not linear PCM WAV audio we can play; the message says why."""


def _samples(frames: bytes, width: int) -> npt.NDArray[np.float64]:
    """Interleaved samples scaled to [-1, 1)."""
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(frames, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
        ints = (raw[:, 0].astype(np.int32) | raw[:, 1].astype(np.int32) << 8 | raw[:, 2].astype(np.int32) << 16) << 8
        return ints.astype(np.float64) / 2**31
    dtype = {2: "<i2", 4: "<i4"}[width]
    return np.frombuffer(frames, dtype=dtype).astype(np.float64) / 2 ** (8 * width - 1)


def wav_to_mulaw_8k(data: bytes, max_ms: float) -> bytes:
    """The clip in ``data`` (a whole WAV file) as mu-law 8 kHz mono. Raises :class:`BadWav` when
    it is not linear PCM, holds no audio, or lasts longer than ``max_ms``."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            channels, width, rate, count = wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()
            if width not in (1, 2, 3, 4):
                raise BadWav(f"{8 * width}-bit samples are not supported (8, 16, 24 or 32-bit PCM)")
            if count * 1000.0 / rate > max_ms:
                raise BadWav(f"{count / rate:.1f} s long; at most {max_ms / 1000:g} s")
            frames = wav.readframes(count)
    except (wave.Error, EOFError) as exc:
        raise BadWav(f"not a linear PCM WAV file ({exc})") from exc
    mono = _samples(frames[: len(frames) - len(frames) % (width * channels)], width).reshape(-1, channels).mean(axis=1)
    if mono.size == 0:
        raise BadWav("no audio in the file")
    out_rate = MULAW_8K.sample_rate
    g = gcd(rate, out_rate)
    resampled = signal.resample_poly(mono, out_rate // g, rate // g) if rate != out_rate else mono
    pcm16 = np.clip(np.round(resampled * 32767.0), -32768, 32767).astype("<i2")
    return pcm16_to_mulaw(pcm16.tobytes())


# The built-in pattern: a soft rising three-note chime (C5 E5 G5), then a rest; one cycle is
# HOLD_TONE_CYCLE_MS. Quiet (HOLD_TONE_DBFS, well under speech at about -20 dBFS) and with
# 15 ms fades, so it neither clicks nor sounds like the bot talking.
HOLD_TONE_NOTES: tuple[tuple[float, int], ...] = ((523.25, 160), (659.25, 160), (783.99, 240))
HOLD_TONE_CYCLE_MS = 2500
HOLD_TONE_DBFS = -26.0
_FADE_MS = 15


@cache
def builtin_hold_tone() -> bytes:
    """One cycle of the built-in hold pattern, mu-law 8 kHz (looped by the player)."""
    rate = MULAW_8K.sample_rate
    amplitude = 10 ** (HOLD_TONE_DBFS / 20)
    fade = np.linspace(0.0, 1.0, rate * _FADE_MS // 1000)
    notes = []
    for hz, ms in HOLD_TONE_NOTES:
        note = amplitude * np.sin(2 * np.pi * hz * np.arange(rate * ms // 1000) / rate)
        note[: fade.size] *= fade
        note[-fade.size :] *= fade[::-1]
        notes.append(note)
    sound = np.concatenate(notes)
    cycle = np.concatenate([sound, np.zeros(rate * HOLD_TONE_CYCLE_MS // 1000 - sound.size)])
    return pcm16_to_mulaw(np.round(cycle * 32767.0).astype("<i2").tobytes())
