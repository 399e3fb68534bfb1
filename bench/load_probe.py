"""Run a server command unchanged, with an event-loop lag probe on the loop it serves on.

``python -m bench.load_probe STATS_FILE MODULE:FUNCTION [ARGS...]`` calls ``FUNCTION(ARGS)``
(e.g. ``voicebot.cli:main serve --config ...``: the production command, nothing rebuilt) after
wrapping ``uvicorn.Config.get_loop_factory``, which is how both ``voicebot serve`` and the
featureless floor (``bench.floor``) get their loop (uvloop when installed). Every loop that
factory makes gets, once running:

- a loop-lag probe: a tiny helper process writes its CLOCK_MONOTONIC time to a pipe every
  20 ms and the server reads it like any socket; the delay from the write to the read
  callback is what a Twilio or provider frame arriving at that moment waits for the loop.
  "own" takes out the time the loop thread waited for a CPU (run-queue delay from
  ``/proc/thread-self/schedstat``), which on a shared machine can dominate the tails;
- GC pause counters (a collection stops every call at once);
- SIGUSR1: forget the samples so far (start of a measurement window); SIGUSR2: write the
  window's figures to STATS_FILE as JSON (atomically).

Nothing runs on the audio path: the probe costs one pipe read per 20 ms.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from bench.load_stats import LatencyRing

PING_S = 0.02
_PINGER = f"""
import os, time
while True:
    os.write(1, time.monotonic_ns().to_bytes(8, "little"))
    time.sleep({PING_S})
"""


class GcPauses:
    def __init__(self) -> None:
        self._started = 0
        self.reset()
        gc.callbacks.append(self._on_gc)

    def reset(self) -> None:
        self.count = [0, 0, 0]
        self.max_ns = [0, 0, 0]

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
            return
        gen = info["generation"]
        self.count[gen] += 1
        self.max_ns[gen] = max(self.max_ns[gen], time.perf_counter_ns() - self._started)

    def summary(self) -> dict[str, list[float]]:
        return {"count": list(self.count), "max_ms": [ns / 1e6 for ns in self.max_ns]}


class LoopLagProbe:
    def __init__(self, loop: asyncio.AbstractEventLoop, stats: Path) -> None:
        self.loop = loop
        self.stats = stats
        self.lag = LatencyRing(capacity_log2=14)
        self.lag_own = LatencyRing(capacity_log2=14)
        self.gc = GcPauses()
        self.pinger = subprocess.Popen([sys.executable, "-c", _PINGER], stdout=subprocess.PIPE)
        assert self.pinger.stdout is not None
        self.fd = self.pinger.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        self.run_delay = self._run_delay_ns()
        self.partial = b""
        loop.add_reader(self.fd, self._on_ping)
        loop.add_signal_handler(signal.SIGUSR1, self.reset)
        loop.add_signal_handler(signal.SIGUSR2, self.dump)

    def _run_delay_ns(self) -> int:
        return int(os.pread(self.schedstat, 128, 0).split()[1])

    def _on_ping(self) -> None:
        now = time.monotonic_ns()
        run_delay = self._run_delay_ns()
        waited, self.run_delay = run_delay - self.run_delay, run_delay
        data = self.partial + os.read(self.fd, 4096)
        whole = len(data) - len(data) % 8
        self.partial = data[whole:]
        for start in range(0, whole, 8):
            lag = now - int.from_bytes(data[start : start + 8], "little")
            self.lag.add(lag)
            # an estimate: the run-queue wait since the previous ping may predate this one
            self.lag_own.add(max(0, lag - waited))

    def reset(self) -> None:
        self.lag.reset()
        self.lag_own.reset()
        self.gc.reset()

    def dump(self) -> None:
        figures: dict[str, Any] = {
            "loop_lag": self.lag.summary(),
            "loop_lag_own": self.lag_own.summary(),
            "gc": self.gc.summary(),
            "event_loop": type(self.loop).__module__.split(".")[0],
        }
        tmp = self.stats.with_suffix(".tmp")
        tmp.write_text(json.dumps(figures))
        os.replace(tmp, self.stats)

    def close(self) -> None:
        self.pinger.kill()
        self.pinger.wait()


def attach_to_uvicorn_loops(stats: Path) -> None:
    """Make every loop uvicorn creates from now on carry a probe (see the module docstring)."""
    original = uvicorn.Config.get_loop_factory

    def get_loop_factory(config: uvicorn.Config) -> Callable[[], asyncio.AbstractEventLoop]:
        factory = original(config) or asyncio.new_event_loop

        def new_loop() -> asyncio.AbstractEventLoop:
            loop = factory()
            loop.call_soon(LoopLagProbe, loop, stats)
            return loop

        return new_loop

    uvicorn.Config.get_loop_factory = get_loop_factory  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or ":" not in argv[1]:
        print("usage: python -m bench.load_probe STATS_FILE MODULE:FUNCTION [ARGS...]", file=sys.stderr)
        return 2
    attach_to_uvicorn_loops(Path(argv[0]))
    module, _, function = argv[1].partition(":")
    entry: Callable[[list[str]], int | None] = getattr(importlib.import_module(module), function)
    return entry(argv[2:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
