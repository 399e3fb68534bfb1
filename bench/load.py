"""Load figures: N concurrent simulated calls against the echo line over real sockets.

For each N the real server runs as its own process (``bench.load_server``), so its CPU and RSS
come straight from /proc/<pid>. The callers are :class:`voicebot.devtools.twilio_sim.SimulatedTwilio`
calls in this process: signed webhook, signed WebSocket, real-time 20 ms mu-law frames, bot
audio played out at 8000 bytes/s with marks echoed. Each caller alternates speaking (1.5 s of
a voiced, syllable-modulated signal) and listening while the echo line repeats it, so both
directions carry audio; callers start at random points of that cycle so replies are spread.

Per N: start the server, one warm-up call (first-call imports and allocations are not
per-call cost), idle RSS, ramp up N calls, ``--warmup`` s, then a ``--seconds`` window:

- server CPU % of one core per call = Δ(utime + stime) / window / N;
- RSS per call = (RSS at the end of the window - idle RSS) / N;
- forwarding latency each way, from the server's observer hooks (see bench.load_server): the
  bridge's own work per frame;
- event-loop lag: how long a ping arriving on a pipe waits for its callback, i.e. what a frame
  arriving on a socket waits before the bridge sees it. Added latency ~ lag + span. "own" takes
  out the time the server waited for a CPU, which on a shared machine can dominate the tails;
- the server's idle CPU (no calls; includes the probe's 50 pings/s) and GC pauses in the window;
- the client's own lateness: how late each caller frame left against its 20 ms schedule. The
  figures are only valid while the client keeps up (p99 under one frame, every frame sent);
  the table says so when it did not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.load_stats import LatencyRing, Percentiles
from bench.report import markdown_table
from transcoding.mulaw import pcm16_to_mulaw
from voicebot.devtools.twilio_sim import FRAME_S, SimulatedCall, SimulatedTwilio

AUTH_TOKEN = "bench-load-auth-token-0123456789"
FORMATS = {"mulaw": ("mulaw", 8000), "pcm16k": ("pcm16", 16000), "pcm24k": ("pcm16", 24000)}
SPEAK_S = 1.5
# The echo line answers after 500 ms of silence + 150 ms "thinking", sends the reply at 4x
# real time, and the caller hears it for SPEAK_S: 2.5 s of listening lets it finish playing.
LISTEN_S = 2.5
SETUP_CONCURRENCY = 20
RAMP_S_PER_CALL = 0.01  # call start times spread uniformly over N x 10 ms
CLIENT_LATE_LIMIT_MS = FRAME_S * 1000.0  # p99 above one frame: the client is not real time
MIN_FRAME_RATE = 0.98  # inbound frames the server saw / frames real time would have sent
IDLE_S = 1.0
CONTENDED_WAIT_PCT = 5.0  # server runnable but not running: other load is in the tails


def voice_like(seconds: float = SPEAK_S, rate: int = 8000) -> bytes:
    """A mu-law utterance: harmonics of a gliding 110-170 Hz pitch up to 3.4 kHz, amplitude
    modulated at a syllable rate, about -18 dBFS overall and never under the echo line's
    -38 dBFS VAD threshold (a trough would end the utterance early)."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 24) if k * 170.0 < 3400.0)
    envelope = 0.35 + 0.65 * np.abs(np.sin(2 * np.pi * 2.0 * t))
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    pcm = wave * envelope * fade
    pcm *= 0.125 * 32767 / np.sqrt(np.mean(pcm**2))
    return pcm16_to_mulaw(np.clip(pcm, -32767, 32767).astype("<i2").tobytes())


def echo_config(fmt: str) -> str:
    encoding, rate = FORMATS[fmt]
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.echo]
type = "echo"
encoding = "{encoding}"
sample_rate = {rate}

