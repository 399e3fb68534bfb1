"""The signals the voice-activity figures (bench/vad.py) and tests (tests/test_vad_barge_in.py)
feed to the barge-in detectors: line noises made with numpy from fixed seeds, a voiced
synthetic signal, and speech spoken by espeak-ng. Every signal is 8 kHz, sent through the
telephone band and mu-law as a caller's audio reaches the bridge, and returned as the mu-law
bytes Twilio would carry."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np
from scipy import signal

from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw

RATE = 8000

SENTENCES = (
    ("en-us", "Hello, I would like to move my appointment to next Tuesday afternoon."),
    ("en", "Sorry, could you repeat that? The line is really bad."),
    ("en-us+f3", "Yes, that works for me. Thank you so much."),
    ("en+m3", "No, wait, I meant the other account, the one ending in four."),
    ("en-us+f2", "Can I speak to someone about my bill, please?"),
    ("en+m7", "Actually, I have one more question before you go."),
)
"""What the callers say: one (espeak-ng voice, text) per utterance."""

_BAND = signal.butter(4, [300, 3400], btype="bandpass", fs=RATE, output="sos")


def telephone(pcm: np.ndarray, dbfs: float) -> bytes:
    """``pcm`` (float) band-limited to 300-3400 Hz as a phone line carries it, scaled so its
    RMS is ``dbfs``, as mu-law."""
    band = signal.sosfilt(_BAND, pcm)
    rms = float(np.sqrt(np.mean(band**2))) or 1.0
    scaled = band / rms * 32768 * 10 ** (dbfs / 20)
    return pcm16_to_mulaw(np.clip(scaled, -32768, 32767).astype("<i2").tobytes())


def white(seconds: float, dbfs: float, seed: int = 1) -> bytes:
    """Hiss: white noise (a bad line, a fan)."""
    return telephone(np.random.default_rng(seed).standard_normal(int(seconds * RATE)), dbfs)


def hum(seconds: float, dbfs: float, seed: int = 2) -> bytes:
    """Mains hum and buzz: 60 Hz and its harmonics up to 1.2 kHz (what passes the phone band),
    the odd ones strongest, with a little wander in level, plus a faint hiss."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    buzz = sum(
        np.sin(2 * np.pi * 60 * k * t + rng.uniform(0, 2 * np.pi)) / (k if k % 2 else 3 * k) for k in range(1, 21)
    )
    wander = 1 + 0.1 * np.sin(2 * np.pi * 0.7 * t)
    return telephone(buzz * wander + 0.02 * rng.standard_normal(len(t)), dbfs)


def _voice(t: np.ndarray, rng: np.random.Generator, syllables_hz: float) -> np.ndarray:
    """One synthetic talker: a glottal-like harmonic source whose pitch wanders, shaped by
    three formant resonances, switched on and off at a syllable rate."""
    f0 = rng.uniform(100, 220) * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    source = sum(np.sin(k * phase) / k for k in range(1, 30))
    voiced = np.zeros_like(t)
    for centre in (rng.uniform(400, 800), rng.uniform(1100, 1900), rng.uniform(2300, 2900)):
        sos = signal.butter(2, [centre * 0.85, centre * 1.15], btype="bandpass", fs=RATE, output="sos")
        voiced += signal.sosfilt(sos, source)
    gate = (np.sin(2 * np.pi * syllables_hz * t + rng.uniform(0, 6)) > -0.3).astype(float)
    envelope = signal.lfilter([0.02], [1, -0.98], gate)  # ~6 ms attack and release
    return voiced * envelope


def babble(seconds: float, dbfs: float, seed: int = 3, talkers: int = 8) -> bytes:
    """Room babble: ``talkers`` synthetic voices at once (a call centre floor, a café)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return telephone(sum(_voice(t, rng, rng.uniform(3, 5)) for _ in range(talkers)), dbfs)


def voiced(seconds: float, dbfs: float, seed: int = 4) -> bytes:
    """One synthetic talker with long vowels (~0.4 s on, 0.25 s off): speech-like in level,
    pitch and formants, but no language."""
    rng = np.random.default_rng(seed)
    return telephone(_voice(np.arange(int(seconds * RATE)) / RATE, rng, 1.5), dbfs)


def changing(seconds: float, dbfs: float, seed: int = 5, every_s: float = 1.5) -> bytes:
    """White noise, hum and babble in turn, ``every_s`` each, with no pause between: a line
    whose noise changes abruptly."""
    makers = (white, hum, babble)
    parts = [makers[i % 3](every_s, dbfs, seed + i) for i in range(int(seconds / every_s))]
    return b"".join(parts)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _spoken(voice: str, text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng in ``voice`` at 8 kHz, its leading and trailing silence cut."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "165", "--stdout", text], capture_output=True, check=True
    ).stdout
    # espeak-ng writing to a pipe leaves a placeholder length in the header: take the samples
    # that are there rather than trust it.
    with wave.open(io.BytesIO(wav)) as reader:
        rate = reader.getframerate()
    raw = wav[44:]
    pcm = signal.resample_poly(
        np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2").astype(np.float64), RATE, rate
    )
    loud = np.flatnonzero(np.abs(pcm) > 0.01 * np.abs(pcm).max())
    return pcm[loud[0] : loud[-1] + 1]


def speech(voice: str, text: str, dbfs: float) -> bytes:
    """``text`` spoken by espeak-ng in ``voice``, at ``dbfs`` RMS over the utterance. Needs
    espeak-ng (:func:`espeak_available`)."""
    return telephone(_spoken(voice, text), dbfs)


def crowd(seconds: float, dbfs: float, talkers: int = 4) -> bytes:
    """Real talkers nearby: ``talkers`` espeak-ng voices at once, each saying two of the
    sentences over and over, out of step with the others."""
    n = int(seconds * RATE)
    total = np.zeros(n)
    for i in range(talkers):
        one = np.concatenate([_spoken(*SENTENCES[(2 * i + j) % len(SENTENCES)]) for j in range(2)])
        one = np.tile(one / np.sqrt(np.mean(one**2)), n // len(one) + 2)
        total += one[i * 3001 : i * 3001 + n]
    return telephone(total, dbfs)


def mix(*parts: bytes) -> bytes:
    """Mu-law signals summed sample by sample (the length of the longest)."""
    arrays = [np.frombuffer(mulaw_to_pcm16(p), dtype="<i2").astype(np.int32) for p in parts]
    out = np.zeros(max(len(a) for a in arrays), dtype=np.int32)
    for a in arrays:
        out[: len(a)] += a
    return pcm16_to_mulaw(np.clip(out, -32768, 32767).astype("<i2").tobytes())
