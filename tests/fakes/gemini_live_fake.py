"""A protocol-faithful fake of the Gemini Live WebSocket service, on 127.0.0.1 with TLS.

It speaks the Live API wire format (https://ai.google.dev/api/live) so the real google-genai
SDK can be pointed at it (``HttpOptions(base_url="https://127.0.0.1:PORT")``; the SDK always
uses ``wss``, hence the throwaway ``trustme`` CA whose PEM is :attr:`GeminiLiveFake.ca_file`):

- first frame ``{"setup": …}`` (recorded), answered with ``{"setupComplete": {}}``;
- ``realtimeInput`` / ``realtime_input`` audio in either base64 alphabet (the SDK sends the
  URL-safe one), with ``mimeType`` or ``mime_type``; the 16 kHz PCM is recorded and run
  through a simple energy VAD;
- after the caller's speech ends it answers: a 24 kHz PCM tone as ``serverContent.modelTurn``
  inline data, sent faster than real time, with ``outputTranscription`` words spread over the
  audio and the caller's ``inputTranscription``; then ``generationComplete`` and, once the
  answer would have finished *playing* (the service assumes real-time playback), the
  ``turnComplete`` with ``usageMetadata`` and, if enabled, a ``sessionResumptionUpdate``;
- caller speech before that ``turnComplete`` -> ``interrupted: true``, then ``turnComplete``;
- ``clientContent`` (history, greeting request) is recorded and a completed turn answered;
  one left incomplete (``turnComplete: false``) stops answers to realtime input, as the real
  service does (google-gemini/live-api-web-console#60); realtime text is answered, except
  while the caller is speaking, when it joins the caller's turn (or, with
  :attr:`answers_text_at_once`, is answered at once, over the caller); ``toolResponse`` answers a
  pending ``toolCall``;
- a 3.x model before 3.8 takes ``clientContent`` only as the opening history declared with
  ``historyConfig.initialHistoryInClientContent`` (else it closes with 1007) and does not
  answer that seed until fresh input arrives; 3.8 takes it at any time, and one without
  ``turnComplete`` joins the next turn instead of blocking answers;
- automatic activity detection off (``realtimeInputConfig.automaticActivityDetection.disabled``):
  the fake runs no VAD; ``activityStart`` opens the caller's turn (and interrupts a reply in
  progress), ``activityEnd`` closes it and only then is the turn answered; audio and text
  outside a turn are recorded and never answered. Activity signals sent while automatic
  detection is on close the socket with 1007, as the SDK's types say they "can only be sent if
  automatic (i.e. server-side) activity detection is disabled";
- cues: :meth:`go_away`, :meth:`close_active`, :meth:`send_raw`, :attr:`tool_call_next`;
- faults: :attr:`refuse_status` (HTTP error at the upgrade), :attr:`close_on_setup`
  (close code + reason instead of ``setupComplete``), :attr:`hang` (never answer setup);
- a setup carrying ``sessionResumption.handle`` continues the conversation the handle names
  (:class:`Conversation`), so tests can check that a renewed session kept its context; a 3.8
  model refuses (1011) a handle whose session still has its socket open.

Conformance (``tests.fakes.conformance``): every client message received (setup included) must
validate as ``google.genai.types.LiveClientMessage`` and every server message the fake sends as
``LiveServerMessage`` (:meth:`send_raw` excepted: it is for odd frames on purpose). Violations
are kept in :attr:`GeminiLiveFake.conformance_errors` and fail the test when the fake closes.

JSON goes out in binary frames, as the real service sends it (reference Addenda).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trustme
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes import conformance

IN_RATE = 16000
OUT_RATE = 24000
FRAME_MS = 20
# Gemini API: /ws/google.ai.generativelanguage.{v1beta|v1alpha}.GenerativeService.BidiGenerateContent;
# Vertex AI: /ws/google.cloud.aiplatform.{v1|v1beta1}.LlmBidiService/BidiGenerateContent (google-genai live.py).
GEMINI_API_PATH = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(v1beta|v1alpha)\.GenerativeService\.BidiGenerateContent$"
)
VERTEX_PATH = re.compile(r"^/ws/google\.cloud\.aiplatform\.(v1|v1beta1)\.LlmBidiService/BidiGenerateContent$")
_URLSAFE = str.maketrans("-_", "+/")


def decode_b64(text: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not."""
    text = text.translate(_URLSAFE)
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def pick(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """The service accepts both key casings (proto3 JSON mapping); so does the fake."""
    return obj[camel] if camel in obj else obj.get(snake)


def tone_pcm(freq_hz: float, ms: float, rate: int, amplitude: float = 8000.0) -> bytes:
    n = np.arange(int(rate * ms / 1000))
    return np.rint(amplitude * np.sin(2 * np.pi * freq_hz * n / rate)).astype("<i2").tobytes()


# What each completed turn reports (fixed figures, so a test can price them by hand).
USAGE_PER_TURN = {
    "promptTokenCount": 50,
    "responseTokenCount": 25,
    "totalTokenCount": 75,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 20}, {"modality": "AUDIO", "tokenCount": 30}],
    "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 25}],
}


