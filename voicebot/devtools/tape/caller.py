"""The caller's side of a tape: recording what a simulated Twilio sends and receives, and
playing a tape's caller side back through one.

:class:`CallerTape` is the ``tap`` of a :class:`~voicebot.devtools.twilio_sim.SimulatedTwilio`: it
records the call as Twilio saw it (a ``side = "caller"`` tape: Twilio frames only, times on
the stream clock). :func:`play_caller_side` drives a
:class:`~voicebot.devtools.twilio_sim.SimulatedCall` from any tape: the caller's audio on its
original timeline, DTMF, malformed frames and unknown events at their times, and the hang-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from voicebot.devtools.tape.format import Tape, TapeHeader, TwilioFrame
from voicebot.devtools.tape.recorder import TapeRecorder
from voicebot.devtools.tape.view import media_payload, view_of
from voicebot.devtools.twilio_sim import SimulatedCall

# Frames the simulated Twilio produces itself; replaying them from the tape would duplicate them.
_SIMULATOR_OWN_EVENTS = frozenset({"connected", "start", "media", "mark", "stop"})


class CallerTape:
    """Records a simulated call from Twilio's side; the tape opens on the first frame."""

    def __init__(self, path: str | Path, call_sid: str, speed: float = 1.0, max_bytes: int = 20 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.call_sid = call_sid
        self.speed = speed
        self.max_bytes = max_bytes
        self.recorder: TapeRecorder | None = None

    def __call__(self, direction: str, frame: str | bytes) -> None:
        if self.recorder is None:
            header = TapeHeader(
                call_sid=self.call_sid,
                side="caller",
                recorded_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            )
            speed = self.speed
            self.recorder = TapeRecorder(
                self.path, header, max_bytes=self.max_bytes, clock=lambda: time.monotonic() * speed
            )
        if direction == "in":
            self.recorder.twilio_in(frame, None)
        else:
            self.recorder.record_out(frame if isinstance(frame, str) else frame.decode("utf-8", "replace"))

    async def close(self, outcome: str, timeout_s: float = 5.0) -> None:
        """Write the ``end`` record and wait until the tape is on disk."""
        if self.recorder is None:
            return
        self.recorder.end(outcome)
        await asyncio.to_thread(self.recorder.done.wait, timeout_s)


@dataclass(slots=True)
class CallerScript:
    audio: bytes
    """the caller's mu-law on the stream clock, from t = 0"""
    actions: list[tuple[float, str, str]] = field(default_factory=list)
    """(t_ms, "dtmf" | "raw" | "json", payload)"""
    hangup_at: float | None = None
    duration_ms: float = 0.0


def caller_script(tape: Tape) -> CallerScript:
    script = CallerScript(view_of(tape, by_item=False).caller_audio, duration_ms=tape.duration_ms)
    for record in tape.records:
        if not isinstance(record, TwilioFrame) or record.direction != "in":
            continue
        msg = record.message()
        if msg is None:
            raw = record.frame if isinstance(record.frame, str) else record.frame.decode("latin-1")
            script.actions.append((record.t, "raw", raw))
            continue
        event = msg.get("event")
        if event == "media" and media_payload(msg) is None:
            script.actions.append((record.t, "json", json.dumps(msg)))  # malformed: resend as it came
        elif event == "dtmf":
            dtmf = msg.get("dtmf")
            script.actions.append((record.t, "dtmf", str(dtmf.get("digit", "")) if isinstance(dtmf, dict) else ""))
        elif event == "stop":
            script.hangup_at = record.t if script.hangup_at is None else script.hangup_at
        elif event not in _SIMULATOR_OWN_EVENTS:
            script.actions.append((record.t, "json", json.dumps(msg)))
    end = tape.end
    if script.hangup_at is None and end is not None and end.outcome == "caller-hangup":
        script.hangup_at = end.t
    return script


async def _until(call: SimulatedCall, t_ms: float) -> bool:
    """Sleep until stream time ``t_ms``; False if the call closed first."""
    delay = (t_ms - call.now_ms()) / 1000.0 / call.speed
    if delay > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.closed.wait(), delay)
    return not call.closed.is_set()


async def play_caller_side(call: SimulatedCall, script: CallerScript, tail_s: float = 3.0) -> str:
    """Run the script; returns who ended the call (``caller-hangup`` / ``server-hangup``)."""
    speaking = asyncio.ensure_future(call.say(script.audio))
    try:
        for t, kind, payload in script.actions:
            if not await _until(call, t):
                break
            if kind == "dtmf":
                await call.press(payload)
            elif kind == "json":
                message = json.loads(payload)
                if "streamSid" in message:
                    message["streamSid"] = call.stream_sid
                await call.send_json(message)
            else:
                await call.send_raw(payload)
        if script.hangup_at is not None:
            ended_by_caller = await _until(call, script.hangup_at)
        else:
            # The server ended the original call: wait for it to do so again, bounded.
            left = max(0.0, (script.duration_ms - call.now_ms()) / 1000.0 / call.speed) + tail_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.closed.wait(), left)
            ended_by_caller = not call.closed.is_set()
        await call.hangup()
    finally:
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)
    return "caller-hangup" if ended_by_caller else "server-hangup"
