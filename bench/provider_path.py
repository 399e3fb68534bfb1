"""What the provider path benchmarks (``gemini_path``, ``nova_path``) share: the test tone, the
CPU timing loop, the loopback caller-turn driver and the tables they print.

Each benchmark keeps its provider-specific part (SDK objects for the CPU figures, the fake
server and how it records message times); the way a call is driven and measured lives here
so both providers are measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.report import markdown_table
from s2s.events import AudioOut, TurnDone
from s2s.provider import ProviderSession
from transcoding.formats import MULAW_8K
from transcoding.mulaw import pcm16_to_mulaw
from transcoding.pipeline import make_transcoder

FRAME_MS = 20
CHUNK_MS = 40

CPU_HEADERS = ["direction", "µs (median)", "µs (mean)", "% of one core"]


def parse_args(name: str, doc: str, argv: list[str]) -> argparse.Namespace:
    """The options both path benchmarks take: ``--frames`` (CPU figures) and ``--turns``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench {name}", description=doc.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="20 ms frames timed for the CPU figures")
    parser.add_argument("--turns", type=int, default=2, help="caller turns in the loopback latency run")
    return parser.parse_args(argv)


def tone(freq: float, ms: float, rate: int) -> bytes:
    n = np.arange(int(rate * ms / 1000))
    return np.rint(8000 * np.sin(2 * np.pi * freq * n / rate)).astype("<i2").tobytes()


async def timed(run: Callable[[], Awaitable[Any]], count: int) -> tuple[float, float]:
    """Median and mean wall time of ``await run()`` in microseconds (inside one running loop,
    so loop start-up is not counted)."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples), statistics.fmean(samples)


def cpu_rows(cpu: Sequence[tuple[str, float, float]]) -> list[tuple[str, str, str, str]]:
    """Rows under ``CPU_HEADERS``; a call sends 50 frames a second, hence ``mean * 50`` µs/s."""
    return [(name, f"{median:.0f}", f"{mean:.0f}", f"{mean * 50 / 1e4:.3f}") for name, median, mean in cpu]


@dataclass
class TurnTimes:
    """``time.monotonic()`` stamps taken on the client side of the loopback run, in order; the
    fake records the matching server-side stamps."""

    handed: list[float] = field(default_factory=list)  # caller frame handed to the inbound transcoder
    ready: list[float] = field(default_factory=list)  # provider chunk transcoded to mu-law for Twilio


async def drive_turns(session: ProviderSession, turns: int, finished: Callable[[int, int], bool]) -> TurnTimes:
    """Plays ``turns`` caller turns (600 ms tone + 400 ms silence, 20 ms frames in real time)
    through an inbound transcoder into ``session`` while draining its ``AudioOut`` through an
    outbound transcoder, as the bridge does. Waits (at most 10 s) until ``finished(turns_done,
    chunks_out)`` holds at a ``TurnDone``, then closes the session."""
    inbound_tc = make_transcoder(MULAW_8K, session.input_format)
    outbound_tc = make_transcoder(session.output_format, MULAW_8K)
    times = TurnTimes()
    done = asyncio.Event()
    answered = 0

    async def drain() -> None:
        nonlocal answered
        async for event in session.events():
            if isinstance(event, AudioOut):
                outbound_tc.convert(event.audio)
                times.ready.append(time.monotonic())
            elif isinstance(event, TurnDone):
                answered += 1
                if finished(answered, len(times.ready)):
                    done.set()

    reader = asyncio.ensure_future(drain())
    speech = pcm16_to_mulaw(tone(440, 600, 8000) + bytes(2 * 8 * 400))
    frame_bytes = MULAW_8K.nbytes(FRAME_MS)
    for _ in range(turns):
        for start in range(0, len(speech), frame_bytes):
            times.handed.append(time.monotonic())
            await session.send_audio(inbound_tc.convert(speech[start : start + frame_bytes]))
            await asyncio.sleep(FRAME_MS / 1000)
        await asyncio.sleep(1.2)  # the reply plays out before the next caller turn
    await asyncio.wait_for(done.wait(), 10)
    await session.close()
    reader.cancel()
    return times


def delays_ms(sent: Sequence[float], arrived: Sequence[float]) -> list[float]:
    """Pairs the n-th send with the n-th arrival (both sides keep message order)."""
    return [(after - before) * 1000 for before, after in zip(sent, arrived, strict=False)]


def latency_table(latency: dict[str, list[float]], directions: Sequence[tuple[str, str, float]]) -> str:
    """One row per ``(direction key, label, resampler delay ms)``: count, median and p95."""
    rows = []
    for direction, label, delay_ms in directions:
        values = sorted(latency[direction])
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        rows.append((label, str(len(values)), f"{statistics.median(values):.2f}", f"{p95:.2f}", f"{delay_ms:.1f}"))
    return markdown_table(["direction", "messages", "ms (median)", "ms (p95)", "+ resampler delay ms"], rows)
