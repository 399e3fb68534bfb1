"""Transcoding figures: resampler delay, telephone-band quality, burstiness and CPU per 20 ms frame.

Everything is measured on the audio the resamplers actually return, fed the way the bridge
feeds them, not taken from filter formulas:

- delay: a band-limited pulse (3 kHz sinc) goes in one input sample at a time; the delay is how
  much more input had to arrive before the pulse's peak came out (mean and worst over 8 pulse
  positions: soxr's figure depends on where the pulse falls in its internal blocks).
- level at 3.4 kHz and worst deviation over 0.1-3.4 kHz: tone level out vs tone level in.
- rejection: upsampling, the strongest image (m*in_rate -/+ f) of tones across 0.1-3.4 kHz;
  downsampling, the strongest alias that tones above 1.15x the output Nyquist fold into the
  0-3.4 kHz voice band (for 8 kHz out: tones 4.6 kHz and up). dB below the tone.
- 20 ms frames: input fed before the first output, output returned per frame once steady (min-max)
  and the most audio held back at any point (input fed minus output returned).
- CPU: wall time of each ``process()`` call on a 20 ms frame of noise, median and mean over many
  frames (the mean includes soxr's burst frames, which is what a loaded server pays).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bench.report import markdown_table
from transcoding.formats import MULAW_8K, PCM16_16K, PCM16_24K, AudioFormat
from transcoding.mulaw import pcm16_to_mulaw
from transcoding.pipeline import make_transcoder
from transcoding.resample import RESAMPLER_KINDS, StreamingResampler, make_resampler

RATE_PATHS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000)]
TRANSCODER_PATHS = [
    (MULAW_8K, MULAW_8K),
    (MULAW_8K, PCM16_16K),
    (PCM16_16K, MULAW_8K),
    (MULAW_8K, PCM16_24K),
    (PCM16_24K, MULAW_8K),
]
FRAME_MS = 20
TONE_AMPLITUDE = 10000.0
VOICE_BAND_HZ = 3400.0

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Framing:
    """How output comes back when input arrives in 20 ms frames."""

    first_output_ms: float  # input fed before the first non-empty output
    per_frame_min_ms: float  # output per frame once steady
    per_frame_max_ms: float
    held_back_max_ms: float  # most input fed minus output returned, at any point


@dataclass(frozen=True, slots=True)
class ResamplerFigures:
    path: str
    kind: str
    delay_mean_ms: float
    delay_max_ms: float
    level_3k4_db: float
    passband_worst_db: float
    rejection_db: float
    framing: Framing
    cpu_median_us: float
    cpu_mean_us: float


def _run(r: StreamingResampler, samples: npt.NDArray[np.int16]) -> Floats:
    out = r.process(samples.tobytes()) + r.flush()
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


def _tone(freq: float, rate: int, seconds: float = 0.5) -> npt.NDArray[np.int16]:
    n = np.arange(int(rate * seconds))
    return np.rint(TONE_AMPLITUDE * np.sin(2 * np.pi * freq * n / rate)).astype(np.int16)


def _level_db(samples: Floats, rate: int, freq: float) -> float:
    """dB re the test tone's amplitude, Hann-windowed projection over the steady middle."""
    trim = rate // 50
    steady = samples[trim:-trim]
    window = np.hanning(len(steady))
    phasor = np.exp(-2j * np.pi * freq * np.arange(len(steady)) / rate)
    amplitude = 2 * abs(np.sum(window * steady * phasor)) / window.sum()
    return float(20 * np.log10(amplitude / TONE_AMPLITUDE + 1e-12))


