"""``type = "tape"``: a provider that plays the provider side of a call tape.

Each recorded provider event is served in order, but only once the session has received
what the original session had received before it (caller audio, text, truncations, tool
results) and no sooner than its time on the tape, counted from the session's opening.
Anchoring events to the caller's input, not to the wall clock alone, is what makes replay
deterministic at any ``--speed`` and keeps a reply after the caller's words even when the
server under test is slower or faster than the one recorded. An event whose trigger never comes (the server
under test no longer sends that text, say) is served after ``trigger_timeout_s`` and noted
in :attr:`ReplaySession.missed`, so the replay reports it rather than hanging.

Only what the bridge saw is served: when the recorded server recovered onto another provider
mid-call, its bridge still saw one session, and the tape notes only the format change; audio
recorded in another format than the replay session declares is converted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from s2s.events import AudioOut, Closed, ProviderEvent
from s2s.provider import Provider, ProviderConfig, ProviderConnectError, ProviderSession, QueuedSession, SessionContext
from s2s.registry import ProviderSpec
from transcoding.formats import AudioFormat
from transcoding.pipeline import Transcoder, make_transcoder
from voicebot.devtools.tape.format import ProviderIn, ProviderOut, SessionOpened, Tape, read_tape

log = logging.getLogger(__name__)


class TapeProviderConfig(ProviderConfig):
    type: Literal["tape"] = "tape"
    path: str = Field(description="call tape whose provider side is served")
    speed: float = Field(default=1.0, gt=0, description="replay speed; match the caller side's")
    trigger_timeout_s: float = Field(
        default=1.0, gt=0, description="how long an event waits for the caller input it answered"
    )


@dataclass(frozen=True, slots=True)
class _Need:
    audio_ms: float = 0.0
    texts: int = 0
    truncates: int = 0
    tool_results: int = 0

    def __str__(self) -> str:
        return (
            f"{self.audio_ms:.0f} ms of caller audio, {self.texts} text(s), "
            f"{self.truncates} truncation(s), {self.tool_results} tool result(s)"
        )


@dataclass(frozen=True, slots=True)
class ScriptedEvent:
    t: float
    event: ProviderEvent
    need: _Need
    output_format: AudioFormat


@dataclass(slots=True)
class SessionScript:
    opened: SessionOpened
    events: list[ScriptedEvent] = field(default_factory=list)


def session_script(tape: Tape) -> SessionScript | None:
    """The provider side of ``tape`` as the bridge saw it, or None if the tape has none.

    Later ``session`` records (a recovery that moved to a provider with other formats) only
    change the formats: the bridge saw one session throughout, and so does a replay."""
    script: SessionScript | None = None
    fmt_in = fmt_out = None
    audio_ms = 0.0
    texts = truncates = tools = 0
    for record in tape.records:
        if isinstance(record, SessionOpened):
            script = script or SessionScript(record)
            fmt_in, fmt_out = record.input_format, record.output_format
        elif script is None or fmt_in is None or fmt_out is None:
            continue
        elif isinstance(record, ProviderOut):
            if record.kind == "audio":
                audio_ms += fmt_in.duration_ms(len(record.audio))
            elif record.kind == "text":
                texts += 1
            elif record.kind == "truncate":
                truncates += 1
            else:
                tools += 1
        elif isinstance(record, ProviderIn):
            if isinstance(record.event, Closed) and not record.event.error:
                continue  # the answer to our own close(); the session produces it itself
            need = _Need(audio_ms, texts, truncates, tools)
            script.events.append(ScriptedEvent(record.t, record.event, need, fmt_out))
    return script


class ReplaySession(QueuedSession):
    def __init__(self, script: SessionScript, config: TapeProviderConfig, ctx: SessionContext) -> None:
        super().__init__("tape")
        self.script = script
        self.config = config
        self.ctx = ctx
        self.input_format = script.opened.input_format
        self.output_format = script.opened.output_format
        self.playout_lead_ms = script.opened.playout_lead_ms  # a full-duplex call replays paced
        self.got = _Need()
        self.received_text: list[str] = []
        self.truncations: list[tuple[str, int]] = []
        self.missed: list[str] = []
        self._progress = asyncio.Event()
        self._stay_open = asyncio.Event()
        self._converters: dict[AudioFormat, Transcoder] = {}
        self.start_reader(self._serve())

    def _received(self, audio_ms: float = 0.0, texts: int = 0, truncates: int = 0, tool_results: int = 0) -> None:
        got = self.got
        self.got = _Need(
            got.audio_ms + audio_ms, got.texts + texts, got.truncates + truncates, got.tool_results + tool_results
        )
        self._progress.set()

    async def send_audio(self, audio: bytes) -> None:
        if not self.closed:
            self._received(audio_ms=self.input_format.duration_ms(len(audio)))

    async def send_text(self, text: str) -> None:
        self.received_text.append(text)
        self._received(texts=1)

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        self.truncations.append((item_id, heard_ms))
        self._received(truncates=1)

    async def send_tool_result(self, call_id: str, output: str) -> None:
        self._received(tool_results=1)

    def _ready(self, need: _Need) -> bool:
        got = self.got
        # One frame of slack on audio: a resampler may hand over a few samples less per
        # chunk than the recorded run did, never a whole 20 ms frame less.
        return (
            got.audio_ms >= need.audio_ms - 20.0
            and got.texts >= need.texts
            and got.truncates >= need.truncates
            and got.tool_results >= need.tool_results
        )

    async def _wait_ready(self, step: ScriptedEvent, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while not self._ready(step.need):
            self._progress.clear()
            left = deadline - loop.time()
            if left <= 0:
                note = (
                    f"{type(step.event).__name__} at {step.t:.0f} ms was served without the input it answered: "
                    f"the tape had {step.need}, the replay {self.got}"
                )
                self.missed.append(note)
                log.warning("call %s: tape replay: %s", self.ctx.call_sid, note)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)

    def _in_output_format(self, step: ScriptedEvent) -> ProviderEvent:
        event = step.event
        if not isinstance(event, AudioOut) or step.output_format == self.output_format:
            return event
        converter = self._converters.get(step.output_format)
        if converter is None:
            converter = self._converters[step.output_format] = make_transcoder(step.output_format, self.output_format)
        return AudioOut(converter.convert(event.audio), event.item_id)

    async def _serve(self) -> None:
        # Each event is due at its tape time (relative to the session's opening) or once its
        # input has arrived, whichever is later. Due times come from one fixed base, not from
        # the previous event, so lateness (a loaded machine oversleeping) never accumulates.
        loop = asyncio.get_running_loop()
        speed = self.config.speed
        base = loop.time() - self.script.opened.t / 1000.0 / speed
        for step in self.script.events:
            due = base + step.t / 1000.0 / speed
            await self._wait_ready(step, due + self.config.trigger_timeout_s)
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.emit(self._in_output_format(step))
            if isinstance(step.event, Closed):
                return
        await self._stay_open.wait()  # the tape's session outlived the call; wait for close()

    async def _close_transport(self) -> None:
        self._stay_open.set()


class TapeProvider(Provider):
    """Serves the provider side of one tape to one call."""

    config: TapeProviderConfig

    def __init__(self, name: str, config: TapeProviderConfig) -> None:
        super().__init__(name, config)
        script = session_script(read_tape(config.path))
        if script is None:
            raise ValueError(
                f"{config.path} has no provider side (a caller-side tape, or a call whose provider never "
                "connected): replay it against a live provider"
            )
        self.script = script
        self.sessions: list[ReplaySession] = []

    async def open_session(self, ctx: SessionContext) -> ProviderSession:
        if self.sessions:
            # A second session would replay the call from its start; the server under test
            # reconnected where the recorded one did not, which the replay must show.
            raise ProviderConnectError(self.name, "a tape serves one session; a second was asked for", retryable=False)
        session = ReplaySession(self.script, self.config, ctx)
        self.sessions.append(session)
        return session


def _create(name: str, config: ProviderConfig) -> Provider:
    assert isinstance(config, TapeProviderConfig)
    return TapeProvider(name, config)


SPEC = ProviderSpec(config_model=TapeProviderConfig, factory=_create)
