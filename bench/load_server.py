"""The real voicebot server, run as its own process for ``python -m bench load``.

``python -m bench.load_server CONFIG PORT STATS_FILE`` builds the app exactly as ``voicebot
serve`` does (Runtime + create_app + uvicorn_config) and adds one measuring CallObserver, so
the process's CPU and RSS in /proc/<pid> are the server's own and nothing else's.

What is measured, with ``time.perf_counter_ns`` on the bridge's observer hooks:

- inbound: a Twilio ``media`` frame handed to the bridge (``twilio_in``, after JSON + base64
  decoding) -> the transcoded audio issued to ``session.send_audio`` (``provider_out("audio")``);
- outbound: a provider ``AudioOut`` taken off the session (``provider_in``) -> its first
  ``media`` frame, transcoded and JSON-encoded, handed to the socket (``twilio_out``).

Both spans run without an await inside, so they are the bridge's own work per frame. Time a
frame spends waiting for the event loop is not in them: the loop-lag probe measures it (how
long a ping written to a pipe waits for its read callback), and the added latency a caller
sees is roughly lag + span.

Signals: SIGUSR1 starts a measurement window (forgets samples so far), SIGUSR2 writes the
window's figures to STATS_FILE (JSON, written atomically), SIGTERM writes them and shuts down.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import uvicorn

from bench.load_stats import LatencyRing
from s2s.events import AudioOut, ProviderEvent
from telephony.media_stream import Media, TwilioEvent
from telephony.observer import CallObserver, ToProvider, ToTwilio
from voicebot.calls.plan import CallPlan
from voicebot.calls.runtime import Runtime
from voicebot.config import load_config
from voicebot.server.app import create_app
from voicebot.server.logs import configure_logging
from voicebot.server.run import uvicorn_config


class GcPauses:
    """Collector pauses stop every call at once, so they are counted beside the spans."""

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


class ForwardingLatency:
    def __init__(self) -> None:
        self.inbound = LatencyRing()
        self.outbound = LatencyRing()
        self.loop_lag = LatencyRing(capacity_log2=14)
        self.loop_lag_own = LatencyRing(capacity_log2=14)
        self.gc = GcPauses()

    def reset(self) -> None:
        for ring in (self.inbound, self.outbound, self.loop_lag, self.loop_lag_own):
            ring.reset()
        self.gc.reset()

    def dump(self, path: Path) -> None:
        figures = {
            "inbound": self.inbound.summary(),
            "outbound": self.outbound.summary(),
            "loop_lag": self.loop_lag.summary(),
            "loop_lag_own": self.loop_lag_own.summary(),
            "gc": self.gc.summary(),
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(figures))
        os.replace(tmp, path)


class _FrameClock:
    """When the frame being forwarded in each direction entered the bridge (0: none)."""

    __slots__ = ("inbound_at", "outbound_at")

    def __init__(self) -> None:
        self.inbound_at = 0
        self.outbound_at = 0


class _SpanStart(CallObserver):
    """First observer of a call: stamps a frame before any other observer sees it."""

    def __init__(self, clock: _FrameClock) -> None:
        self.clock = clock

    def twilio_in(self, frame: str | bytes, event: TwilioEvent | None) -> None:
        if type(event) is Media:
            self.clock.inbound_at = time.perf_counter_ns()

    def provider_in(self, event: ProviderEvent) -> None:
        # Any other event in between (TurnDone, SpeechStarted) means the next media frame is
        # not this AudioOut's: only the first frame after an AudioOut is timed.
        self.clock.outbound_at = time.perf_counter_ns() if type(event) is AudioOut else 0


class _SpanEnd(CallObserver):
    """Last observer of a call: the span ends after every other observer has seen it."""

    def __init__(self, clock: _FrameClock, latency: ForwardingLatency) -> None:
        self.clock = clock
        self.latency = latency

    def provider_out(self, kind: ToProvider, payload: object) -> None:
        if kind is ToProvider.AUDIO and self.clock.inbound_at:
            self.latency.inbound.add(time.perf_counter_ns() - self.clock.inbound_at)
            self.clock.inbound_at = 0

    def twilio_out(self, kind: ToTwilio, frame: str) -> None:
        if self.clock.outbound_at and kind is ToTwilio.MEDIA:
            self.latency.outbound.add(time.perf_counter_ns() - self.clock.outbound_at)
            self.clock.outbound_at = 0


class MeasuredRuntime(Runtime):
    """The production runtime, with every call's observers (telemetry, tapes, ...) wrapped
    between the two span observers, so their cost is inside the measured span."""

    latency = ForwardingLatency()

    def observers(self, plan: CallPlan) -> list[CallObserver]:
        clock = _FrameClock()
        return [_SpanStart(clock), *super().observers(plan), _SpanEnd(clock, self.latency)]


# A separate tiny process writes its CLOCK_MONOTONIC time to a pipe every PING_S; the server
# reads it like any socket. The delay from the write to the read callback is what a Twilio
# frame arriving at that moment waits for the event loop (no timer rounding, no GIL sharing).
PING_S = 0.02
_PINGER = f"""
import os, time
while True:
    os.write(1, time.monotonic_ns().to_bytes(8, "little"))
    time.sleep({PING_S})
"""


class LoopLagProbe:
    """Wait for the event loop, per ping. On a shared machine part of it is the process
    waiting for a CPU (run-queue delay in /proc/thread-self/schedstat, one pread per ping);
    ``loop_lag_own`` takes that out, leaving the wait the server's own work causes (an
    estimate: the run-queue delay since the previous ping may predate this one)."""

    def __init__(self, latency: ForwardingLatency) -> None:
        self.latency = latency
        self.pinger = subprocess.Popen([sys.executable, "-c", _PINGER], stdout=subprocess.PIPE)
        assert self.pinger.stdout is not None
        self.fd = self.pinger.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        self.run_delay = self._run_delay_ns()
        self.partial = b""
        asyncio.get_running_loop().add_reader(self.fd, self._on_ping)

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
            self.latency.loop_lag.add(lag)
            self.latency.loop_lag_own.add(max(0, lag - waited))

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        self.pinger.kill()
        self.pinger.wait()
        os.close(self.schedstat)


async def _serve(uv: uvicorn.Config, latency: ForwardingLatency, stats: Path) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, latency.reset)
    loop.add_signal_handler(signal.SIGUSR2, latency.dump, stats)
    probe = LoopLagProbe(latency)
    # uvicorn re-raises SIGTERM after its graceful shutdown (default action: die), so the
    # figures are written from a handler it restores and calls, not after serve() returns.
    signal.signal(signal.SIGTERM, lambda signum, frame: latency.dump(stats))
    try:
        await uvicorn.Server(uv).serve()
    finally:
        probe.close()
        latency.dump(stats)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m bench.load_server CONFIG PORT STATS_FILE", file=sys.stderr)
        return 2
    config_path, port, stats = argv[0], int(argv[1]), Path(argv[2])
    configure_logging("WARNING")
    runtime = MeasuredRuntime(load_config(config_path))
    uv = uvicorn_config(create_app(runtime), "127.0.0.1", port, "warning")
    uv.timeout_graceful_shutdown = 3
    # The event loop uvicorn would pick for `voicebot serve` (uvloop when installed).
    asyncio.run(_serve(uv, runtime.latency, stats), loop_factory=uv.get_loop_factory())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
