"""Barge-in detectors on a noisy line: ``python -m bench vad [--seconds 60]``.

Each detector (route ``vad``: energy, silero, webrtc) runs as the bridge runs it
(telephony.local_vad.SpeechOnsetDetector over transcoding.voice_activity, the server's default
threshold and minimum duration), fed 20 ms mu-law frames as Twilio sends them, as if bot audio
played all the time (the detector only listens then):

- **false barge-ins per minute** on noise alone (bench/vad_signals.py: white noise, mains hum,
  8-voice synthetic babble, the three switching abruptly, from fixed seeds, and espeak-ng
  talkers as a crowd), at two levels above the threshold. After each one the detector starts
  over, as after a real barge-in.
- **detection delay**: espeak-ng sentences (six voices) after 1 s of background, from the first
  sample of speech to the barge-in, on a quiet line and over noise. A barge-in during the
  background counts as "early" (a false one); a sentence with none is "missed".
- **CPU**: per 20 ms frame with the level gate open (the worst case: a loud line throughout),
  beside the energy detector, which is the floor (a level compare). Silero also has a load
  time and memory per model (pooled: one per call that needs one at the same moment).

Figures vary a little with espeak-ng's version; the noise figures are exact for a seed.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

from bench import vad_signals as sig
from bench.report import markdown_table
from telephony.local_vad import SpeechOnsetDetector
from transcoding.levels import frame_dbfs
from transcoding.mulaw import mulaw_to_pcm16
from transcoding.voice_activity import VAD_KINDS, VadKind, silero_models, vad_available, voice_activity
from voicebot.config import ServerConfig

THRESHOLD_DBFS: float = ServerConfig.model_fields["local_barge_in_dbfs"].default
MIN_MS: int = ServerConfig.model_fields["local_barge_in_ms"].default
FRAME = 160  # 20 ms of 8 kHz mu-law
LEAD_IN_MS = 1000
NOISE_LEVELS = (-25.0, -15.0)
SPEECH_DBFS = -18.0
SILENCE = b"\xff"  # one mu-law sample of silence


def detector(kind: VadKind) -> SpeechOnsetDetector:
    return SpeechOnsetDetector(voice_activity(kind, sig.RATE, THRESHOLD_DBFS), MIN_MS)


def frames(mulaw: bytes) -> list[tuple[bytes, float]]:
    """Each 20 ms frame decoded and measured once, as the bridge does."""
    out = []
    for start in range(0, len(mulaw) - FRAME + 1, FRAME):
        pcm = mulaw_to_pcm16(mulaw[start : start + FRAME])
        out.append((pcm, frame_dbfs(pcm)))
    return out


def barge_in_times(kind: VadKind, mulaw: bytes) -> list[int]:
    """When (ms) the detector fires; it starts over after each, as after a real barge-in."""
    onset = detector(kind)
    fired = []
    for i, (pcm, level) in enumerate(frames(mulaw)):
        if onset.feed(pcm, level, 20):
            fired.append((i + 1) * 20)
            onset.reset()
    onset.reset()
    return fired


def noise_rows(kinds: tuple[VadKind, ...], seconds: float) -> list[list[object]]:
    noises: list[tuple[str, Callable[[float, float], bytes]]] = [
        ("white noise", sig.white),
        ("mains hum 60 Hz", sig.hum),
        ("babble, 8 synthetic voices", sig.babble),
        ("white, hum, babble in turn (1.5 s each)", sig.changing),
    ]
    if sig.espeak_available():
        noises.append(("crowd, 4 espeak talkers", sig.crowd))
    rows: list[list[object]] = []
    for name, make in noises:
        for dbfs in NOISE_LEVELS:
            audio = make(seconds, dbfs)
            rows.append([name, f"{dbfs:.0f}", *(f"{len(barge_in_times(k, audio)) / seconds * 60:.1f}" for k in kinds)])
    return rows


def delay_rows(kinds: tuple[VadKind, ...]) -> list[list[object]]:
    backgrounds: list[tuple[str, Callable[[float], bytes]]] = [
        ("quiet line", lambda s: sig.white(s, -60, seed=11)),
        ("white noise -35 dBFS", lambda s: sig.white(s, -35, seed=12)),
        ("white noise -25 dBFS", lambda s: sig.white(s, -25, seed=13)),
        ("babble -25 dBFS", lambda s: sig.babble(s, -25, seed=14)),
    ]
    if not sig.espeak_available():
        return []
    sentences = [sig.speech(voice, text, SPEECH_DBFS) for voice, text in sig.SENTENCES]
    rows: list[list[object]] = []
    for name, background in backgrounds:
        for kind in kinds:
            delays, early = [], 0
            for sentence in sentences:
                seconds = LEAD_IN_MS / 1000 + len(sentence) / sig.RATE
                audio = sig.mix(SILENCE * (sig.RATE * LEAD_IN_MS // 1000) + sentence, background(seconds))
                fired = barge_in_times(kind, audio)
                early += any(t <= LEAD_IN_MS for t in fired)
                after = [t - LEAD_IN_MS for t in fired if t > LEAD_IN_MS]
                if after:
                    delays.append(after[0])
            rows.append(
                [
                    f"{SPEECH_DBFS:.0f} dBFS speech, {name}",
                    kind,
                    f"{len(delays)}/{len(sentences)}",
                    f"{statistics.median(delays):.0f}" if delays else "-",
                    f"{max(delays):.0f}" if delays else "-",
                    f"{early}/{len(sentences)}",
                ]
            )
    return rows


def synthetic_rows(kinds: tuple[VadKind, ...]) -> list[list[object]]:
    """The voiced synthetic signal (speech-like level, pitch and formants, no language)."""
    audio = SILENCE * (sig.RATE * LEAD_IN_MS // 1000) + sig.voiced(3.0, SPEECH_DBFS)
    rows: list[list[object]] = []
    for kind in kinds:
        fired = [t - LEAD_IN_MS for t in barge_in_times(kind, audio) if t > LEAD_IN_MS]
        rows.append(["voiced synthetic signal, 3 s", kind, f"{fired[0]}" if fired else "never", len(fired)])
    return rows


def cpu_rows(kinds: tuple[VadKind, ...], n_frames: int) -> list[list[object]]:
    """µs per frame of each detector's decision, beside the floor every frame pays whatever the
    detector: mu-law decode and level (shared by the detector and the recovery watchdog)."""
    mulaw = sig.white(n_frames * 20 / 1000, -15, seed=21)
    start = time.perf_counter()
    loud = frames(mulaw)
    floor_us = (time.perf_counter() - start) / len(loud) * 1e6
    rows: list[list[object]] = [["floor: decode + level", f"{floor_us:.2f}", "1.0x", f"{floor_us * 50 / 1e4:.4f}"]]
    for kind in kinds:
        activity = voice_activity(kind, sig.RATE, THRESHOLD_DBFS)
        for pcm, level in loud[:50]:  # warm up (and take a pooled model)
            activity.voiced(pcm, level)
        start = time.perf_counter()
        for pcm, level in loud:
            activity.voiced(pcm, level)
        us = (time.perf_counter() - start) / len(loud) * 1e6
        activity.reset()
        rows.append([kind, f"{us:.2f}", f"{us / floor_us:.1f}x", f"{us * 50 / 1e4:.4f}"])
    return rows


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def silero_load() -> tuple[float, float]:
    """Load time (ms) and resident memory (MB) of one more Silero model (4 loaded, averaged)."""
    models = silero_models(sig.RATE)
    models.preload(1)
    rss = resident_mb()
    start = time.perf_counter()
    loaded = [models._load() for _ in range(4)]
    load_ms = (time.perf_counter() - start) / 4 * 1000
    grown_mb = (resident_mb() - rss) / 4
    del loaded
    return load_ms, grown_mb


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench vad", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="noise per row (default 60)")
    parser.add_argument("--frames", type=int, default=3000, help="frames timed per detector (default 3000)")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in VAD_KINDS if vad_available(k))
    missing = [k for k in VAD_KINDS if k not in kinds]
    if "silero" in kinds:
        silero_models(sig.RATE).preload(1)
    print(f"## Barge-in detectors: threshold {THRESHOLD_DBFS:.0f} dBFS, {MIN_MS} ms of speech in a row\n")
    if missing:
        print(f"(not installed, left out: {', '.join(missing)}; pip install 'voicebot[vad]')\n")
    print(f"False barge-ins per minute of bot speech, noise alone ({args.seconds:.0f} s per row):\n")
    print(markdown_table(["noise", "dBFS", *kinds], noise_rows(kinds, args.seconds), text_columns=1))
    if sig.espeak_available():
        print("\nDetection delay, espeak-ng speech (6 sentences, 6 voices) after 1 s of background:\n")
        headers = ["signal", "detector", "detected", "delay ms (median)", "delay ms (max)", "early"]
        print(markdown_table(headers, delay_rows(kinds), text_columns=2))
    else:
        print("\n(espeak-ng not installed: no detection delay on speech)")
    print("\nA speech-like signal that is not speech (first barge-in after its start, ms; how many):\n")
    print(markdown_table(["signal", "detector", "first ms", "barge-ins"], synthetic_rows(kinds), text_columns=2))
    print(f"\nCPU per 20 ms frame with the level gate open ({args.frames} frames, white noise at -15 dBFS):\n")
    headers = ["detector", "µs per frame", "x floor", "% of a core per call"]
    print(markdown_table(headers, cpu_rows(kinds, args.frames), text_columns=1))
    if "silero" in kinds:
        load_ms, mb = silero_load()
        print(f"\nSilero model: {load_ms:.0f} ms to load (in a worker thread, pooled), ~{mb:.0f} MB resident each.")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