@dataclass
class Conversation:
    """What one logical Gemini session remembers; resumption handles point at it."""

    id: str
    turns: list[tuple[str, str]] = field(default_factory=list)  # (role, text)


@dataclass
class FakeConnection:
    """One WebSocket connection as the fake saw it."""

    index: int
    path: str
    headers: Headers
    ws: ServerConnection
    setup: dict[str, Any] = field(default_factory=dict)
    conversation: Conversation | None = None
    resumed_from: str | None = None
    audio_in: bytearray = field(default_factory=bytearray)
    audio_in_at: list[float] = field(default_factory=list)  # time.monotonic() of each audio message
    audio_in_ends: list[int] = field(default_factory=list)  # len(audio_in) after it
    audio_out_at: list[float] = field(default_factory=list)  # ... of each modelTurn audio chunk sent
    audio_out_starts: list[int] = field(default_factory=list)  # bytes of audio sent before it
    audio_out_bytes: int = 0
    audio_mime_types: set[str] = field(default_factory=set)
    realtime_keys: set[str] = field(default_factory=set)
    client_contents: list[dict[str, Any]] = field(default_factory=list)
    client_content_pending: bool = False
    realtime_texts: list[str] = field(default_factory=list)
    texts_during_speech: list[str] = field(default_factory=list)
    tool_responses: list[dict[str, Any]] = field(default_factory=list)
    messages_in: list[dict[str, Any]] = field(default_factory=list)
    interruptions: int = 0
    turn_answered: bool = False  # answers_text_at_once: realtime text already answered this turn
    replies_started: int = 0
    generating: bool = False  # model audio of the current reply still being sent
    turns_completed: int = 0
    handles_sent: list[str] = field(default_factory=list)
    # activity signals (automatic activity detection off)
    activity: list[str] = field(default_factory=list)  # "start" / "end" / "audio" / "text", in order
    active: bool = False
    active_bytes: int = 0
    outside_activity_bytes: int = 0
    outside_activity_texts: list[str] = field(default_factory=list)
    # VAD state
    speaking: bool = False
    speech_frames: int = 0
    silent_frames: int = 0
    pending: bytearray = field(default_factory=bytearray)
    reply_task: asyncio.Task[None] | None = None
    tool_waiter: asyncio.Future[dict[str, Any]] | None = None

    @property
    def open(self) -> bool:
        return self.ws.close_code is None

    @property
    def wants_resumption(self) -> bool:
        return "sessionResumption" in self.setup or "session_resumption" in self.setup

    @property
    def version(self) -> tuple[int, int]:
        match = re.search(r"gemini-(\d+)(?:\.(\d+))?", str(self.setup.get("model", "")).split("/")[-1])
        return (int(match.group(1)), int(match.group(2) or 0)) if match else (0, 0)

    @property
    def restricted_client_content(self) -> bool:
        """3.x previews before 3.8 take clientContent only as declared opening history."""
        return self.version[0] == 3 and self.version[1] < 8

    @property
    def incomplete_content_waits(self) -> bool:
        """3.8: clientContent without turnComplete waits for what follows (joins the next turn)."""
        return self.version >= (3, 8)

    @property
    def manual_activity(self) -> bool:
        """The client marks the caller's turns (automatic activity detection disabled)."""
        config = pick(self.setup, "realtimeInputConfig", "realtime_input_config") or {}
        detection = pick(config, "automaticActivityDetection", "automatic_activity_detection") or {}
        return bool(detection.get("disabled"))

    @property
    def declared_history(self) -> bool:
        history = pick(self.setup, "historyConfig", "history_config") or {}
        return bool(pick(history, "initialHistoryInClientContent", "initial_history_in_client_content"))


