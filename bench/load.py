"""Load figures on the real provider path: N concurrent signed calls through ``voicebot serve``
to a loopback provider fake, beside a featureless relay on the same stack (the floor).

``python -m bench load --provider openai --calls 40,100,150`` (the defaults). Per provider and N,
two runs back to back, each with a fresh server process: the floor (``bench.floor``) and
``voicebot serve`` itself (the production command; ``bench.load_probe`` only adds a loop-lag
probe). The provider fake (``bench.load_modes``) and the callers (``bench.load_callers``) run
in this process, on uvloop; everything is on 127.0.0.1. A run:

1. start the fake and the server; one warm-up call (imports, first allocations, SDK clients
   are not per-call cost); 1 s idle: the server's idle CPU and RSS;
2. place N calls one after another (signed webhook, signed media stream), each waiting for
   its provider connection to appear at the fake, so call k is the fake's connection k; each
   caller plays a 1 s 440 Hz tone, then 4 s of silence, at real time (its first tone starts
   at a random point of the first ``--spread`` seconds); the fake answers each turn with a
   2 s reply streamed 8x faster than real time;
3. ``--warmup`` seconds of load, then a ``--seconds`` window, in which:

- CPU % of one core per call = the server process's Δ(utime + stime) / window / N;
- RSS per call = (RSS at the end of the window - idle RSS) / N;
- provider -> Twilio: from the fake sending an audio chunk to the caller receiving the
  ``media`` frame that carries its first audio; Twilio -> provider: from the caller sending
  a frame to the fake receiving the message that carries its end. Frames are paired by
  their position in each direction's audio stream (so no per-frame tagging is needed and
  resampling is allowed for); the caller audio a server dropped before its provider session
  opened is found from the first tone onset the fake heard;
- loop lag: how long a ping arriving on a pipe waits for the server's event loop; "own"
  leaves out the time the server waited for a CPU (other processes on the machine);
- answered: calls that heard at least one whole reply by the end of the window.

A run is marked invalid when the client itself fell behind (caller frame lateness p99 of 20
ms or more) or a call failed, since the figures then do not show the server at real-time load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.load_callers import CYCLE_FRAMES, CYCLE_S, FRAME_S, TONE, LoadCall, place_call
from bench.load_modes import MODES, ProviderFake, SessionLog, without_frame_validation
from bench.load_stats import LatencyRing, Percentiles, percentiles
from bench.report import markdown_table
from transcoding.mulaw import mulaw_to_pcm16
from voicebot.devtools.twilio_sim import SimulatedTwilio

AUTH_TOKEN = "bench-load-auth-token-0123456789"
TARGETS = ("floor", "voicebot")
CLIENT_LATE_LIMIT_MS = FRAME_S * 1000.0  # p99 above one frame: the client is not real time
IDLE_S = 1.0
GRACE_S = 0.5  # after the window, for audio sent in it to arrive
CONTENDED_WAIT_PCT = 5.0
STARVED_WAIT_PCT = 25.0
TICKS_PER_S = 96_000  # stream positions in 1/96000 s: every byte rate used divides it
ONSET_LEVEL = 2000  # |sample| marking the start of the caller's tone


def voicebot_config(fake: ProviderFake) -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.bench]
{fake.provider_toml}

[[routes]]
name = "load"
providers = ["bench"]
"""


