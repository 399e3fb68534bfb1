"""A protocol-faithful fake of the OpenAI Realtime GA WebSocket server, with a Grok dialect.

It speaks the real wire format (reference ``openai-realtime.md``; ``xai-grok-voice.md`` for
``dialect="grok"``) on 127.0.0.1 with an ephemeral port, so the production client code (the
``openai`` SDK's realtime connection for OpenAI, ``websockets`` for Grok) runs unchanged against it.

What it does, like the real service:
- checks ``Authorization: Bearer`` (HTTP 401 otherwise) and, for OpenAI, rejects the beta header;
- sends ``session.created`` first (Grok: ``conversation.created`` then ``session.created``),
  answers ``session.update`` with ``session.updated``, checking the dialect's session layout;
- runs an energy VAD on the caller audio in the session's input format (pcmu or 24 kHz PCM16),
  producing ``speech_started`` / ``speech_stopped`` / ``committed`` and a caller transcript that
  names the dominant frequency it heard;
- after the caller stops, streams an answer faster than real time: a sine tone in the session's
  output format as audio deltas, with transcript deltas/done and ``response.done``; a caller who
  starts speaking mid-answer cancels it (``interrupt_response``);
- validates ``conversation.item.truncate`` (int ``audio_end_ms`` not beyond the audio produced)
  and replies ``conversation.item.truncated`` or an ``error``;
- answers bad input (malformed JSON, unknown types, bad base64, a second active response,
  ``response.cancel`` with nothing active) with ``error`` events and keeps the session open;
- on cue (``tool_call``) answers the first caller turn with a ``function_call`` item and waits
  for ``function_call_output`` + ``response.create``.
Fault modes: refuse the handshake with an HTTP status, close mid-answer, never answer
``session.update``, or (``silent_tcp``) accept TCP and never speak HTTP at all.

Conformance (``tests.fakes.conformance``): in the OpenAI dialect every client frame received and
every server event sent is checked against ``openai.types.realtime``; Grok (no SDK) has its
client frames other than ``session.update`` (Grok's own layout) checked. Violations are kept in
:attr:`FakeRealtimeServer.conformance_errors` and fail the test when the fake closes, unless a
test sends malformed frames on purpose (``check_conformance=False``).

Everything received is recorded per connection so tests can assert on it: the decoded caller
audio (frequency, rate, format), truncates, session.update payloads, tool outputs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes import conformance
from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw

Dialect = Literal["openai", "grok"]

_FORMATS = {"audio/pcmu": ("pcmu", 8000), "audio/pcm": ("pcm", 24000)}


@dataclass
class ToolCue:
    """Answer the first caller turn (or text turn) with this function call."""

    name: str
    arguments: dict[str, Any]


@dataclass
class FakeOptions:
    dialect: Dialect = "openai"
    api_key: str = "test-key"
    tone_hz: float = 440.0
    tone_dbfs: float = -12.0
    response_ms: int = 1200
    chunk_ms: int = 40
    speedup: float = 8.0  # how much faster than real time answers stream
    vad_threshold_dbfs: float = -40.0
    vad_start_ms: int = 60
    vad_silence_ms: int = 300
    refuse_status: int | None = None
    never_update: bool = False
    close_after_chunks: int | None = None
    fault_once: bool = False  # close_after_chunks on the first connection only
    truncate_supported: bool = True  # Grok: False answers truncate with an error
    ping_interval_s: float = 0.25  # Grok only
    tool_call: ToolCue | None = None
    # What the caller "said": the transcript of every caller turn (default: the tone heard).
    caller_transcript: str | None = None
    # Third-party reports: PCM16 24 kHz sent although mu-law was asked for. "confirmed": the
    # session.updated says so; "silent": it confirms what was asked and sends PCM anyway.
    pcm_anyway: Literal["confirmed", "silent"] | None = None


@dataclass
class TruncateRecord:
    item_id: str
    content_index: Any
    audio_end_ms: Any
    at: float
    produced_ms: int | None
    accepted: bool


@dataclass
class ResponseRecord:
    response_id: str
    item_id: str
    produced_ms: int = 0
    status: str = "in_progress"
    transcript: str = ""


@dataclass
class FakeConnection:
    """One client connection and everything it sent."""

    headers: dict[str, str]
    path: str
    session_updates: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)  # all but appends
    audio_in: bytearray = field(default_factory=bytearray)
    # time.monotonic() of each audio append received / delta sent, and where its audio starts
    # and ends in the stream (bytes), so a benchmark can pair them with the caller's frames
    audio_in_at: list[float] = field(default_factory=list)
    audio_in_ends: list[int] = field(default_factory=list)
    audio_out_at: list[float] = field(default_factory=list)
    audio_out_starts: list[int] = field(default_factory=list)
    audio_out_bytes: int = 0
    input_format: str = "pcm"
    output_format: str = "pcm"
    truncates: list[TruncateRecord] = field(default_factory=list)
    responses: list[ResponseRecord] = field(default_factory=list)
    tool_outputs: list[dict[str, Any]] = field(default_factory=list)
    items_created: list[dict[str, Any]] = field(default_factory=list)
    errors_sent: list[dict[str, Any]] = field(default_factory=list)
    usage_sent: list[dict[str, Any]] = field(default_factory=list)  # each response.done's usage
    speech_started_at: list[float] = field(default_factory=list)
    closed: bool = False
    ws: ServerConnection | None = None

    @property
    def input_rate(self) -> int:
        return 8000 if self.input_format == "pcmu" else 24000

    def input_pcm(self) -> np.ndarray:
        """Caller audio as received, decoded to int16 at :attr:`input_rate`."""
        raw = bytes(self.audio_in)
        if self.input_format == "pcmu":
            raw = mulaw_to_pcm16(raw)
        return np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")

    def types(self) -> list[str]:
        return [m.get("type", "?") for m in self.received]


class FakeRealtimeServer:
    """``async with FakeRealtimeServer(FakeOptions(...)) as fake:`` then point the client at
    ``fake.base_url`` (``ws://127.0.0.1:PORT/v1``)."""

    def __init__(self, options: FakeOptions | None = None, *, silent_tcp: bool = False) -> None:
        self.options = options or FakeOptions()
        self.silent_tcp = silent_tcp
        self.connections: list[FakeConnection] = []
        self.port = 0
        self._server: Server | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: list[asyncio.StreamWriter] = []
        self._ids = itertools.count(1)
        self.check_conformance = True
        self.conformance_errors: list[str] = []

    def conformance(self, problem: str | None) -> None:
        if problem is not None and self.check_conformance:
            self.conformance_errors.append(problem)

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    @property
    def last(self) -> FakeConnection:
        return self.connections[-1]

    async def __aenter__(self) -> FakeRealtimeServer:
        if self.silent_tcp:
            self._tcp = await asyncio.start_server(self._silent, "127.0.0.1", 0)
            self.port = self._tcp.sockets[0].getsockname()[1]
        else:
            self._server = await serve(
                self._handle,
                "127.0.0.1",
                0,
                process_request=self._check_request,
                compression=None,
                max_size=16 * 2**20,
            )
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tcp is not None:
            for w in self._tcp_writers:
                w.close()
            self._tcp.close()
            await self._tcp.wait_closed()
        if self.conformance_errors and exc[0] is None:
            raise AssertionError(
                "frames that disagree with the openai SDK types:\n" + "\n".join(self.conformance_errors)
            )

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("fake: condition not reached in time")
            await asyncio.sleep(0.01)

    async def push(self, event: dict[str, Any]) -> None:
        """Send a server event to the latest connection (fatal errors, odd events)."""
        assert self.last.ws is not None
        await self.last.ws.send(json.dumps(event))

    async def drop(self, code: int = 1011) -> None:
        assert self.last.ws is not None
        await self.last.ws.close(code, "fake dropped the connection")

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    async def _silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_writers.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass

    # ---- handshake -----------------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        opts = self.options
        if opts.refuse_status is not None:
            return connection.respond(HTTPStatus(opts.refuse_status), "refused by fake\n")
        if request.headers.get("Authorization") != f"Bearer {opts.api_key}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid api key\n")
        path, _, query = request.path.partition("?")
        if path != "/v1/realtime":
            return connection.respond(HTTPStatus.NOT_FOUND, "no such path\n")
        if opts.dialect == "openai" and "model=" not in query:
            return connection.respond(HTTPStatus.BAD_REQUEST, "model required\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        conn = FakeConnection(headers=headers, path=ws.request.path, ws=ws)
        self.connections.append(conn)
        call = _FakeCall(self, conn, ws)
        try:
            await call.run()
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            await call.stop()


class _FakeCall:
    """Server-side state of one connection."""

    def __init__(self, server: FakeRealtimeServer, conn: FakeConnection, ws: ServerConnection) -> None:
        self.server = server
        self.opts = server.options
        self.conn = conn
        self.ws = ws
        self.session: dict[str, Any] = {"type": "realtime"}
        self.create_response = True
        self.interrupt_response = True
        self.items: dict[str, ResponseRecord] = {}  # assistant item id -> record
        self.active: ResponseRecord | None = None
        self.stream_task: asyncio.Task[None] | None = None
        self.ping_task: asyncio.Task[None] | None = None
        self.tool_used = False
        self.pending_call: str | None = None
        # VAD state over caller audio
        self.vad_buf = b""
        self.in_speech = False
        self.voiced_ms = 0
        self.silent_ms = 0
        self.audio_ms = 0
        self.turn_audio = bytearray()

    def new_id(self, prefix: str) -> str:
        return self.server._new_id(prefix)

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.new_id("event"))
        if self.opts.dialect == "openai":
            self.server.conformance(conformance.openai_server_event(event))
        await self.ws.send(json.dumps(event))

    async def error(self, code: str, message: str, client_event_id: Any = None, etype: str = "") -> None:
        error = {
            "type": etype or "invalid_request_error",
            "code": code,
            "message": message,
            "param": None,
            "event_id": client_event_id,
        }
        self.conn.errors_sent.append(error)
        await self.send({"type": "error", "error": error})

    async def stop(self) -> None:
        for task in (self.stream_task, self.ping_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def run(self) -> None:
        if self.opts.dialect == "openai" and "openai-beta" in self.conn.headers:
            # The beta shape is shut down (error code beta_api_shape_disabled).
            await self.error("beta_api_shape_disabled", "The Realtime Beta API is no longer supported.")
            await self.ws.close(1008, "beta_api_shape_disabled")
            return
        if self.opts.dialect == "grok":
            await self.send({"type": "conversation.created", "conversation": {"id": self.new_id("conv")}})
            self.ping_task = asyncio.create_task(self.pings())
        await self.send({"type": "session.created", "session": dict(self.session)})
        async for raw in self.ws:
            await self.on_message(raw)

    async def pings(self) -> None:
        while True:
            await asyncio.sleep(self.opts.ping_interval_s)
            await self.send({"type": "ping", "timestamp": int(time.time() * 1000)})

    async def on_message(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            await self.error("invalid_json", "The server could not parse the event as JSON with a 'type'.")
            return
        if kind != "input_audio_buffer.append":
            self.conn.received.append(msg)
        if self.opts.dialect == "openai" or kind != "session.update":
            self.server.conformance(conformance.openai_client_frame(msg))
        eid = msg.get("event_id")
        match kind:
            case "session.update":
                await self.on_session_update(msg.get("session") or {}, eid)
            case "input_audio_buffer.append":
                try:
                    audio = base64.b64decode(msg["audio"], validate=True)
                except (binascii.Error, ValueError, KeyError):
                    await self.error("invalid_value", "Invalid base64 audio.", eid)
                    return
                self.conn.audio_in_at.append(time.monotonic())
                self.conn.audio_in.extend(audio)
                self.conn.audio_in_ends.append(len(self.conn.audio_in))
                await self.vad(audio)
            case "conversation.item.create":
                await self.on_item_create(msg.get("item") or {}, eid)
            case "conversation.item.truncate":
                await self.on_truncate(msg, eid)
            case "response.create":
                if self.active is not None:
                    await self.error(
                        "conversation_already_has_active_response",
                        "Conversation already has an active response in progress.",
                        eid,
                    )
                    return
                self.start_response((msg.get("response") or {}).get("instructions"))
            case "response.cancel":
                if self.active is None:
                    await self.error("response_cancel_not_active", "Cancellation failed: no active response.", eid)
                    return
                await self.cancel_active("client_cancelled")
            case "input_audio_buffer.commit" | "input_audio_buffer.clear":
                pass
            case _:
                await self.error("invalid_value", f"Invalid value: '{kind}'. Unknown event type.", eid)

    # ---- session -------------------------------------------------------------------------

    async def on_session_update(self, session: dict[str, Any], eid: Any) -> None:
        self.conn.session_updates.append(session)
        problem = self.layout_problem(session)
        if problem:
            await self.error("unknown_parameter", problem, eid)
            return
        audio = session.get("audio") or {}
        for direction in ("input", "output"):
            fmt = (audio.get(direction) or {}).get("format")
            if fmt is None:
                continue
            if fmt.get("type") not in _FORMATS:
                await self.error("invalid_value", f"Unsupported audio format {fmt}.", eid)
                return
            if fmt["type"] == "audio/pcmu" and "rate" in fmt:
                await self.error("unknown_parameter", "Unknown parameter: 'rate' for audio/pcmu.", eid)
                return
            if fmt["type"] == "audio/pcm" and fmt.get("rate", 24000) != 24000 and self.opts.dialect == "openai":
                await self.error("invalid_value", "audio/pcm supports 24000 Hz only.", eid)
                return
            name = _FORMATS[fmt["type"]][0]
            if direction == "input":
                self.conn.input_format = name
            else:
                self.conn.output_format = name
        td = (
            session.get("turn_detection")
            if self.opts.dialect == "grok"
            else (audio.get("input") or {}).get("turn_detection")
        )
        if isinstance(td, dict):
            self.create_response = td.get("create_response", True)
            self.interrupt_response = td.get("interrupt_response", True)
        self.session.update(session)
        if self.opts.never_update:
            return
        confirmed = self.session
        if self.opts.pcm_anyway is not None:
            self.conn.output_format = "pcm"
            if self.opts.pcm_anyway == "confirmed":
                audio_out = {
                    **(self.session.get("audio") or {}).get("output", {}),
                    "format": {"type": "audio/pcm", "rate": 24000},
                }
                confirmed = {**self.session, "audio": {**(self.session.get("audio") or {}), "output": audio_out}}
        await self.send({"type": "session.updated", "session": confirmed})

    def layout_problem(self, session: dict[str, Any]) -> str | None:
        audio = session.get("audio") or {}
        if self.opts.dialect == "openai":
            if session.get("type") != "realtime":
                return "Missing required parameter: 'session.type'."
            for beta_key in ("modalities", "voice", "turn_detection", "input_audio_format", "temperature"):
                if beta_key in session:
                    return f"Unknown parameter: 'session.{beta_key}'."
            return None
        if "type" in session or "output_modalities" in session:
            return "Unknown parameter: 'session.type'."
        if "voice" in (audio.get("output") or {}) or "turn_detection" in (audio.get("input") or {}):
            return "voice and turn_detection belong at the top level of session."
        return None

    # ---- VAD -----------------------------------------------------------------------------

    async def vad(self, audio: bytes) -> None:
        """Energy VAD over 20 ms frames of the caller audio."""
        self.vad_buf += audio
        frame_bytes = 160 if self.conn.input_format == "pcmu" else 960
        while len(self.vad_buf) >= frame_bytes:
            frame, self.vad_buf = self.vad_buf[:frame_bytes], self.vad_buf[frame_bytes:]
            pcm16 = mulaw_to_pcm16(frame) if self.conn.input_format == "pcmu" else frame
            samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
            rms = math.sqrt(float(np.mean(samples**2))) if samples.size else 0.0
            dbfs = 20 * math.log10(max(rms, 1e-9) / 32768.0)
            self.audio_ms += 20
            voiced = dbfs > self.opts.vad_threshold_dbfs
            if self.in_speech:
                self.turn_audio.extend(pcm16)
                self.silent_ms = 0 if voiced else self.silent_ms + 20
                if self.silent_ms >= self.opts.vad_silence_ms:
                    await self.speech_stopped()
            else:
                self.voiced_ms = self.voiced_ms + 20 if voiced else 0
                if self.voiced_ms >= self.opts.vad_start_ms:
                    await self.speech_started()
                    self.turn_audio = bytearray(pcm16)

    async def speech_started(self) -> None:
        self.in_speech, self.silent_ms = True, 0
        self.conn.speech_started_at.append(time.monotonic())
        self.user_item = self.new_id("item")
        await self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": self.audio_ms - self.opts.vad_start_ms,
                "item_id": self.user_item,
            }
        )
        if self.active is not None and self.interrupt_response:
            await self.cancel_active("turn_detected")

    async def speech_stopped(self) -> None:
        self.in_speech, self.voiced_ms = False, 0
        item = self.user_item
        await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": self.audio_ms, "item_id": item})
        await self.send({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None})
        await self.send(
            {
                "type": "conversation.item.added",
                "item": {"id": item, "type": "message", "role": "user", "status": "completed", "content": []},
            }
        )
        heard = _dominant_hz(np.frombuffer(bytes(self.turn_audio), dtype="<i2"), self.conn.input_rate)
        text = self.opts.caller_transcript or f"caller tone {heard:.0f} hertz"
        if self.opts.dialect == "grok":
            # Partial transcripts: the cumulative .updated event and a completed-but-in-progress one.
            await self.send(
                {"type": "conversation.item.input_audio_transcription.updated", "item_id": item, "transcript": "caller"}
            )
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item,
                    "status": "in_progress",
                    "transcript": "caller tone",
                }
            )
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item,
                "content_index": 0,
                "transcript": text,
                "usage": {"type": "duration", "seconds": round(len(self.turn_audio) / 2 / self.conn.input_rate, 3)},
            }
        )
        if self.create_response and self.active is None:
            self.start_response(None)

    # ---- responses -----------------------------------------------------------------------

    def start_response(self, instructions: str | None) -> None:
        record = ResponseRecord(self.new_id("resp"), self.new_id("item"))
        self.active = record
        self.conn.responses.append(record)
        self.stream_task = asyncio.create_task(self.stream(record, instructions))

    async def stream(self, rec: ResponseRecord, instructions: str | None) -> None:
        opts, rid = self.opts, rec.response_id
        await self.send({"type": "response.created", "response": {"id": rid, "status": "in_progress", "output": []}})
        if opts.tool_call is not None and not self.tool_used and instructions is None:
            await self.function_call(rec)
            return
        await self.send(
            {
                "type": "response.output_item.added",
                "response_id": rid,
                "output_index": 0,
                "item": {
                    "id": rec.item_id,
                    "type": "message",
                    "role": "assistant",
                    "status": "in_progress",
                    "content": [],
                },
            }
        )
        self.items[rec.item_id] = rec
        if instructions:
            rec.transcript = instructions
        elif self.conn.tool_outputs and not rec.transcript:
            rec.transcript = f"the tool said {self.conn.tool_outputs[-1].get('output')}"
        else:
            rec.transcript = f"bot tone {opts.tone_hz:g} hertz"
        rate = 8000 if self.conn.output_format == "pcmu" else 24000
        chunks = max(1, opts.response_ms // opts.chunk_ms)
        words = rec.transcript.split()
        ids = {"response_id": rid, "item_id": rec.item_id, "output_index": 0, "content_index": 0}
        for n in range(chunks):
            pcm = _tone(opts.tone_hz, opts.tone_dbfs, rate, n * opts.chunk_ms, opts.chunk_ms)
            payload = pcm16_to_mulaw(pcm) if self.conn.output_format == "pcmu" else pcm
            self.conn.audio_out_at.append(time.monotonic())
            self.conn.audio_out_starts.append(self.conn.audio_out_bytes)
            self.conn.audio_out_bytes += len(payload)
            await self.send({"type": "response.output_audio.delta", **ids, "delta": base64.b64encode(payload).decode()})
            rec.produced_ms += opts.chunk_ms
            if n < len(words):
                await self.send({"type": "response.output_audio_transcript.delta", **ids, "delta": words[n] + " "})
            faulty = not opts.fault_once or self.conn is self.server.connections[0]
            if faulty and opts.close_after_chunks is not None and n + 1 >= opts.close_after_chunks:
                await self.ws.close(1011, "fake closed mid-response")
                return
            await asyncio.sleep(opts.chunk_ms / 1000 / opts.speedup)
        await self.send({"type": "response.output_audio.done", **ids})
        await self.send({"type": "response.output_audio_transcript.done", **ids, "transcript": rec.transcript})
        await self.send(
            {
                "type": "response.output_item.done",
                "response_id": rid,
                "output_index": 0,
                "item": {
                    "id": rec.item_id,
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_audio", "transcript": rec.transcript}],
                },
            }
        )
        await self.finish(rec, "completed")

    async def function_call(self, rec: ResponseRecord) -> None:
        assert self.opts.tool_call is not None
        self.tool_used = True
        call_id = self.new_id("call")
        self.pending_call = call_id
        args = json.dumps(self.opts.tool_call.arguments)
        item = {
            "id": rec.item_id,
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": self.opts.tool_call.name,
            "arguments": "",
        }
        rid = rec.response_id
        await self.send({"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": item})
        for part in (args[: len(args) // 2], args[len(args) // 2 :]):
            await self.send(
                {
                    "type": "response.function_call_arguments.delta",
                    "response_id": rid,
                    "output_index": 0,
                    "item_id": rec.item_id,
                    "call_id": call_id,
                    "delta": part,
                }
            )
        await self.send(
            {
                "type": "response.function_call_arguments.done",
                "response_id": rid,
                "output_index": 0,
                "item_id": rec.item_id,
                "call_id": call_id,
                "name": item["name"],
                "arguments": args,
            }
        )
        done_item = {**item, "status": "completed", "arguments": args}
        if self.opts.dialect == "grok":
            # xAI's examples show no item status here and run tools on arguments.done.
            done_item = {k: v for k, v in done_item.items() if k != "status"}
        await self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": done_item})
        await self.finish(rec, "completed", output=[done_item])

    async def finish(self, rec: ResponseRecord, status: str, reason: str | None = None, output: Any = None) -> None:
        rec.status = status
        if self.active is rec:
            self.active = None
        details = {"type": status, "reason": reason} if reason else None
        response: dict[str, Any] = {
            "id": rec.response_id,
            "status": status,
            "status_details": details,
            "output": output or [],
        }
        if self.opts.dialect == "openai":
            response["usage"] = self.usage(rec)
        await self.send({"type": "response.done", "response": response})

    def usage(self, rec: ResponseRecord) -> dict[str, Any]:
        """The response's tokens as OpenAI counts them (https://platform.openai.com/docs/guides/
        realtime-costs): 1 audio token per 100 ms of caller audio, 1 per 50 ms of bot audio;
        40 text tokens of instructions, 32 of them cached after the first response."""
        audio_in = int(len(self.turn_audio) / 2 / self.conn.input_rate * 10)
        audio_out = rec.produced_ms // 50
        text_out = len(rec.transcript.split())
        cached = 32 if len(self.conn.usage_sent) else 0
        usage = {
            "total_tokens": 40 + audio_in + text_out + audio_out,
            "input_tokens": 40 + audio_in,
            "output_tokens": text_out + audio_out,
            "input_token_details": {
                "text_tokens": 40,
                "audio_tokens": audio_in,
                "cached_tokens": cached,
                "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }
        self.conn.usage_sent.append(usage)
        return usage

    async def cancel_active(self, reason: str) -> None:
        rec = self.active
        if rec is None:
            return
        if self.stream_task is not None and self.stream_task is not asyncio.current_task():
            self.stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.stream_task
        await self.finish(rec, "cancelled", reason)

    # ---- items ---------------------------------------------------------------------------

    async def on_item_create(self, item: dict[str, Any], eid: Any) -> None:
        self.conn.items_created.append(item)
        kind = item.get("type")
        if kind == "function_call_output":
            if item.get("call_id") != self.pending_call or not isinstance(item.get("output"), str):
                await self.error("invalid_value", f"Unknown call_id {item.get('call_id')!r} or bad output.", eid)
                return
            self.conn.tool_outputs.append(item)
            self.pending_call = None
        elif kind == "message":
            role, content = item.get("role"), item.get("content") or []
            allowed = {"user": {"input_text", "input_audio"}, "assistant": {"output_text", "output_audio"}}
            if role not in allowed or not content or any(c.get("type") not in allowed[role] for c in content):
                await self.error("invalid_value", f"Invalid content for a {role} message: {content}.", eid)
                return
        else:
            await self.error("invalid_value", f"Unsupported item type {kind!r}.", eid)
            return
        item_id = item.get("id") or self.new_id("item")
        await self.send({"type": "conversation.item.added", "item": {**item, "id": item_id}, "previous_item_id": None})

    async def on_truncate(self, msg: dict[str, Any], eid: Any) -> None:
        item_id, end = msg.get("item_id"), msg.get("audio_end_ms")
        rec = self.items.get(item_id or "")
        produced = rec.produced_ms if rec else None
        ok = True
        if self.opts.dialect == "grok" and not self.opts.truncate_supported:
            ok = False
            await self.error("unsupported_event", "conversation.item.truncate is not supported.", eid)
        elif rec is None:
            ok = False
            await self.error("item_not_found", f"Item {item_id} not found or not an assistant audio item.", eid)
        elif not isinstance(end, int) or isinstance(end, bool) or end < 0:
            ok = False
            await self.error("invalid_type", "audio_end_ms must be a non-negative integer.", eid)
        elif end > rec.produced_ms:
            ok = False
            await self.error(
                "invalid_value", f"audio_end_ms {end} is longer than the audio ({rec.produced_ms} ms).", eid
            )
        self.conn.truncates.append(
            TruncateRecord(str(item_id), msg.get("content_index"), end, time.monotonic(), produced, ok)
        )
        if ok:
            await self.send(
                {"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0, "audio_end_ms": end}
            )


def _tone(freq: float, dbfs: float, rate: int, start_ms: int, ms: int) -> bytes:
    """A phase-continuous sine chunk (PCM16 LE) starting at ``start_ms`` into the tone."""
    n0 = rate * start_ms // 1000
    n = rate * ms // 1000
    t = (np.arange(n0, n0 + n)) / rate
    amp = 32767 * 10 ** (dbfs / 20)
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def _dominant_hz(pcm: np.ndarray, rate: int) -> float:
    if pcm.size < 64:
        return 0.0
    x = pcm.astype(np.float64) * np.hanning(pcm.size)
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum[1:]) + 1) * rate / pcm.size


@contextlib.asynccontextmanager
async def fake_realtime(options: FakeOptions | None = None, **kw: Any) -> AsyncIterator[FakeRealtimeServer]:
    async with FakeRealtimeServer(options, **kw) as server:
        yield server