class GeminiLiveFake:
    """Run with ``async with GeminiLiveFake() as fake:``; see the module docstring."""

    def __init__(
        self,
        *,
        reply_ms: float = 800.0,
        reply_freqs: tuple[float, ...] = (600.0,),
        reply_words: int = 12,
        chunk_ms: float = 40.0,
        chunk_interval_s: float = 0.002,
        vad_threshold: float = 800.0,
        silence_ms: float = 300.0,
        min_speech_ms: float = 60.0,
        amplitude: float = 8000.0,
        out_mime: str = f"audio/pcm;rate={OUT_RATE}",
        binary_frames: bool = True,
    ) -> None:
        self.reply_ms = reply_ms
        self.reply_freqs = reply_freqs
        self.reply_words = reply_words
        self.chunk_ms = chunk_ms
        self.chunk_interval_s = chunk_interval_s
        self.vad_threshold = vad_threshold
        self.silence_frames = max(1, int(silence_ms / FRAME_MS))
        self.min_speech_frames = max(1, int(min_speech_ms / FRAME_MS))
        self.amplitude = amplitude
        self.out_mime = out_mime
        self.binary_frames = binary_frames
        # faults and cues
        self.refuse_status: int | None = None
        self.close_on_setup: tuple[int, str] | None = None
        self.hang = False
        self.tool_call_next: tuple[str, dict[str, Any]] | None = None
        # Whether realtime text that arrives while the caller talks closes the caller's turn
        # and is answered at once (over the caller, if they go on talking) or joins the
        # caller's turn, answered when they stop; the service does not document which.
        self.answers_text_at_once = False
        # records
        self.setups: list[dict[str, Any]] = []
        self.connections: list[FakeConnection] = []
        self.conversations: dict[str, Conversation] = {}
        self.handles: dict[str, str] = {}  # handle -> conversation id
        self.replies = 0
        self.conformance_errors: list[str] = []
        self.refused_resumptions = 0
        self._ids = itertools.count(1)
        self._ca = trustme.CA()
        self._cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._tmp = tempfile.TemporaryDirectory(prefix="gemini-fake-")
        self.ca_file = str(Path(self._tmp.name) / "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)
        self._server: Server | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> GeminiLiveFake:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self.conformance_errors and exc[0] is None:
            raise AssertionError(
                "messages that disagree with google.genai.types:\n" + "\n".join(self.conformance_errors)
            )

    def _conformance(self, problem: str | None) -> None:
        if problem is not None:
            self.conformance_errors.append(problem)

    async def start(self) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(ctx)
        self._server = await serve(
            self._handle, "127.0.0.1", 0, ssl=ctx, process_request=self._process_request, max_size=None
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for conn in self.connections:
            if conn.reply_task is not None:
                conn.reply_task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._tmp.cleanup()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client_ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    # -- views for tests --------------------------------------------------------------------

    @property
    def last(self) -> FakeConnection:
        return self.connections[-1]

    def audio_in(self) -> np.ndarray:
        """Every 16 kHz sample any connection received, as int16."""
        data = b"".join(bytes(c.audio_in) for c in self.connections)
        return np.frombuffer(data, dtype="<i2")

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("fake Gemini: condition not met in time")
            await asyncio.sleep(0.01)

    # -- cues -------------------------------------------------------------------------------

    async def go_away(self, time_left: str = "10s", *, close_after: float | None = None) -> None:
        """Announce the end of the newest connection, with a fresh resumption handle first
        (the service sends handles regularly; a client holds the newest when goAway comes).
        While the model is generating the session cannot be resumed at that point: the update
        then says ``resumable: false`` with no handle (``SessionResumptionUpdate``,
        https://ai.google.dev/api/live), and a resumable one follows the generation."""
        conn = self.last
        if conn.wants_resumption:
            await self._send_handle(conn)
        await self._send(conn, {"goAway": {"timeLeft": time_left}})
        if close_after is not None:
            asyncio.get_running_loop().call_later(
                close_after, lambda: asyncio.ensure_future(self._close(conn, 1011, "connection lifetime over"))
            )

    async def close_active(self, code: int = 1011, reason: str = "Internal error encountered.") -> None:
        await self._close(self.last, code, reason)

    async def send_raw(self, message: dict[str, Any] | str) -> None:
        conn = self.last
        await conn.ws.send(message if isinstance(message, str) else json.dumps(message))

    # -- protocol ---------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.refuse_status is not None:
            return connection.respond(self.refuse_status, "Service Unavailable\n")
        path = request.path.split("?")[0]
        if VERTEX_PATH.match(path):
            # Vertex authenticates with an OAuth bearer token, never an API key.
            if not (request.headers.get("Authorization") or "").startswith("Bearer "):
                return connection.respond(401, "Vertex AI needs an OAuth bearer token\n")
            return None
        if not GEMINI_API_PATH.match(path):
            return connection.respond(404, f"no Live endpoint at {request.path}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = FakeConnection(-1, ws.request.path, ws.request.headers, ws)
        try:
            first = json.loads(await ws.recv())
            self._conformance(conformance.gemini_client_message(first))
            conn.setup = first["setup"]
            self.setups.append(conn.setup)
            # The connection is listed only once its setup is read and resolved (resumed or
            # not), in the same event-loop turn: a test that waits for a new connection can
            # then read what it asked for at once.
            resumption = pick(conn.setup, "sessionResumption", "session_resumption") or {}
            handle = resumption.get("handle")
            conversation_id = self.handles.get(handle) if handle else f"conv-{next(self._ids)}"
            if conversation_id is not None:
                conn.resumed_from = handle or None
                conn.conversation = self.conversations.setdefault(conversation_id, Conversation(conversation_id))
            conn.index = len(self.connections)
            self.connections.append(conn)
            if self.hang:
                await ws.wait_closed()
                return
            if self.close_on_setup is not None:
                await ws.close(*self.close_on_setup)
                return
            if conversation_id is None:
                await ws.close(1008, "session resumption handle is invalid")
                return
            if (
                handle
                and conn.version >= (3, 8)
                and any(c.open and c is not conn and c.conversation is conn.conversation for c in self.connections)
            ):
                # 3.8 resumes a session only once its old socket has closed.
                self.refused_resumptions += 1
                await ws.close(1011, "The session to resume is still connected.")
                return
            await self._send(conn, {"setupComplete": {}})
            async for raw in ws:
                message = json.loads(raw)
                self._conformance(conformance.gemini_client_message(message))
                await self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            if conn.reply_task is not None:
                conn.reply_task.cancel()

    async def _send(self, conn: FakeConnection, message: dict[str, Any]) -> None:
        self._conformance(conformance.gemini_server_message(message))
        text = json.dumps(message)
        await conn.ws.send(text.encode() if self.binary_frames else text)

    async def _close(self, conn: FakeConnection, code: int, reason: str) -> None:
        if conn.reply_task is not None:
            conn.reply_task.cancel()
        await conn.ws.close(code, reason)

    async def _on_message(self, conn: FakeConnection, message: dict[str, Any]) -> None:
        conn.messages_in.append(message)
        realtime = pick(message, "realtimeInput", "realtime_input")
        if realtime is not None:
            conn.realtime_keys.add("realtimeInput" if "realtimeInput" in message else "realtime_input")
            await self._on_realtime(conn, realtime)
        content = pick(message, "clientContent", "client_content")
        if content is not None:
            await self._on_client_content(conn, content)
        response = pick(message, "toolResponse", "tool_response")
        if response is not None:
            conn.tool_responses.append(response)
            if conn.tool_waiter is not None and not conn.tool_waiter.done():
                conn.tool_waiter.set_result(response)

    async def _on_client_content(self, conn: FakeConnection, content: dict[str, Any]) -> None:
        opening = len(conn.messages_in) == len(conn.client_contents) + 1  # nothing else sent yet
        conn.client_contents.append(content)
        complete = bool(pick(content, "turnComplete", "turn_complete"))
        if conn.restricted_client_content and not (opening and conn.declared_history and complete):
            await conn.ws.close(1007, "Request contains an invalid argument.")
            return
        for turn in content.get("turns") or []:
            text = "".join(part.get("text", "") for part in turn.get("parts", []))
            self._remember(conn, "caller" if turn.get("role", "user") == "user" else "bot", text)
        conn.client_content_pending = not complete and not conn.incomplete_content_waits
        if complete and not conn.restricted_client_content:  # 3.1 waits for fresh input after the seed
            self._start_reply(conn, "client content")

    async def _on_realtime(self, conn: FakeConnection, realtime: dict[str, Any]) -> None:
        start = pick(realtime, "activityStart", "activity_start") is not None
        end = pick(realtime, "activityEnd", "activity_end") is not None
        if (start or end) and not conn.manual_activity:
            await conn.ws.close(1007, "Activity signals need automatic activity detection disabled.")
            return
        if start:
            conn.activity.append("start")
            conn.active = True
            conn.active_bytes = 0
            await self._speech_started(conn)
        blobs = []
        if realtime.get("audio") is not None:
            blobs.append(realtime["audio"])
        blobs.extend(pick(realtime, "mediaChunks", "media_chunks") or [])
        for blob in blobs:
            mime = pick(blob, "mimeType", "mime_type") or ""
            conn.audio_mime_types.add(mime)
            pcm = decode_b64(blob["data"])
            conn.audio_in_at.append(time.monotonic())
            conn.audio_in.extend(pcm)
            conn.audio_in_ends.append(len(conn.audio_in))
            if not conn.manual_activity:
                await self._vad(conn, pcm)
            elif conn.active:
                if conn.activity[-1:] != ["audio"]:
                    conn.activity.append("audio")
                conn.active_bytes += len(pcm)
            else:
                conn.outside_activity_bytes += len(pcm)
        text = realtime.get("text")
        if text and conn.manual_activity:
            conn.realtime_texts.append(text)
            if conn.active:
                conn.activity.append("text")
                conn.texts_during_speech.append(text)
                self._remember(conn, "caller", text)
            else:
                conn.outside_activity_texts.append(text)  # no turn: the service ignores it
        elif text:
            conn.realtime_texts.append(text)
            self._remember(conn, "caller", text)
            if conn.speaking:
                conn.texts_during_speech.append(text)
                if not self.answers_text_at_once:
                    return  # joins the open user turn, answered when the caller stops
                conn.turn_answered = True  # the text closed the caller's turn: answered now
            self._start_reply(conn, f"text {text!r}")
        if end:
            conn.activity.append("end")
            conn.active = False
            await self._speech_ended(conn, round(conn.active_bytes / 2 / IN_RATE * 1000))

    def _remember(self, conn: FakeConnection, role: str, text: str) -> None:
        if conn.conversation is not None and text:
            conn.conversation.turns.append((role, text))

    async def _vad(self, conn: FakeConnection, pcm: bytes) -> None:
        conn.pending.extend(pcm)
        frame_bytes = IN_RATE * FRAME_MS // 1000 * 2
        while len(conn.pending) >= frame_bytes:
            frame = np.frombuffer(bytes(conn.pending[:frame_bytes]), dtype="<i2").astype(np.float64)
            del conn.pending[:frame_bytes]
            loud = float(np.sqrt(np.mean(frame**2))) > self.vad_threshold
            if loud:
                conn.silent_frames = 0
                conn.speech_frames += 1
                if not conn.speaking and conn.speech_frames >= self.min_speech_frames:
                    conn.speaking = True
                    await self._speech_started(conn)
            elif conn.speaking:
                conn.silent_frames += 1
                if conn.silent_frames >= self.silence_frames:
                    speech_ms = conn.speech_frames * FRAME_MS
                    conn.speaking = False
                    conn.speech_frames = 0
                    conn.silent_frames = 0
                    await self._speech_ended(conn, speech_ms)
            else:
                conn.speech_frames = 0

    async def _speech_started(self, conn: FakeConnection) -> None:
        task = conn.reply_task
        if task is not None and not task.done():
            task.cancel()
            conn.interruptions += 1
            # Interrupted turns end "interrupted > turn_complete", no generationComplete.
            await self._send(conn, {"serverContent": {"interrupted": True}})
            await self._send(conn, {"serverContent": {"turnComplete": True}})

    async def _speech_ended(self, conn: FakeConnection, speech_ms: int) -> None:
        words = f"caller spoke for {speech_ms} milliseconds"
        self._remember(conn, "caller", words)
        await self._send(conn, {"serverContent": {"inputTranscription": {"text": words, "finished": True}}})
        if conn.turn_answered:
            conn.turn_answered = False  # answered already, when the text arrived
            return
        self._start_reply(conn, "speech")

    def _start_reply(self, conn: FakeConnection, cause: str) -> None:
        if conn.client_content_pending:
            return  # live-api-web-console#60: waits for a completing clientContent
        if conn.reply_task is not None and not conn.reply_task.done():
            conn.reply_task.cancel()
        conn.reply_task = asyncio.ensure_future(self._reply(conn, cause))

    async def _reply(self, conn: FakeConnection, cause: str) -> None:
        conn.replies_started += 1
        if self.tool_call_next is not None:
            name, args = self.tool_call_next
            self.tool_call_next = None
            call_id = f"fc-{next(self._ids)}"
            conn.tool_waiter = asyncio.get_running_loop().create_future()
            await self._send(conn, {"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args}]}})
            response = await conn.tool_waiter
            result = response["functionResponses"][0]["response"]
            text = f"the tool said {json.dumps(result, sort_keys=True)}"
        else:
            text = " ".join(f"word{i:02d}" for i in range(1, self.reply_words + 1))
        freq = self.reply_freqs[self.replies % len(self.reply_freqs)]
        self.replies += 1
        await self._speak(conn, text, freq)

    async def _speak(self, conn: FakeConnection, text: str, freq: float) -> None:
        started = time.monotonic()
        pcm = tone_pcm(freq, self.reply_ms, OUT_RATE, self.amplitude)
        chunk_bytes = int(OUT_RATE * self.chunk_ms / 1000) * 2
        chunks = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm), chunk_bytes)]
        words = text.split()
        said = 0
        conn.generating = True
        try:
            for n, chunk in enumerate(chunks, start=1):
                content: dict[str, Any] = {
                    "modelTurn": {
                        "parts": [{"inlineData": {"mimeType": self.out_mime, "data": base64.b64encode(chunk).decode()}}]
                    }
                }
                upto = round(len(words) * n / len(chunks))
                if upto > said:
                    content["outputTranscription"] = {"text": " " + " ".join(words[said:upto])}
                    said = upto
                conn.audio_out_at.append(time.monotonic())
                conn.audio_out_starts.append(conn.audio_out_bytes)
                conn.audio_out_bytes += len(chunk)
                await self._send(conn, {"serverContent": content})
                await asyncio.sleep(self.chunk_interval_s)
        finally:
            conn.generating = False
        await self._send(conn, {"serverContent": {"generationComplete": True}})
        # What the model generated is in its context from here on, and a handle issued now
        # resumes a conversation that holds it.
        self._remember(conn, "bot", text)
        if conn.wants_resumption:
            await self._send_handle(conn)
        # The service assumes the client plays the answer in real time and completes the turn
        # when playback should be over; a barge-in before then is an interruption.
        await asyncio.sleep(max(0.0, self.reply_ms / 1000 - (time.monotonic() - started)))
        await self._send(
            conn,
            {
                "serverContent": {"turnComplete": True},
                # google.genai.types.UsageMetadata, split by modality (ModalityTokenCount)
                "usageMetadata": USAGE_PER_TURN,
            },
        )
        if conn.wants_resumption:
            await self._send_handle(conn)
        conn.turns_completed += 1

    async def _send_handle(self, conn: FakeConnection) -> None:
        assert conn.conversation is not None
        if conn.generating:
            await self._send(conn, {"sessionResumptionUpdate": {"resumable": False}})
            return
        handle = f"handle-{conn.conversation.id}-{next(self._ids)}"
        self.handles[handle] = conn.conversation.id
        await self._send(conn, {"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})
        conn.handles_sent.append(handle)  # once on the wire, so a test may close right after