# -- the server process ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """The floor or ``voicebot serve`` under ``bench.load_probe``; figures from /proc."""

    def __init__(self, target: str, fake: ProviderFake, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stats_file = workdir / "stats.json"
        self.log_file = workdir / "server.log"
        if target == "voicebot":
            config = workdir / "voicebot.toml"
            config.write_text(voicebot_config(fake))
            command = ["voicebot.cli:main", "serve", "--config", str(config), "--port", str(self.port)]
            command += ["--host", "127.0.0.1", "--log-level", "warning"]
        else:
            assert fake.floor is not None
            command = ["bench.floor:main", fake.floor[0], str(self.port), *fake.floor[1:]]
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.load_probe", str(self.stats_file), *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **fake.env},
            )
        self._ticks_per_s = os.sysconf("SC_CLK_TCK")

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    # the port was free when picked; on a shared machine another process may
                    # have taken it since, so the answer must come from our server's socket
                    if (await client.get(self.url + "/healthz")).status_code == 200 and self._listening():
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready after {timeout} s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    def _listening(self) -> bool:
        """Whether this process holds the listening socket on ``port`` (/proc/net/tcp*)."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == self.port:
                    inodes.add(f"socket:[{fields[9]}]")
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return True
        return False

    def cpu_s(self) -> float:
        """utime + stime of every thread (fields 14 and 15 of /proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks_per_s

    def cpu_precise_s(self) -> float:
        """On-CPU time of all threads in ns (schedstat), for intervals too short for ticks."""
        return sum(int(p.read_text().split()[0]) for p in Path(f"/proc/{self.proc.pid}/task").glob("*/schedstat")) / 1e9

    def runqueue_wait_s(self) -> float:
        """Time the main (event-loop) thread was runnable but waiting for a CPU."""
        return int(Path(f"/proc/{self.proc.pid}/schedstat").read_text().split()[1]) / 1e9

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc status")

    def start_window(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    async def window_stats(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """The probe's figures, or None when the server's loop did not get to the signal in
        ``timeout`` (it is that far behind)."""
        self.stats_file.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not self.stats_file.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return None
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
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start_profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy samples the server from outside (``--nonblocking``: never paused)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", "250", "--nonblocking", "--function", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- pairing frames across the server ----------------------------------------------------


def _onset_s(audio: bytes | bytearray, mulaw: bool, bytes_per_s: int) -> float | None:
    raw = mulaw_to_pcm16(bytes(audio)) if mulaw else bytes(audio[: len(audio) // 2 * 2])
    loud = np.flatnonzero(np.abs(np.frombuffer(raw, dtype="<i2").astype(np.int32)) > ONSET_LEVEL)
    rate = bytes_per_s if mulaw else bytes_per_s // 2
    return float(loud[0]) / rate if loud.size else None


# where the level first passes ONSET_LEVEL inside the caller's tone (the tone fades in)
_TONE_ONSET_S = _onset_s(b"".join(base64.b64decode(frame) for frame in TONE[:2]), True, 8000) or 0.0


def dropped_ticks(call: LoadCall, log: SessionLog, fake: ProviderFake) -> int:
    """Caller audio the server never forwarded before the first audio the fake got (a server
    buffers only so much while its provider session opens): the fake's first tone onset
    against the caller's, rounded to whole 20 ms frames."""
    heard = _onset_s(log.audio_in, fake.in_mulaw, fake.in_bytes_per_s)
    if heard is None:
        return 0
    first_tone = ((CYCLE_FRAMES - call.phase) % CYCLE_FRAMES) * FRAME_S + _TONE_ONSET_S
    for cycle in range(1000):
        dropped = first_tone + cycle * CYCLE_S - heard
        if dropped > -FRAME_S / 2:
            return round(dropped / FRAME_S) * round(FRAME_S * TICKS_PER_S)
    return 0


def pair_delays(
    sent_at: np.ndarray, sent_start: np.ndarray, got_at: np.ndarray, got_end: np.ndarray, t0: float, t1: float
) -> tuple[np.ndarray, int]:
    """For each item sent in [t0, t1): arrival of the first item on the far side whose audio
    reaches past the sent item's start, minus its send time. Also: how many never arrived."""
    keep = (sent_at >= t0) & (sent_at < t1)
    sent_at, sent_start = sent_at[keep], sent_start[keep]
    j = np.searchsorted(got_end, sent_start, side="right")
    arrived = j < len(got_end)
    delays = got_at[j[arrived]] - sent_at[arrived]
    return delays, int((~arrived).sum())


@dataclass
class Delays:
    out: list[np.ndarray] = field(default_factory=list)  # provider -> Twilio, s
    inb: list[np.ndarray] = field(default_factory=list)  # Twilio -> provider, s
    lost_out: int = 0
    lost_in: int = 0

    def add_call(self, call: LoadCall, log: SessionLog, fake: ProviderFake, t0: float, t1: float) -> None:
        caller_tick = TICKS_PER_S // 8000  # mu-law: one byte per 8 kHz sample
        out_tick = TICKS_PER_S // fake.out_bytes_per_s
        in_tick = TICKS_PER_S // fake.in_bytes_per_s
        delays, lost = pair_delays(
            np.asarray(log.out_at, dtype=np.float64),
            np.asarray(log.out_starts, dtype=np.int64) * out_tick,
            np.frombuffer(call.media_at, dtype=np.float64),
            np.frombuffer(call.media_end, dtype=np.int64) * caller_tick,
            t0,
            t1,
        )
        self.out.append(delays)
        self.lost_out += lost
        sent_at = np.frombuffer(call.sent_at, dtype=np.float64)
        frame_ticks = round(FRAME_S * TICKS_PER_S)
        sent_start = np.arange(len(sent_at), dtype=np.int64) * frame_ticks - dropped_ticks(call, log, fake)
        forwarded = sent_start >= 0
        delays, lost = pair_delays(
            sent_at[forwarded],
            sent_start[forwarded],
            np.asarray(log.in_at, dtype=np.float64),
            np.asarray(log.in_ends, dtype=np.int64) * in_tick,
            t0,
            t1,
        )
        self.inb.append(delays)
        self.lost_in += lost

    @staticmethod
    def summary(parts: list[np.ndarray]) -> Percentiles:
        return percentiles(np.concatenate(parts) * 1e9 if parts else np.zeros(0))


# -- one run -----------------------------------------------------------------------------


@dataclass
class RunFigures:
    provider: str
    target: str
    calls: int
    window_s: float = 0.0
    setup_s: float = 0.0  # placing the calls, one after another
    placed: int = 0
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    cpu_pct_per_call: float = float("nan")
    cpu_pct_total: float = float("nan")
    idle_cpu_pct: float = float("nan")
    rss_idle_mb: float = float("nan")
    rss_per_call_kb: float = float("nan")
    out_latency: Percentiles = field(default_factory=lambda: percentiles(np.zeros(0)))
    in_latency: Percentiles = field(default_factory=lambda: percentiles(np.zeros(0)))
    lost_out: int = 0
    lost_in: int = 0
    loop_lag: Percentiles = field(default_factory=lambda: percentiles(np.zeros(0)))
    loop_lag_own: Percentiles = field(default_factory=lambda: percentiles(np.zeros(0)))
    lateness: Percentiles = field(default_factory=lambda: percentiles(np.zeros(0)))
    client_cpu_pct: float = float("nan")
    server_wait_pct: float = float("nan")
    load_avg: float = float("nan")
    event_loop: str = "?"
    gc_count: list[int] = field(default_factory=lambda: [0, 0, 0])
    gc_max_ms: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    extra_sessions: int = 0
    server_warnings: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.failures:
            found.append(f"{len(self.failures)} failure(s), first: {self.failures[0]}")
        if self.lateness["count"] and self.lateness["p99_us"] / 1000.0 >= CLIENT_LATE_LIMIT_MS:
            found.append(f"client lateness p99 {self.lateness['p99_us'] / 1000.0:.1f} ms")
        if self.server_wait_pct >= STARVED_WAIT_PCT:
            # its CPU figure is then what the machine gave it, not what it needed
            found.append(f"the server waited for a CPU {self.server_wait_pct:.0f}% of the window")
        return found


class Callers:
    def __init__(self, twilio: SimulatedTwilio, fake: ProviderFake, spread_s: float) -> None:
        self.twilio = twilio
        self.fake = fake
        self.spread_frames = max(1, min(CYCLE_FRAMES, round(spread_s / FRAME_S)))
        self.lateness = LatencyRing()
        self.calls: list[LoadCall] = []
        self.failures: list[str] = []
        self.http = httpx.AsyncClient(timeout=10.0)

    async def place(self, phase: int, timeout: float = 15.0) -> LoadCall:
        """One call; with a provider fake, returns once its connection has appeared there."""
        expected = len(self.fake.sessions()) + 1
        call = await asyncio.wait_for(place_call(self.twilio, self.http, phase, self.lateness), timeout)
        if self.fake.provider_socket:
            deadline = time.monotonic() + timeout
            while len(self.fake.sessions()) < expected:
                if time.monotonic() > deadline or call.closed:
                    await call.hangup()
                    raise RuntimeError("no provider connection for the call")
                await asyncio.sleep(0.002)
            call.session = expected - 1
        return call

    async def place_all(self, n: int) -> None:
        for _ in range(n):
            # the first tone starts at a random point of the spread, so replies spread over time
            phase = (CYCLE_FRAMES - random.randrange(self.spread_frames)) % CYCLE_FRAMES
            try:
                self.calls.append(await self.place(phase))
            except Exception as exc:  # a failed call is a figure, not a crash
                self.failures.append(f"{type(exc).__name__}: {exc}")

    async def hang_up(self) -> None:
        await asyncio.gather(*(call.hangup() for call in self.calls), return_exceptions=True)
        await self.http.aclose()


async def warm_up(callers: Callers, reply_bytes: int) -> None:
    """One call, one turn: the first call's imports and allocations are not per-call cost."""
    call = await callers.place(phase=0, timeout=60.0)  # the server's first provider client starts here
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(call.heard(reply_bytes), 15.0)
    await call.hangup()


async def measure(
    provider: str, target: str, n: int, seconds: float, warmup: float, spread: float, profile: Path | None
) -> RunFigures:
    figures = RunFigures(provider, target, n)
    with without_frame_validation():
        return await _measure(figures, seconds, warmup, spread, profile)


async def _started_server(target: str, fake: ProviderFake, workdir: Path) -> ServerProcess:
    """A picked free port can be taken by another process before the server binds it (a busy
    machine, parallel test workers): then the server exits at once and gets a fresh port."""
    for attempt in range(3):
        server = ServerProcess(target, fake, workdir)
        try:
            await server.wait_ready()
            return server
        except RuntimeError as exc:
            if attempt == 2 or "address already in use" not in str(exc):
                raise
    raise AssertionError("unreachable")


async def _measure(
    figures: RunFigures, seconds: float, warmup: float, spread: float, profile: Path | None
) -> RunFigures:
    provider, target, n = figures.provider, figures.target, figures.calls
    async with MODES[provider].fake() as fake:
        reply_bytes = int(0.95 * 8 * fake.reply_ms)
        with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
            server = await _started_server(target, fake, Path(tmp))
            try:
                callers = Callers(SimulatedTwilio(server.url, AUTH_TOKEN), fake, spread)
                await warm_up(callers, reply_bytes)
                await asyncio.sleep(0.3)
                idle0 = server.cpu_precise_s()
                await asyncio.sleep(IDLE_S)
                figures.idle_cpu_pct = 100.0 * (server.cpu_precise_s() - idle0) / IDLE_S
                rss_idle = server.rss_kb()
                base = len(fake.sessions())

                placing = time.monotonic()
                await callers.place_all(n)
                figures.setup_s = time.monotonic() - placing
                await asyncio.sleep(warmup)

                figures.load_avg = os.getloadavg()[0]
                server.start_window()
                callers.lateness.reset()
                wait0, cpu0, t0 = server.runqueue_wait_s(), server.cpu_s(), time.monotonic()
                client0 = time.process_time()
                profiler = None if profile is None else _start_profiler(server.proc.pid, seconds, profile)
                await asyncio.sleep(seconds)
                wait1, cpu1, t1 = server.runqueue_wait_s(), server.cpu_s(), time.monotonic()
                client1 = time.process_time()
                rss_load = server.rss_kb()
                stats = await server.window_stats()
                figures.lateness = callers.lateness.summary()
                await asyncio.sleep(GRACE_S)
                # what the server logged under load (not what stopping it logs)
                figures.server_warnings = [
                    line for line in server.log_lines() if " WARNING " in line or " ERROR " in line
                ]
                await callers.hang_up()
                if profiler is not None:
                    await asyncio.to_thread(profiler.wait, 30)
            finally:
                server.stop()
        sessions = fake.sessions()
        delays = Delays()
        for call in callers.calls:
            if call.session is not None:
                delays.add_call(call, sessions[call.session], fake, t0, t1)
    live = max(1, len(callers.calls))
    window = t1 - t0
    figures.window_s = window
    figures.placed = len(callers.calls)
    figures.failures += callers.failures
    figures.answered = sum(1 for call in callers.calls if call.received >= reply_bytes)
    figures.cpu_pct_total = 100.0 * (cpu1 - cpu0) / window
    figures.cpu_pct_per_call = figures.cpu_pct_total / live
    figures.rss_idle_mb = rss_idle / 1024.0
    figures.rss_per_call_kb = (rss_load - rss_idle) / live
    figures.out_latency = Delays.summary(delays.out)
    figures.in_latency = Delays.summary(delays.inb)
    figures.lost_out, figures.lost_in = delays.lost_out, delays.lost_in
    if stats is None:
        figures.failures.append("the server's loop did not answer the stats signal in 30 s")
    else:
        figures.loop_lag, figures.loop_lag_own = stats["loop_lag"], stats["loop_lag_own"]
        figures.event_loop = stats["event_loop"]
        figures.gc_count, figures.gc_max_ms = stats["gc"]["count"], stats["gc"]["max_ms"]
    figures.client_cpu_pct = 100.0 * (client1 - client0) / window
    figures.server_wait_pct = 100.0 * (wait1 - wait0) / window
    figures.extra_sessions = len(sessions) - base - len(callers.calls)
    return figures


# -- output ------------------------------------------------------------------------------


def _ms(p: Percentiles) -> str:
    if not p["count"]:
        return "-"
    return f"{p['p50_us'] / 1000.0:.2f} / {p['p99_us'] / 1000.0:.2f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 and np.isfinite(a) and np.isfinite(b) else "-"


def _ratio_pair(a: Percentiles, b: Percentiles) -> str:
    if not a["count"] or not b["count"]:
        return "-"
    return f"{_ratio(a['p50_us'], b['p50_us'])} / {_ratio(a['p99_us'], b['p99_us'])}"


def _loop(r: RunFigures) -> str:
    return f"{r.loop_lag_own['p99_us'] / 1000.0:.2f} / {r.loop_lag['p99_us'] / 1000.0:.2f}"


HEADERS = [
    "calls",
    "server",
    "CPU % of a core per call",
    "RSS per call KB",
    "provider → Twilio p50 / p99 ms",
    "Twilio → provider p50 / p99 ms",
    "loop lag p99 ms (own / with CPU wait)",
    "answered",
]


def figures_rows(results: Sequence[RunFigures]) -> list[list[str]]:
    rows: list[list[str]] = []
    floors = {r.calls: r for r in results if r.target == "floor"}
    for r in results:
        mark = "" if not r.problems else " (invalid)"
        rows.append(
            [
                f"{r.calls}",
                r.target + mark,
                f"{r.cpu_pct_per_call:.2f}",
                f"{r.rss_per_call_kb:.0f}",
                _ms(r.out_latency),
                _ms(r.in_latency),
                _loop(r),
                f"{r.answered}/{r.calls}",
            ]
        )
        floor = floors.get(r.calls)
        if r.target == "voicebot" and floor is not None:
            rows.append(
                [
                    f"{r.calls}",
                    "voicebot ÷ floor",
                    _ratio(r.cpu_pct_per_call, floor.cpu_pct_per_call),
                    _ratio(r.rss_per_call_kb, floor.rss_per_call_kb),
                    _ratio_pair(r.out_latency, floor.out_latency),
                    _ratio_pair(r.in_latency, floor.in_latency),
                    _ratio(r.loop_lag["p99_us"], floor.loop_lag["p99_us"]),
                    "",
                ]
            )
    return rows


def conditions_table(results: Sequence[RunFigures]) -> str:
    headers = [
        "calls",
        "server",
        "loop",
        "calls placed in s",
        "window s",
        "load avg",
        "server CPU % total",
        "idle CPU %",
        "RSS idle MB",
        "server waited for CPU %",
        "client CPU %",
        "client lateness p50 / p99 ms",
        "chunks / frames unpaired",
        "extra provider connections",
        "GC runs gen0/1/2",
        "GC max pause ms",
        "server warnings",
    ]
    rows = [
        [
            r.calls,
            r.target,
            r.event_loop,
            f"{r.setup_s:.1f}",
            f"{r.window_s:.1f}",
            f"{r.load_avg:.2f}",
            f"{r.cpu_pct_total:.0f}",
            f"{r.idle_cpu_pct:.2f}",
            f"{r.rss_idle_mb:.0f}",
            f"{r.server_wait_pct:.0f}",
            f"{r.client_cpu_pct:.0f}",
            _ms(r.lateness),
            f"{r.lost_out} / {r.lost_in}",
            r.extra_sessions,
            "/".join(str(c) for c in r.gc_count),
            "/".join(f"{ms:.1f}" for ms in r.gc_max_ms),
            len(r.server_warnings),
        ]
        for r in results
    ]
    return markdown_table(headers, rows, text_columns=3)


PROJECT_PACKAGES = ("telephony/", "s2s/", "transcoding/", "voicebot/")
SELECTOR_WAIT = "EpollSelector.select"  # asyncio's idle wait
UVLOOP_WAIT = " (asyncio/runners.py:"  # uvloop's wait is native: the leaf Python frame is the runner


def profile_summary(collapsed: Path, top: int = 12) -> str:
    """Where the server's CPU goes, from py-spy's collapsed stacks: self time per function and
    per source file, and inclusive time of this project's functions (idle selector waits out)."""
    self_fn: Counter[str] = Counter()
    self_file: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    active = waiting = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        if frames[-1].startswith(SELECTOR_WAIT) or UVLOOP_WAIT in frames[-1]:
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
            f"{active} active samples ({waiting} more waiting in the event loop, left out)",
            table("function (self time)", self_fn),
            table("source file (self time)", self_file),
            table("project function (inclusive)", inclusive),
        ]
    )


def _counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _providers(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown provider {unknown[0]!r}; choose from {', '.join(MODES)}")
    return names


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench load", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--provider", type=_providers, default=["openai"], help=f"comma-separated, of: {', '.join(MODES)}"
    )
    parser.add_argument("--calls", type=_counts, default=[40, 100, 150], help="comma-separated call counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the window")
    parser.add_argument("--spread", type=float, default=CYCLE_S, help="first tones start within this many s")
    parser.add_argument("--no-floor", action="store_true", help="measure voicebot only")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy each server in its window, stacks to DIR")
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(
        f"Load: {', '.join(args.provider)}; calls {args.calls}; {args.seconds:g} s window after {args.warmup:g} s "
        f"of load; load average before: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs",
        flush=True,
    )
    results: list[RunFigures] = []
    profiles = []
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        loop_factory = None
    for provider in args.provider:
        has_floor = MODES[provider].floor and not args.no_floor
        for n in args.calls:
            for target in TARGETS if has_floor else ("voicebot",):
                print(f"  {provider}: {n} calls, {target} ...", file=sys.stderr, flush=True)
                profile = args.profile / f"{provider}-{n}-{target}.txt" if args.profile else None
                run = measure(provider, target, n, args.seconds, args.warmup, args.spread, profile)
                results.append(asyncio.run(run, loop_factory=loop_factory))
                if profile is not None:
                    profiles.append((target, profile))
    for provider in args.provider:
        mine = [r for r in results if r.provider == provider]
        print(f"\n### {provider}\n")
        print(markdown_table(HEADERS, figures_rows(mine), text_columns=2))
        print("\nConditions:\n")
        print(conditions_table(mine))
    for target, profile in profiles:
        print(f"\n{target} profile ({profile}):\n")
        print(profile_summary(profile) if profile.exists() else "(py-spy wrote nothing: is it installed?)")
    for r in results:
        if r.server_warnings:
            print(f"\n{r.target} at {r.calls} calls logged {len(r.server_warnings)} warnings, e.g.:")
            print("\n".join(f"    {line[:300]}" for line in r.server_warnings[:3]))
    invalid = [r for r in results if r.problems]
    for r in invalid:
        print(f"\nINVALID: {r.provider} {r.target} at {r.calls} calls: {'; '.join(r.problems)}.")
    contended = [f"{r.target} {r.calls}" for r in results if r.server_wait_pct > CONTENDED_WAIT_PCT]
    if contended:
        print(
            f"\nThe server waited for a CPU more than {CONTENDED_WAIT_PCT:.0f}% of the window in {contended} "
            "(other processes on this machine): latency tails and loop lag include that wait."
        )
    return 1 if invalid else 0