def measure_delay(kind: str, in_rate: int, out_rate: int) -> tuple[float, float]:
    delays = []
    for k in range(8):
        at = int(in_rate * (0.3 + 0.0173 * k))  # irregular steps: different block phases
        n = np.arange(int(in_rate * 0.6)) - at
        pulse = np.sinc(2 * 3000 * n / in_rate) * (np.abs(n) < in_rate // 250) * 16000
        x = np.rint(pulse).astype(np.int16)
        peak = int(np.argmax(_run(make_resampler(in_rate, out_rate, kind), x)))
        r = make_resampler(in_rate, out_rate, kind)
        frame = in_rate * FRAME_MS // 1000
        emitted = sum(len(r.process(x[i : min(i + frame, at)].tobytes())) for i in range(0, at, frame)) // 2
        for fed in range(at + 1, len(x) + 1):  # one sample at a time from the pulse's peak on
            emitted += len(r.process(x[fed - 1 : fed].tobytes())) // 2
            if emitted > peak:
                delays.append((fed - 1 - at) * 1000 / in_rate)
                break
        else:  # held until the end of the stream
            delays.append((len(x) - at) * 1000 / in_rate)
    return statistics.fmean(delays), max(delays)


def measure_passband(kind: str, in_rate: int, out_rate: int) -> tuple[float, float]:
    """(level at 3.4 kHz, worst deviation from 0 dB over 0.1-3.4 kHz)."""
    levels = {
        f: _level_db(_run(make_resampler(in_rate, out_rate, kind), _tone(f, in_rate)), out_rate, f)
        for f in (100.0, 300.0, 1000.0, 2000.0, 3000.0, 3200.0, VOICE_BAND_HZ)
    }
    return levels[VOICE_BAND_HZ], max(levels.values(), key=abs)


def measure_rejection(kind: str, in_rate: int, out_rate: int) -> float:
    worst = np.inf
    if out_rate > in_rate:
        for f in np.linspace(100, VOICE_BAND_HZ, 12):
            out = _run(make_resampler(in_rate, out_rate, kind), _tone(f, in_rate))
            images = [m * in_rate + s * f for m in range(1, out_rate // in_rate + 1) for s in (-1, 1)]
            image_db = max(_level_db(out, out_rate, i) for i in images if 0 < i < out_rate / 2)
            worst = min(worst, _level_db(out, out_rate, f) - image_db)
    else:
        for f in np.linspace(1.15 * out_rate / 2, in_rate / 2 - 200, 12):
            out = _run(make_resampler(in_rate, out_rate, kind), _tone(f, in_rate))
            alias = abs(f - round(f / out_rate) * out_rate)
            worst = min(worst, -_level_db(out, out_rate, alias))
    return float(worst)


def measure_framing(convert: Callable[[bytes], bytes], src: AudioFormat, dst: AudioFormat) -> Framing:
    """Feeds 2 s of noise in 20 ms frames: (first output after ms, steady per-frame ms min/max,
    most ms held back)."""
    frame = _noise(src, FRAME_MS * 100)
    step = src.nbytes(FRAME_MS)
    first_output_ms, held_back, per_frame = float("nan"), 0.0, []
    fed = returned = 0
    for i in range(100):
        got = len(convert(frame[i * step : (i + 1) * step]))
        fed, returned = fed + step, returned + got
        if got and np.isnan(first_output_ms):
            first_output_ms = src.duration_ms(fed)
        held_back = max(held_back, src.duration_ms(fed) - dst.duration_ms(returned))
        if i >= 50:
            per_frame.append(dst.duration_ms(got))
    return Framing(first_output_ms, min(per_frame), max(per_frame), held_back)


def measure_cpu_us(convert: Callable[[bytes], bytes], frame: bytes, frames: int) -> tuple[float, float]:
    """(median, mean) microseconds per call of ``convert`` on 20 ms frames."""
    for _ in range(50):  # warm caches and fill the resampler
        convert(frame)
    times = []
    clock = time.perf_counter_ns
    for _ in range(frames):
        start = clock()
        convert(frame)
        times.append(clock() - start)
    return statistics.median(times) / 1000, statistics.fmean(times) / 1000


def _noise(fmt: AudioFormat, ms: int) -> bytes:
    samples = np.random.default_rng(1).normal(0, 3000, fmt.sample_rate * ms // 1000)
    pcm = samples.astype("<i2").tobytes()
    return pcm16_to_mulaw(pcm) if fmt.encoding == "mulaw" else pcm


def resampler_figures(kind: str, in_rate: int, out_rate: int, frames: int) -> ResamplerFigures:
    delay_mean, delay_max = measure_delay(kind, in_rate, out_rate)
    level, worst = measure_passband(kind, in_rate, out_rate)
    src, dst = AudioFormat("pcm16", in_rate), AudioFormat("pcm16", out_rate)
    framing = measure_framing(make_resampler(in_rate, out_rate, kind).process, src, dst)
    r = make_resampler(in_rate, out_rate, kind)
    cpu_median, cpu_mean = measure_cpu_us(r.process, _noise(src, FRAME_MS), frames)
    return ResamplerFigures(
        f"{in_rate // 1000}k→{out_rate // 1000}k",
        kind,
        delay_mean,
        delay_max,
        level,
        worst,
        measure_rejection(kind, in_rate, out_rate),
        framing,
        cpu_median,
        cpu_mean,
    )


def _signed_db(value: float) -> str:
    return f"{round(value, 2) + 0.0:+.2f}"  # + 0.0 turns -0.0 into 0.0: no "-0.00" in the table


def resampler_table(kinds: list[str], frames: int) -> str:
    rows = []
    for in_rate, out_rate in RATE_PATHS:
        for kind in kinds:
            f = resampler_figures(kind, in_rate, out_rate, frames)
            rows.append(
                [
                    f.path,
                    f.kind,
                    f"{f.delay_mean_ms:.1f}",
                    f"{f.delay_max_ms:.1f}",
                    _signed_db(f.level_3k4_db),
                    _signed_db(f.passband_worst_db),
                    f"{round(f.rejection_db) + 0}",
                    f"{f.framing.first_output_ms:.0f}",
                    f"{f.framing.per_frame_min_ms:.1f}-{f.framing.per_frame_max_ms:.1f}",
                    f"{f.framing.held_back_max_ms:.1f}",
                    f"{f.cpu_median_us:.0f}",
                    f"{f.cpu_mean_us:.0f}",
                ]
            )
    headers = [
        "path",
        "kind",
        "delay ms (mean)",
        "delay ms (max)",
        "dB @3.4k",
        "worst dB 0.1-3.4k",
        "alias/image rej. dB",
        "1st output after ms",
        "out per 20ms frame (ms)",
        "max held back ms",
        "CPU µs/frame (median)",
        "CPU µs/frame (mean)",
    ]
    return markdown_table(headers, rows, text_columns=2)


def transcoder_table(kinds: list[str], frames: int) -> str:
    rows = []
    for src, dst in TRANSCODER_PATHS:
        for kind in kinds if src != dst else ["passthrough"]:
            resampler = "polyphase" if src == dst else kind
            framing = measure_framing(make_transcoder(src, dst, resampler).convert, src, dst)
            t = make_transcoder(src, dst, resampler)
            median, mean = measure_cpu_us(t.convert, _noise(src, FRAME_MS), frames)
            # One call direction = 50 frames/s; % of one core = mean µs * 50 / 1e6 * 100.
            rows.append(
                [
                    f"{src} → {dst}",
                    kind,
                    f"{framing.held_back_max_ms:.1f}",
                    f"{median:.1f}",
                    f"{mean:.1f}",
                    f"{mean * 50 / 1e4:.3f}",
                ]
            )
    headers = [
        "Transcoder",
        "resampler",
        "max held back ms",
        "CPU µs/frame (median)",
        "CPU µs/frame (mean)",
        "% of one core per call direction",
    ]
    return markdown_table(headers, rows, text_columns=2)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench transcoding", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000, help="20 ms frames timed per figure")
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=list(RESAMPLER_KINDS),
        choices=RESAMPLER_KINDS,
        help="resampler kinds to compare (default: all)",
    )
    args = parser.parse_args(argv)
    print(f"## Resamplers: 20 ms frames, PCM16 mono ({args.frames} frames timed per row)\n")
    print(resampler_table(args.kinds, args.frames))
    print("\n## Transcoder paths (what the bridge runs per call and direction)\n")
    print(transcoder_table([k for k in ("polyphase", "soxr-hq") if k in args.kinds], args.frames))
    print(
        "\nTargets (issue 2): ≤ 5 ms added per direction, flat within 1 dB to 3.4 kHz, ≥ 40 dB alias/image"
        " rejection; ≤ 1% of one core per call."
    )
    return 0
