"""Replay a call tape against a server and report what diverged.

The caller side of the tape is played by a simulated Twilio (signed webhook, Media Stream,
real-time or ``speed``-times pacing, marks echoed, clears honoured). The server is, by
default, an in-process one whose provider is the tape itself (``type = "tape"``, see
:mod:`voicebot.devtools.tape.provider`), or one built from a config for ``live`` replays, or any
running server (``url``). The in-process server records the replay to a tape of its own, so
the original and the replay are compared with the same code (:mod:`voicebot.devtools.tape.view`,
:mod:`voicebot.devtools.tape.compare`); against a ``url`` the replay is recorded from the caller's side.

Replay never hangs: the whole run is bounded by ``timeout_s`` (by default the tape's length
at the chosen speed plus 30 s) and raises :class:`ReplayTimeout` past it.

In tests::

    async def test_barge_in_is_still_cut_at_the_same_point() -> None:
        result = await replay_call("tests/fixtures/calls/echo_barge_in.jsonl", speed=2)
        assert result.ok, result.report()
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import SecretStr

from s2s.errors import VoicebotError
from s2s.provider import Turn
from transcoding.mulaw import mulaw_to_pcm16
from voicebot.config import AppConfig, RecordingConfig, RouteConfig, TwilioConfig
from voicebot.devtools.tape.caller import CallerTape, caller_script, play_caller_side
from voicebot.devtools.tape.compare import Divergence, Tolerance, compare, summary_lines
from voicebot.devtools.tape.format import Tape, read_tape
from voicebot.devtools.tape.provider import TapeProvider, TapeProviderConfig
from voicebot.devtools.tape.view import BargeInView, CallView, TurnView, view_of
from voicebot.devtools.tape.wav import write_call_wav
from voicebot.devtools.twilio_sim import SimulatedTwilio
from voicebot.server.run import local_server

TAPE_WAIT_S = 10.0


class ReplayError(VoicebotError):
    """The replay could not run (bad tape, no server, nothing to serve the provider side)."""


class ReplayTimeout(ReplayError):
    pass


@dataclass(slots=True)
class ReplayResult:
    tape: Tape
    expected: CallView
    got: CallView
    divergences: list[Divergence]
    mode: str
    speed: float
    missed_triggers: list[str] = field(default_factory=list)
    heard_audio: bytes = b""
    """bot audio as the simulated caller heard it (8 kHz mu-law, stream clock)"""
    caller_audio: bytes = b""

    @property
    def ok(self) -> bool:
        return not self.divergences and not self.missed_triggers

    @property
    def turns(self) -> list[TurnView]:
        return self.got.turns

    @property
    def barge_ins(self) -> list[BargeInView]:
        return self.got.barge_ins

    @property
    def transcript(self) -> list[Turn]:
        return self.got.transcript

    def heard_pcm(self, start_ms: float = 0.0, end_ms: float | None = None) -> npt.NDArray[np.int16]:
        data = self.heard_audio[int(start_ms * 8) : None if end_ms is None else int(end_ms * 8)]
        return np.frombuffer(mulaw_to_pcm16(data), dtype="<i2")

    def write_wav(self, path: str | Path) -> float:
        return write_call_wav(path, self.caller_audio, self.heard_audio)

    def report(self) -> str:
        lines = [f"replay of {self.tape.path} ({self.mode}, speed {self.speed:g})"]
        lines += ["tape:", *summary_lines(self.expected), "replay:", *summary_lines(self.got)]
        if self.ok:
            lines.append("no divergence")
        for divergence in self.divergences:
            lines.append(f"DIVERGED {divergence}")
        for note in self.missed_triggers:
            lines.append(f"DIVERGED provider side: {note}")
        return "\n".join(lines)


def _replay_config(tape_path: str, route: str, speed: float, record_dir: Path, token: str) -> AppConfig:
    return AppConfig(
        twilio=TwilioConfig(auth_token=SecretStr(token), validate_signatures=True),
        providers={"tape": TapeProviderConfig(path=tape_path, speed=speed)},
        routes=[RouteConfig(name=route or "replay", providers=["tape"])],
        recording=RecordingConfig(enabled=True, dir=str(record_dir)),
    )


def loopback_config(config: AppConfig, record_dir: Path, token: str, route: str) -> AppConfig:
    """``config`` as a private loopback server: its own auth token, no public URL (the stream
    URL must point back at this process), recording on, and only the tape's route (when the
    config has it) matching any number, so the replayed call lands where the original did."""
    chosen = [r for r in config.routes if r.name == route] or config.routes[:1]
    routes = [r.model_copy(update={"to": ["*"], "from_": ["*"]}) for r in chosen]
    return config.model_copy(
        update={
            "routes": routes,
            "server": config.server.model_copy(update={"public_url": None}),
            "twilio": config.twilio.model_copy(update={"auth_token": SecretStr(token), "validate_signatures": True}),
            "recording": RecordingConfig(enabled=True, dir=str(record_dir)),
        }
    )


async def finished_tape(directory: Path, call_sid: str, timeout_s: float = TAPE_WAIT_S) -> Tape:
    """The server-side tape of ``call_sid`` once its ``end`` record is on disk."""
    deadline = time.monotonic() + timeout_s
    while True:
        for path in await asyncio.to_thread(lambda: list(directory.glob(f"*_{call_sid}.jsonl"))):
            tape = await asyncio.to_thread(read_tape, path)
            if tape.complete:
                return tape
        if time.monotonic() > deadline:
            raise ReplayError(f"the server did not finish the tape of call {call_sid} within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def replay_call(
    tape_path: str | Path,
    *,
    speed: float = 1.0,
    url: str | None = None,
    auth_token: str | None = None,
    live: AppConfig | None = None,
    tolerance: Tolerance | None = None,
    timeout_s: float | None = None,
    to: str = "+15550001111",
    from_: str = "+15557654321",
) -> ReplayResult:
    """Replay ``tape_path`` and compare. With neither ``url`` nor ``live``, the provider side
    is served from the tape (a caller-side tape has none: pass ``live``, which the CLI
    defaults to the built-in echo line). ``to``/``from_`` are the simulated call's numbers,
    which pick the route on a ``url`` server; an in-process one has only the tape's route."""
    tape = read_tape(tape_path)
    if url is None and live is None and not tape.has_provider_side():
        raise ReplayError(f"{tape_path} is a caller-side tape with no provider side: replay it live")
    limit = timeout_s if timeout_s is not None else tape.duration_ms / 1000.0 / speed + 30.0
    try:
        async with asyncio.timeout(limit):
            return await _replay(tape, speed, url, auth_token, live, tolerance, (to, from_))
    except TimeoutError:
        raise ReplayTimeout(f"replay of {tape_path} did not finish within {limit:.0f} s; gave up") from None