[[routes]]
name = "load"
providers = ["echo"]
"""


# -- the server process ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``bench.load_server`` in a child process; figures from /proc and its stats file."""

    def __init__(self, workdir: Path, fmt: str) -> None:
        self.workdir = workdir
        config = workdir / "voicebot.toml"
        config.write_text(echo_config(fmt))
        self.stats_file = workdir / "stats.json"
        self.log_file = workdir / "server.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.load_server", str(config), str(self.port), str(self.stats_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._ticks_per_s = os.sysconf("SC_CLK_TCK")

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"load server exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/healthz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"load server not ready after {timeout} s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    def cpu_s(self) -> float:
        """utime + stime (fields 14 and 15 of /proc/<pid>/stat, after the parenthesised name)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks_per_s

    def cpu_precise_s(self) -> float:
        """On-CPU time of all the server's threads in ns resolution (schedstat), for short
        intervals where clock ticks are too coarse."""
        return sum(int(p.read_text().split()[0]) for p in Path(f"/proc/{self.proc.pid}/task").glob("*/schedstat")) / 1e9

    def runqueue_wait_s(self) -> float:
        """Time the event-loop thread was runnable but waiting for a CPU (/proc/<pid>/schedstat):
        on a shared machine this, not the server, is what stretches latency tails."""
        return int(Path(f"/proc/{self.proc.pid}/schedstat").read_text().split()[1]) / 1e9

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc status")

    def start_window(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    async def window_stats(self, timeout: float = 10.0) -> dict[str, Any]:
        self.stats_file.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not self.stats_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"load server wrote no stats:\n{self.log_tail()}")
            await asyncio.sleep(0.02)
        stats: dict[str, Any] = json.loads(self.stats_file.read_text())
        return stats

    def log_lines(self) -> list[str]:
        return self.log_file.read_text(errors="replace").splitlines()

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_lines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the callers -------------------------------------------------------------------------


@dataclass
class Callers:
    """N simulated callers and the client-side measurements."""

    twilio: SimulatedTwilio
    utterance: bytes
    lateness: LatencyRing = field(default_factory=LatencyRing)
    calls: list[SimulatedCall] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def _time_frames(self, call: SimulatedCall) -> None:
        """Record how late each caller frame leaves against its schedule: the media frame's
        own ``timestamp`` is when the simulator meant to send it (its stream clock)."""
        send_json: Callable[[dict[str, Any]], Awaitable[None]] = call.send_json
        lateness = self.lateness

        async def timed_send_json(message: dict[str, Any]) -> None:
            if message.get("event") == "media":
                late_ms = call.now_ms() - int(message["media"]["timestamp"])
                lateness.add(int(late_ms * 1e6))
            await send_json(message)

        call.send_json = timed_send_json  # type: ignore[method-assign]

    async def _converse(self, setup: asyncio.Semaphore, ready: Callable[[], None], ramp_s: float) -> None:
        # Real calls start at unrelated moments, so their 20 ms frame clocks are out of phase;
        # calls set up in batches would send in step and make the server's load bursty.
        await asyncio.sleep(random.uniform(0.0, ramp_s))
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with setup:
                    call = await stack.enter_async_context(self.twilio.call())
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                ready()
                return
            self._time_frames(call)
            self.calls.append(call)
            ready()
            # Start at a random point of the speak/listen cycle so replies spread over time.
            await self._unless_stopped(asyncio.sleep(random.uniform(0, SPEAK_S + LISTEN_S)))
            while not self.stop.is_set() and not call.closed.is_set():
                await self._unless_stopped(call.say(self.utterance))
                await self._unless_stopped(asyncio.sleep(LISTEN_S))

    async def _unless_stopped(self, step: Awaitable[None]) -> None:
        """Run one step of the conversation; the end of the run cuts it short."""
        step_task = asyncio.ensure_future(step)
        stopped = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({step_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (step_task, stopped):
            task.cancel()
        await asyncio.gather(step_task, stopped, return_exceptions=True)

    async def start(self, n: int, timeout: float = 60.0) -> asyncio.Future[list[None]]:
        """Place ``n`` calls; returns once every one is streaming (or has failed)."""
        setup = asyncio.Semaphore(SETUP_CONCURRENCY)
        pending = n
        all_ready = asyncio.Event()

        def ready() -> None:
            nonlocal pending
            pending -= 1
            if pending == 0:
                all_ready.set()

        ramp_s = RAMP_S_PER_CALL * n
        task = asyncio.gather(*(self._converse(setup, ready, ramp_s) for _ in range(n)))
        await asyncio.wait_for(all_ready.wait(), timeout)
        return task

    def heard_ms(self) -> float:
        return sum(call.received_media_ms() for call in self.calls)


# -- one measurement ---------------------------------------------------------------------


@dataclass
class LoadFigures:
    calls: int
    fmt: str
    window_s: float
    load_avg: float
    cpu_pct_per_call: float
    cpu_pct_total: float
    rss_idle_mb: float
    rss_per_call_kb: float
    inbound: Percentiles
    outbound: Percentiles
    loop_lag: Percentiles
    loop_lag_own: Percentiles  # without the time the server waited for a CPU
    lateness: Percentiles
    client_cpu_pct: float
    runqueue_wait_pct: float  # of the window, the server's loop thread waited for a CPU
    client_runqueue_wait_pct: float  # the same for this process's (the callers') loop thread
    idle_cpu_pct: float  # the server with no calls, after the warm-up call
    frame_rate: float  # inbound frames the server forwarded / real-time frames expected
    bot_audio_s_per_call: float
    failed_calls: int
    server_warnings: int
    event_loop: str  # the server's: asyncio, or uvloop when installed
    gc_count: list[int]  # collections per generation in the window
    gc_max_ms: list[float]  # longest pause per generation

    @property
    def problems(self) -> list[str]:
        """Why the run does not show per-call cost at real-time load (empty: it does)."""
        found = []
        if self.failed_calls:
            found.append(f"{self.failed_calls} calls failed")
        if self.lateness["p99_us"] / 1000.0 >= CLIENT_LATE_LIMIT_MS:
            found.append(f"client lateness p99 {self.lateness['p99_us'] / 1000.0:.1f} ms")
        if self.frame_rate < MIN_FRAME_RATE:
            found.append(f"server forwarded {100.0 * self.frame_rate:.1f}% of real-time frames")
        return found

    @property
    def valid(self) -> bool:
        return not self.problems


def _own_runqueue_wait_s() -> float:
    return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9


async def _warm_up_call(twilio: SimulatedTwilio, utterance: bytes) -> None:
    async with twilio.call() as call:
        await call.say(utterance)
        await call.wait_for(lambda: call.received_media_ms() > 0, timeout=10.0)
        await call.pause(500)


def _start_profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy samples the server from outside (``--nonblocking``: the server is never paused,
    so its latency figures are not distorted, though py-spy's own CPU competes for the cores)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", "250", "--nonblocking", "--function", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


PROJECT_PACKAGES = ("telephony/", "s2s/", "transcoding/", "voicebot/")
SELECTOR_WAIT = "EpollSelector.select"


def profile_summary(collapsed: Path, top: int = 12) -> str:
    """Where the server's CPU goes, from py-spy's collapsed stacks: self time per function and
    per source file, and inclusive time of this project's functions. Samples in the event
    loop's selector wait are left out: py-spy counts part of that idle wait as active."""
    self_fn: Counter[str] = Counter()
    self_file: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    active = waiting = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        if frames[-1].startswith(SELECTOR_WAIT):
            waiting += n
            continue
        active += n
        self_fn[frames[-1]] += n
        self_file[frames[-1].rpartition(" (")[2].split(":")[0]] += n
        for frame in set(frames):
            if any(f" ({package}" in frame for package in PROJECT_PACKAGES):
                inclusive[frame] += n
    if not active:
        return "(no samples)"

    def table(title: str, counter: Counter[str]) -> str:
        rows = [[name, f"{100.0 * n / active:.1f}"] for name, n in counter.most_common(top)]
        return markdown_table([title, "% of active samples"], rows)

    return "\n\n".join(
        [
            f"{active} active samples ({waiting} more in {SELECTOR_WAIT}, left out)",
            table("function (self time)", self_fn),
            table("source file (self time)", self_file),
            table("voicebot function (inclusive)", inclusive),
        ]
    )


async def measure(n: int, fmt: str, seconds: float, warmup: float, profile: Path | None = None) -> LoadFigures:
    utterance = voice_like()
    with tempfile.TemporaryDirectory(prefix="voicebot-load-") as tmp:
        server = ServerProcess(Path(tmp), fmt)
        try:
            await server.wait_ready()
            twilio = SimulatedTwilio(server.url, AUTH_TOKEN)
            await _warm_up_call(twilio, utterance)
            await asyncio.sleep(0.3)
            idle0 = server.cpu_precise_s()
            await asyncio.sleep(IDLE_S)
            idle_cpu_pct = 100.0 * (server.cpu_precise_s() - idle0) / IDLE_S
            rss_idle = server.rss_kb()

            callers = Callers(twilio, utterance)
            conversations = await callers.start(n)
            await asyncio.sleep(warmup)

            load_avg = os.getloadavg()[0]
            heard0 = callers.heard_ms()
            server.start_window()
            callers.lateness.reset()
            wait0, cpu0, t0 = server.runqueue_wait_s(), server.cpu_s(), time.monotonic()
            client0, client_wait0 = time.process_time(), _own_runqueue_wait_s()
            profiler = None if profile is None else _start_profiler(server.proc.pid, seconds, profile)
            await asyncio.sleep(seconds)
            wait1, cpu1, t1 = server.runqueue_wait_s(), server.cpu_s(), time.monotonic()
            client1, client_wait1 = time.process_time(), _own_runqueue_wait_s()
            rss_load = server.rss_kb()
            stats = await server.window_stats()
            lateness = callers.lateness.summary()
            heard = callers.heard_ms() - heard0

            callers.stop.set()
            await conversations
            if profiler is not None:
                await asyncio.to_thread(profiler.wait, 30)
        finally:
            server.stop()
        window = t1 - t0
        live = max(1, len(callers.calls))
        warnings = sum(1 for line in server.log_lines() if " WARNING " in line or " ERROR " in line)
        return LoadFigures(
            calls=n,
            fmt=fmt,
            window_s=window,
            load_avg=load_avg,
            cpu_pct_per_call=100.0 * (cpu1 - cpu0) / window / live,
            cpu_pct_total=100.0 * (cpu1 - cpu0) / window,
            rss_idle_mb=rss_idle / 1024.0,
            rss_per_call_kb=(rss_load - rss_idle) / live,
            inbound=stats["inbound"],
            outbound=stats["outbound"],
            loop_lag=stats["loop_lag"],
            loop_lag_own=stats["loop_lag_own"],
            lateness=lateness,
            client_cpu_pct=100.0 * (client1 - client0) / window,
            runqueue_wait_pct=100.0 * (wait1 - wait0) / window,
            client_runqueue_wait_pct=100.0 * (client_wait1 - client_wait0) / window,
            idle_cpu_pct=idle_cpu_pct,
            frame_rate=stats["inbound"]["count"] / (live * window / FRAME_S),
            bot_audio_s_per_call=heard / 1000.0 / live,
            failed_calls=len(callers.failures),
            server_warnings=warnings,
            event_loop=stats["event_loop"],
            gc_count=stats["gc"]["count"],
            gc_max_ms=stats["gc"]["max_ms"],
        )


# -- output ------------------------------------------------------------------------------


def _us(p: Percentiles, key: str) -> str:
    return f"{p[key]:.0f}" if p["count"] else "-"  # type: ignore[literal-required]


def figures_table(results: list[LoadFigures]) -> str:
    headers = [
        "calls",
        "server CPU % per call",
        "server CPU % total",
        "RSS idle MB",
        "RSS per call KB",
        "inbound p50/p99/max µs",
        "outbound p50/p99/max µs",
        "loop lag p99 ms (own / with CPU wait)",
        "client lateness p99 ms",
    ]
    rows = [
        [
            f"{r.calls}" + ("" if r.valid else " (invalid)"),
            f"{r.cpu_pct_per_call:.2f}",
            f"{r.cpu_pct_total:.1f}",
            f"{r.rss_idle_mb:.1f}",
            f"{r.rss_per_call_kb:.0f}",
            "/".join(_us(r.inbound, k) for k in ("p50_us", "p99_us", "max_us")),
            "/".join(_us(r.outbound, k) for k in ("p50_us", "p99_us", "max_us")),
            f"{r.loop_lag_own['p99_us'] / 1000.0:.2f} / {r.loop_lag['p99_us'] / 1000.0:.1f}",
            f"{r.lateness['p99_us'] / 1000.0:.2f}",
        ]
        for r in results
    ]
    return markdown_table(headers, rows)


def conditions_table(results: list[LoadFigures]) -> str:
    headers = [
        "calls",
        "format",
        "server loop",
        "window s",
        "load avg (1 min)",
        "server idle CPU %",
        "client CPU %",
        "server / client waited for CPU %",
        "frames forwarded % of real time",
        "bot audio heard s/call",
        "loop lag own p50/max ms",
        "client lateness p50/max ms",
        "GC runs gen0/1/2",
        "GC max pause gen0/1/2 ms",
        "failed calls",
        "server warnings",
    ]
    rows = [
        [
            r.calls,
            r.fmt,
            r.event_loop,
            f"{r.window_s:.1f}",
            f"{r.load_avg:.2f}",
            f"{r.idle_cpu_pct:.2f}",
            f"{r.client_cpu_pct:.0f}",
            f"{r.runqueue_wait_pct:.0f} / {r.client_runqueue_wait_pct:.0f}",
            f"{100.0 * r.frame_rate:.1f}",
            f"{r.bot_audio_s_per_call:.1f}",
            f"{r.loop_lag_own['p50_us'] / 1000.0:.2f}/{r.loop_lag_own['max_us'] / 1000.0:.1f}",
            f"{r.lateness['p50_us'] / 1000.0:.2f}/{r.lateness['max_us'] / 1000.0:.1f}",
            "/".join(str(c) for c in r.gc_count),
            "/".join(f"{ms:.1f}" for ms in r.gc_max_ms),
            r.failed_calls,
            r.server_warnings,
        ]
        for r in results
    ]
    return markdown_table(headers, rows, text_columns=3)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 10, 50, 100], help="concurrent calls, one run each")
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the window")
    parser.add_argument("--format", choices=sorted(FORMATS), default="mulaw", help="the echo line's audio format")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run server and callers at this niceness (negative, as root: less preemption by other load)",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy the server during each window; stacks to DIR/server-N.txt"
    )
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.nice:
        os.nice(args.nice)  # the server process inherits it
    print(
        f"Load: echo line ({args.format}), signatures on, {args.seconds:g} s window after {args.warmup:g} s of load; "
        f"load average before: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs; niceness {os.nice(0)}",
        flush=True,
    )
    results = []
    profiles = []
    for n in args.calls:
        print(f"  {n} calls ...", file=sys.stderr, flush=True)
        profile = None if args.profile is None else args.profile / f"server-{n}.txt"
        results.append(asyncio.run(measure(n, args.format, args.seconds, args.warmup, profile)))
        if profile is not None:
            profiles.append((n, profile))
    print()
    print(figures_table(results))
    print()
    print(conditions_table(results))
    for n, profile in profiles:
        print(f"\nServer profile at {n} calls (py-spy, {profile}):\n")
        print(profile_summary(profile) if profile.exists() else "(py-spy wrote nothing: is it installed?)")
    invalid = [r for r in results if not r.valid]
    for r in invalid:
        print(
            f"\nINVALID at {r.calls} calls ({'; '.join(r.problems)}): the client did not keep real time "
            f"(limits: lateness p99 < {CLIENT_LATE_LIMIT_MS:.0f} ms, >= {100 * MIN_FRAME_RATE:.0f}% of frames), so "
            "the server figures are not per-call costs at real-time load. Rerun on a quieter machine."
        )
    contended = [r.calls for r in results if r.runqueue_wait_pct > CONTENDED_WAIT_PCT]
    if contended:
        print(
            f"\nAt {contended} calls the server waited for a CPU more than {CONTENDED_WAIT_PCT:.0f}% of the window "
            "(other processes on this machine): loop lag and the latency maxima include that wait."
        )
    return 1 if invalid else 0
