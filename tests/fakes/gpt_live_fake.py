"""A protocol-faithful fake of OpenAI's GPT-Live WebSocket server (``/v1/live/sessions``).

Every frame it receives is checked against the installed SDK's client event models
(``openai.types.live`` via ``tests/fakes/conformance.py``: the model named by its ``type``, no
keys it lacks at any depth, as the real server's strict configuration refuses unknown fields)
and answered with an ``error`` when it fails; every event it sends is built as the SDK's server
event model and checked again as serialized. Any violation fails the test when the fake
closes. Production code reaches it through the SDK's own ``client.live.connect()`` with
``websocket_base_url`` pointed here.

The fake model is full duplex, like the real one, and simple enough to assert on:
- it checks ``Authorization: Bearer``, waits for ``session.start`` (μ-law 8 kHz required by
  default), answers ``session.started`` with ``expires_at`` and a session id;
- an energy VAD on the caller's μ-law audio; a caller turn produces
  ``session.input_transcript.delta`` fragments ("caller", then "<freq> hertz" at its end);
- after a caller turn it answers with a tone (``session.output_audio.delta`` μ-law, with
  output transcript deltas), streamed ``speedup`` times faster than real time;
- it yields: caller speech while it is speaking stops the answer mid-sentence (it records
  how much it had said);
- commentary appends make it speak (the greeting, keypad notes, delegation results), with
  the commentary text as its transcript; thinking/instructions appends are only recorded;
- delegation: ``delegate="client"`` sends ``session.delegation.created`` after a caller
  turn and speaks the commentary that answers it; ``delegate="responses"`` plays the
  Responses backend: a ``function_call`` inside ``response.event``, then waits for
  ``response.item.create`` + ``response.create`` and speaks the output;
- ``session.usage.updated`` every second of input; ``session.close`` -> ``session.closed``.
Fault modes: refuse the HTTP upgrade with a status, or reject ``session.start`` with an error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

import numpy as np
from openai import BaseModel
from openai.types.live import (
    CommentaryAppendedEvent,
    DelegationCreatedEvent,
    ErrorEvent,
    InputTranscriptDeltaEvent,
    OutputAudioDeltaEvent,
    OutputTranscriptDeltaEvent,
    ResponseEvent,
    SessionClosedEvent,
    SessionResource,
    SessionStartedEvent,
    SessionUsageUpdatedEvent,
    ThinkingAppendedEvent,
)
from openai.types.live.delegation_created_event import Delegation
from openai.types.live.error import Error
from openai.types.live.instructions_appended_event import InstructionsAppendedEvent
from openai.types.live.session_usage import SessionUsage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.http11 import Response as HttpResponse

from tests.fakes import conformance
from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw

# Pydantic builds the SDK's validators lazily; build them at import so a test's first session
# does not open ~0.6 s late (a call tape ties provider events to the time since the open).
for _model in (
    *conformance._LIVE_CLIENT.values(),
    *conformance._LIVE_SERVER.values(),
    SessionResource,
):
    _model.model_rebuild()


def validate_client_event(message: Any) -> None:
    """ValueError naming what is wrong when ``message`` is not a client event as the SDK
    defines it (its model by ``type``, no keys the model lacks, at any depth)."""
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    problem = conformance.live_client_frame(message)
    if problem is not None:
        raise ValueError(problem)


Delegate = Literal["client", "responses"]


@dataclass
class LiveFakeOptions:
    api_key: str = "test-key"
    tone_hz: float = 440.0
    answer_tone_hz: float = 660.0  # what it says for commentary (greeting, delegation results)
    tone_dbfs: float = -12.0
    response_ms: int = 1200
    chunk_ms: int = 20
    speedup: float = 4.0
    vad_threshold_dbfs: float = -40.0
    vad_start_ms: int = 60
    vad_silence_ms: int = 300
    refuse_status: int | None = None
    reject_start: str | None = None  # error code answering session.start
    require_pcmu: bool = True
    delegate: Delegate | None = None
    tool_name: str = "lookup"
    tool_arguments: dict[str, Any] = field(default_factory=lambda: {"q": "opening hours"})
    expires_in_s: int = 7200


@dataclass
class SpokenAnswer:
    cause: str  # "caller", "commentary"
    text: str
    planned_ms: int
    said_ms: int = 0
    yielded: bool = False
    yielded_at: float | None = None  # time.monotonic()


@dataclass
class LiveConnection:
    """One client connection and everything it sent (all frames validated)."""

    headers: dict[str, str]
    path: str
    session: dict[str, Any] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)  # all but audio appends
    invalid: list[str] = field(default_factory=list)  # client frames the SDK types refuse
    sent_invalid: list[str] = field(default_factory=list)  # the fake's own, if any (a fake bug)
    audio_in: bytearray = field(default_factory=bytearray)
    appends: int = 0
    # For the load benchmark's latency pairing (same fields as the other fakes), time.monotonic():
    audio_in_at: list[float] = field(default_factory=list)  # each caller audio append
    audio_in_ends: list[int] = field(default_factory=list)  # caller bytes received up to each append
    audio_out_at: list[float] = field(default_factory=list)  # each output audio delta sent
    audio_out_starts: list[int] = field(default_factory=list)  # bot bytes sent before each delta
    audio_out_bytes: int = 0
    answers: list[SpokenAnswer] = field(default_factory=list)
    closed: bool = False
    ws: ServerConnection | None = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == kind]

    def input_pcm(self) -> np.ndarray:
        return np.frombuffer(mulaw_to_pcm16(bytes(self.audio_in)), dtype="<i2")


class FakeLiveServer:
    """``async with FakeLiveServer(LiveFakeOptions(...)) as fake:``; point the SDK at
    ``fake.base_url`` (``ws://127.0.0.1:PORT/v1``)."""

    def __init__(self, options: LiveFakeOptions | None = None) -> None:
        self.options = options or LiveFakeOptions()
        self.connections: list[LiveConnection] = []
        self.port = 0
        self._server: Server | None = None
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    @property
    def last(self) -> LiveConnection:
        return self.connections[-1]

    async def __aenter__(self) -> FakeLiveServer:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._check_request, compression=None, max_size=16 * 2**20
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        problems = [p for c in self.connections for p in (*c.invalid, *c.sent_invalid)]
        if exc_type is None and problems:
            # A frame our client sent that the SDK does not describe is a client bug.
            raise AssertionError(f"frames off the SDK's Live types: {problems[:5]}")

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("fake: condition not reached in time")
            await asyncio.sleep(0.01)

    async def drop(self, code: int = 1011) -> None:
        """The service loses the latest connection (no ``session.closed``)."""
        ws = self.last.ws
        assert ws is not None
        await ws.close(code, "fake dropped the connection")

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    def _check_request(self, connection: ServerConnection, request: Request) -> HttpResponse | None:
        opts = self.options
        if opts.refuse_status is not None:
            return connection.respond(HTTPStatus(opts.refuse_status), "refused by fake\n")
        if request.headers.get("Authorization") != f"Bearer {opts.api_key}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid api key\n")
        if request.path.partition("?")[0] != "/v1/live/sessions":
            return connection.respond(HTTPStatus.NOT_FOUND, "no such path\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        conn = LiveConnection({k.lower(): v for k, v in ws.request.headers.raw_items()}, ws.request.path, ws=ws)
        self.connections.append(conn)
        session = _FakeSession(self, conn, ws)
        try:
            await session.run()
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            await session.stop()


class _FakeSession:
    def __init__(self, server: FakeLiveServer, conn: LiveConnection, ws: ServerConnection) -> None:
        self.server = server
        self.opts = server.options
        self.conn = conn
        self.ws = ws
        self.resource: SessionResource | None = None
        self.started_at = time.monotonic()
        self.speaking: asyncio.Task[None] | None = None
        self.current: SpokenAnswer | None = None
        self.voiced_ms = 0.0
        self.silent_ms = 0.0
        self.in_speech = False
        self.turn_audio = bytearray()
        self.input_ms = 0.0
        self.next_usage_ms = 1000.0
        self.pending_calls: dict[str, str] = {}  # call_id -> delegation id
        self.outputs: list[str] = []

    # ---- plumbing ------------------------------------------------------------------------

    def offset_ms(self) -> int:
        return int((time.monotonic() - self.started_at) * 1000)

    async def send(self, event: BaseModel) -> None:
        frame = event.to_json(use_api_names=True, exclude_unset=True, indent=None)
        problem = conformance.live_server_event(json.loads(frame))
        if problem is not None:
            self.conn.sent_invalid.append(problem)
        await self.ws.send(frame)

    async def stop(self) -> None:
        if self.speaking is not None:
            self.speaking.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.speaking

    async def error(self, code: str, message: str, client_event_id: str | None = None) -> None:
        await self.send(
            ErrorEvent(
                type="error",
                event_id=self.server.new_id("event"),
                error=Error(code=code, message=message, type="invalid_request_error", client_event_id=client_event_id),
            )
        )

    async def run(self) -> None:
        async for frame in self.ws:
            try:
                message = json.loads(frame)
                validate_client_event(message)
            except ValueError as exc:
                self.conn.invalid.append(str(exc))
                await self.error("invalid_event", str(exc))
                continue
            kind = message["type"]
            if kind != "session.input_audio.append":
                self.conn.received.append(message)
            if self.resource is None and kind != "session.start":
                await self.error("session_not_started", "send session.start first", message.get("event_id"))
                continue
            await self.on_event(kind, message)

    # ---- client events -------------------------------------------------------------------

    async def on_event(self, kind: str, message: dict[str, Any]) -> None:
        event_id = message.get("event_id")
        match kind:
            case "session.start":
                await self.on_start(message)
            case "session.input_audio.append":
                self.conn.appends += 1
                await self.on_audio(base64.b64decode(message["audio"]))
            case "session.commentary.append":
                await self.send(self._appended(CommentaryAppendedEvent, "session.commentary.appended", event_id))
                self.say(cause="commentary", text=message["content"], hz=self.opts.answer_tone_hz)
            case "session.thinking.append":
                await self.send(self._appended(ThinkingAppendedEvent, "session.thinking.appended", event_id))
            case "session.instructions.append":
                await self.send(self._appended(InstructionsAppendedEvent, "session.instructions.appended", event_id))
            case "response.item.create":
                item = message["item"]
                if self.conn.session.get("delegation", {}).get("type") != "responses":
                    await self.error(
                        "invalid_request_error", "response.item.create requires Responses delegation.", event_id
                    )
                elif item.get("type") == "function_call_output" and item.get("call_id") in self.pending_calls:
                    self.pending_calls.pop(item["call_id"])
                    self.outputs.append(str(item["output"]))
                else:
                    await self.error("invalid_request_error", f"no pending call {item.get('call_id')!r}", event_id)
            case "response.create":
                if self.pending_calls:
                    await self.error("invalid_request_error", "tool outputs still missing", event_id)
                elif self.outputs:
                    self.say(cause="commentary", text=self.outputs.pop(0), hz=self.opts.answer_tone_hz)
            case "session.close":
                await self.on_close(event_id)
            case _:
                pass

    def _appended(self, model: Any, kind: str, client_event_id: str | None) -> BaseModel:
        offset = self.offset_ms()
        appended: BaseModel = model(
            type=kind,
            event_id=self.server.new_id("event"),
            start_ms=offset,
            end_ms=offset,
            client_event_id=client_event_id,
        )
        return appended

    async def on_start(self, message: dict[str, Any]) -> None:
        if self.resource is not None:
            await self.error("session_already_started", "session.start was already accepted", message.get("event_id"))
            return
        session = message["session"]
        audio_format = (session.get("audio") or {}).get("format") or {}
        if self.opts.reject_start is not None:
            await self.error(self.opts.reject_start, "rejected by fake", message.get("event_id"))
            await self.ws.close(1008, "session rejected")
            return
        if self.opts.require_pcmu and audio_format != {"type": "audio/pcmu", "rate": 8000}:
            await self.error(
                "unsupported_audio_format", f"fake wants pcmu/8000, got {audio_format}", message.get("event_id")
            )
            return
        self.conn.session = session
        self.resource = SessionResource.model_validate(
            {
                **session,
                "id": self.server.new_id("live_sess"),
                "status": "active",
                "expires_at": int(time.time()) + self.opts.expires_in_s,
            }
        )
        self.started_at = time.monotonic()
        await self.send(
            SessionStartedEvent(
                type="session.started",
                event_id=self.server.new_id("event"),
                session=self.resource,
                client_event_id=message.get("event_id"),
            )
        )

    async def on_close(self, client_event_id: str | None) -> None:
        assert self.resource is not None
        await self.send(
            SessionClosedEvent(
                type="session.closed",
                event_id=self.server.new_id("event"),
                reason="close_requested",
                session=self.resource,
                usage=SessionUsage(seconds=float(int(self.input_ms / 1000))),
                client_event_id=client_event_id,
            )
        )
        await self.ws.close()

    # ---- the model -----------------------------------------------------------------------

    async def on_audio(self, mulaw: bytes) -> None:
        self.conn.audio_in += mulaw
        self.conn.audio_in_at.append(time.monotonic())
        self.conn.audio_in_ends.append(len(self.conn.audio_in))
        ms = len(mulaw) / 8
        self.input_ms += ms
        if self.input_ms >= self.next_usage_ms:
            self.next_usage_ms += 1000
            await self.send(
                SessionUsageUpdatedEvent(
                    type="session.usage.updated",
                    event_id=self.server.new_id("event"),
                    usage=SessionUsage(seconds=float(int(self.input_ms / 1000))),
                )
            )
        pcm = np.frombuffer(mulaw_to_pcm16(mulaw), dtype="<i2").astype(np.float64)
        level = 20 * math.log10(max(float(np.sqrt(np.mean(pcm**2))) / 32768.0, 1e-9)) if len(pcm) else -120.0
        voiced = level > self.opts.vad_threshold_dbfs
        if voiced:
            self.voiced_ms += ms
            self.silent_ms = 0.0
            self.turn_audio += mulaw
            if not self.in_speech and self.voiced_ms >= self.opts.vad_start_ms:
                self.in_speech = True
                self.yield_if_speaking()
                await self.caller_text("caller ")
        else:
            self.voiced_ms = 0.0
            self.silent_ms += ms
            if self.in_speech and self.silent_ms >= self.opts.vad_silence_ms:
                self.in_speech = False
                await self.end_of_caller_turn()

    async def caller_text(self, text: str) -> None:
        offset = self.offset_ms()
        await self.send(
            InputTranscriptDeltaEvent(
                type="session.input_transcript.delta",
                event_id=self.server.new_id("event"),
                delta=text,
                start_ms=offset,
                end_ms=offset,
            )
        )

    def yield_if_speaking(self) -> None:
        """Full duplex: the model stops mid-sentence when the caller talks over it."""
        if self.speaking is not None and not self.speaking.done() and self.current is not None:
            self.current.yielded = True
            self.current.yielded_at = time.monotonic()
            self.speaking.cancel()

    async def end_of_caller_turn(self) -> None:
        pcm = np.frombuffer(mulaw_to_pcm16(bytes(self.turn_audio)), dtype="<i2").astype(np.float64)
        self.turn_audio.clear()
        spectrum = np.abs(np.fft.rfft(pcm)) if len(pcm) else np.zeros(1)
        freq = round(float(np.argmax(spectrum)) * 8000 / max(len(pcm), 1))
        await self.caller_text(f"{freq} hertz")
        if self.opts.delegate == "client":
            await self.delegation("client")
        elif self.opts.delegate == "responses":
            delegation_id = await self.delegation("responses")
            await self.backend_function_call(delegation_id)
        else:
            self.say(cause="caller", text=f"you played {freq} hertz", hz=self.opts.tone_hz)

    async def delegation(self, target: Literal["client", "responses"]) -> str:
        delegation_id = self.server.new_id("deleg")
        await self.send(
            DelegationCreatedEvent(
                type="session.delegation.created",
                event_id=self.server.new_id("event"),
                offset_ms=self.offset_ms(),
                delegation=Delegation(
                    id=delegation_id,
                    target=target,
                    type="delegation",
                    response_id=self.server.new_id("resp") if target == "responses" else None,
                ),
            )
        )
        return delegation_id

    async def backend_function_call(self, delegation_id: str) -> None:
        call_id = self.server.new_id("call")
        self.pending_calls[call_id] = delegation_id
        item = ResponseFunctionToolCall(
            type="function_call",
            call_id=call_id,
            name=self.opts.tool_name,
            arguments=json.dumps(self.opts.tool_arguments),
            status="completed",
        )
        nested_done = ResponseOutputItemDoneEvent(
            type="response.output_item.done", item=item, output_index=0, sequence_number=1
        )
        response = Response.model_validate(
            {
                "id": self.server.new_id("resp"),
                "created_at": time.time(),
                "model": self.conn.session["delegation"]["responses"]["model"],
                "object": "response",
                "output": [],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "status": "completed",
            }
        )
        nested_completed = ResponseCompletedEvent(type="response.completed", response=response, sequence_number=2)
        for nested in (nested_done, nested_completed):
            await self.send(
                ResponseEvent(
                    type="response.event",
                    event_id=self.server.new_id("event"),
                    delegation_id=delegation_id,
                    event=nested.model_dump(mode="json", exclude_none=True),
                )
            )

    def say(self, *, cause: str, text: str, hz: float) -> None:
        self.yield_if_speaking()
        answer = SpokenAnswer(cause=cause, text=text, planned_ms=self.opts.response_ms)
        self.conn.answers.append(answer)
        self.current = answer
        self.speaking = asyncio.create_task(self.stream(answer, hz))

    async def stream(self, answer: SpokenAnswer, hz: float) -> None:
        opts = self.opts
        n = int(8000 * opts.response_ms / 1000)
        t = np.arange(n) / 8000
        amplitude = 32767 * 10 ** (opts.tone_dbfs / 20)
        audio = pcm16_to_mulaw((amplitude * np.sin(2 * math.pi * hz * t)).astype("<i2").tobytes())
        chunk = int(8 * opts.chunk_ms)
        words = answer.text.split()
        per_chunk = max(1, math.ceil(len(words) / max(1, n // chunk)))
        started = time.monotonic()
        for index, start in enumerate(range(0, len(audio), chunk)):
            self.conn.audio_out_at.append(time.monotonic())
            self.conn.audio_out_starts.append(self.conn.audio_out_bytes)
            self.conn.audio_out_bytes += len(audio[start : start + chunk])
            await self.send(
                OutputAudioDeltaEvent(
                    type="session.output_audio.delta",
                    delta=base64.b64encode(audio[start : start + chunk]).decode("ascii"),
                )
            )
            answer.said_ms += opts.chunk_ms
            spoken = words[index * per_chunk : (index + 1) * per_chunk]
            if spoken:
                offset = self.offset_ms()
                await self.send(
                    OutputTranscriptDeltaEvent(
                        type="session.output_transcript.delta",
                        event_id=self.server.new_id("event"),
                        delta=" ".join(spoken) + " ",
                        start_ms=offset,
                        end_ms=offset + opts.chunk_ms,
                    )
                )
            due = started + (index + 1) * opts.chunk_ms / 1000 / opts.speedup
            await asyncio.sleep(max(0.0, due - time.monotonic()))