def in_tape_time(tolerance: Tolerance, speed: float) -> Tolerance:
    """Timing tolerances are what a loaded machine's lateness allows, in real time; a replay
    at ``speed`` N compares on the tape's clock, where that lateness counts N times (a server
    77 ms late at 2x is 154 ms late in tape time). Never narrower than given."""
    return replace(tolerance, timing_ms=tolerance.timing_ms * max(1.0, speed))


async def _replay(
    tape: Tape,
    speed: float,
    url: str | None,
    auth_token: str | None,
    live: AppConfig | None,
    tolerance: Tolerance | None,
    numbers: tuple[str, str],
) -> ReplayResult:
    script = caller_script(tape)
    to, from_ = numbers
    call_sid = "CA" + secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="voicebot-replay-") as tmp:
        workdir = Path(tmp)
        if url is not None:
            caller_tape = CallerTape(workdir / f"caller_{call_sid}.jsonl", call_sid, speed)
            twilio = SimulatedTwilio(url, auth_token, speed=speed, tap=caller_tape)
            async with twilio.call(to=to, from_=from_, call_sid=call_sid) as call:
                outcome = await play_caller_side(call, script)
            await caller_tape.close(outcome)
            got_tape = read_tape(caller_tape.path)
            missed: list[str] = []
            mode = f"against {url}"
        else:
            token = secrets.token_hex(16)
            config = (
                loopback_config(live, workdir, token, tape.header.route)
                if live is not None
                else _replay_config(tape.path, tape.header.route, speed, workdir, token)
            )
            async with local_server(config) as server:
                twilio = SimulatedTwilio(server.url, token, speed=speed)
                async with twilio.call(to=to, from_=from_, call_sid=call_sid) as call:
                    await play_caller_side(call, script)
                got_tape = await finished_tape(workdir, call_sid)
                provider = server.runtime.providers.get("tape")
                missed = (
                    [note for s in provider.sessions for note in s.missed] if isinstance(provider, TapeProvider) else []
                )
            mode = "live provider" if live is not None else "provider from the tape"
        by_item = tape.has_provider_side() and got_tape.has_provider_side()
        expected = view_of(tape, by_item=by_item)
        # A caller-side tape is already on the stream clock (CallerTape scales its clock).
        got = view_of(got_tape, by_item=by_item, time_scale=1.0 if url is not None else speed)
        result = ReplayResult(
            tape=tape,
            expected=expected,
            got=got,
            divergences=compare(expected, got, in_tape_time(tolerance or Tolerance(), speed)),
            mode=mode,
            speed=speed,
            missed_triggers=missed,
            heard_audio=bytes(call.heard),
            caller_audio=bytes(call.caller_track),
        )
    return result
