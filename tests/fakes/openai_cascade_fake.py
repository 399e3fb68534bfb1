"""Protocol-faithful loopback fakes of the three OpenAI services a cascade uses.

- :class:`FakeTranscription`: the Realtime WebSocket with ``intent=transcription``. It answers
  ``session.created`` -> ``session.update`` (validated as the SDK's ``SessionUpdateEvent`` with a
  ``RealtimeTranscriptionSessionCreateRequest``) -> ``session.updated``; runs an energy VAD on the
  mu-law it receives and sends ``input_audio_buffer.speech_started`` / ``speech_stopped`` /
  ``committed`` and ``conversation.item.input_audio_transcription.completed`` whose transcript is
  the next scripted line, or names the caller's dominant frequency ("tone 440 hertz"). Every
  event it sends is validated against the SDK's ``RealtimeServerEvent`` union first.
- :class:`FakeOpenAIHttp`: ``POST /v1/chat/completions`` (``stream=True``: SSE chunks, each
  validated as ``ChatCompletionChunk``; the request body validated as the SDK's
  ``CompletionCreateParamsStreaming``) answering from a script of replies (text and/or one tool
  call), and ``POST /v1/audio/speech`` (body validated as ``SpeechCreateParams``) streaming
  ``pcm`` (24 kHz PCM16) in which every word is a tone burst of its own frequency
  (:func:`word_hz`), :data:`WORD_MS` long with :data:`GAP_MS` of silence after it, paced faster
  than real time; it records whether the client abandoned the stream and how many chunks it
  sent. The caller can thus tell from the audio which words they heard, and at what rate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from openai.types.audio.speech_create_params import SpeechCreateParams
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from openai.types.realtime import RealtimeServerEvent, SessionUpdateEvent
from openai.types.realtime.realtime_transcription_session_create_request import (
    RealtimeTranscriptionSessionCreateRequest,
)
from openai.types.responses import ResponseStreamEvent
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.fakes.twilio_rest_fake import loopback_server
from tests.support.audio import dominant_frequency
from transcoding.levels import frame_dbfs
from transcoding.mulaw import mulaw_to_pcm16

SPEECH_RATE = 24000
WORD_MS = 200
GAP_MS = 50
SPEECH_CHUNK_MS = 40

_server_events: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
_chat_request: TypeAdapter[Any] = TypeAdapter(CompletionCreateParamsStreaming)
_speech_request: TypeAdapter[Any] = TypeAdapter(SpeechCreateParams)
_responses_request: TypeAdapter[Any] = TypeAdapter(ResponseCreateParamsStreaming)
_responses_event: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def word_hz(word: str) -> float:
    """The tone a word is spoken as: 500-2400 Hz in 100 Hz steps, from the word's letters."""
    key = "".join(ch for ch in word.lower() if ch.isalnum())
    return 500.0 + 100.0 * (zlib.crc32(key.encode()) % 20)


def speech_pcm(text: str, rate: int = SPEECH_RATE) -> bytes:
    parts: list[np.ndarray] = []
    for word in text.split():
        n = rate * WORD_MS // 1000
        parts.append(0.25 * 32767 * np.sin(2 * np.pi * word_hz(word) * np.arange(n) / rate))
        parts.append(np.zeros(rate * GAP_MS // 1000))
    return np.concatenate(parts).astype("<i2").tobytes() if parts else b""


# -- transcription ----------------------------------------------------------------------------


@dataclass
class TranscriptionConnection:
    path: str
    headers: dict[str, str]
    session: RealtimeTranscriptionSessionCreateRequest | None = None
    audio_in: bytearray = field(default_factory=bytearray)
    sent: list[dict[str, Any]] = field(default_factory=list)
    speech_started_at: list[float] = field(default_factory=list)
    completed_at: list[float] = field(default_factory=list)  # when each turn's transcript went out
    audio_in_at: list[float] = field(default_factory=list)  # arrival of each append (bench)
    audio_in_ends: list[int] = field(default_factory=list)  # bytes received up to each append
    ws: ServerConnection | None = None


class FakeTranscription:
    def __init__(
        self, transcripts: list[str] | None = None, *, refuse_status: int | None = None, label_calls: bool = False
    ) -> None:
        self.transcripts = list(transcripts or [])
        self.refuse_status = refuse_status
        # Transcripts name the connection ("call 3"), so the answer's speech can be traced back
        # to its call (the load benchmark pairs audio per call).
        self.label_calls = label_calls
        self.connections: list[TranscriptionConnection] = []
        self._server: Server | None = None
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1"

    async def __aenter__(self) -> FakeTranscription:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._check)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _check(self, connection: ServerConnection, request: Any) -> Any:
        if self.refuse_status is not None:
            return connection.respond(self.refuse_status, "refused\n")
        if request.headers.get("Authorization") != "Bearer test-key":
            return connection.respond(401, "bad key\n")
        if "intent=transcription" not in request.path or not request.path.startswith("/v1/realtime"):
            return connection.respond(400, "not a transcription session\n")
        return None

    async def _send(self, conn: TranscriptionConnection, event: dict[str, Any]) -> None:
        event = {"event_id": f"event_{next(self._ids)}", **event}
        _server_events.validate_python(event)  # the SDK would parse exactly this
        conn.sent.append(event)
        assert conn.ws is not None
        await conn.ws.send(json.dumps(event))

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        conn = TranscriptionConnection(ws.request.path, dict(ws.request.headers), ws=ws)
        self.connections.append(conn)
        session = {"type": "transcription", "id": "sess_1", "object": "realtime.transcription_session"}
        await self._send(conn, {"type": "session.created", "session": session})
        speaking, voiced_ms, silent_ms = False, 0, 0
        utterance = bytearray()
        frame = b""
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "session.update":
                    update = SessionUpdateEvent.model_validate(msg)
                    assert isinstance(update.session, RealtimeTranscriptionSessionCreateRequest), update.session
                    conn.session = update.session
                    await self._send(conn, {"type": "session.updated", "session": msg["session"]})
                    continue
                assert msg["type"] == "input_audio_buffer.append", msg["type"]
                assert conn.session is not None, "audio before session.update"
                audio = base64.b64decode(msg["audio"], validate=True)
                conn.audio_in += audio
                conn.audio_in_at.append(time.monotonic())
                conn.audio_in_ends.append(len(conn.audio_in))
                frame += audio
                while len(frame) >= 160:  # 20 ms of mu-law
                    chunk, frame = frame[:160], frame[160:]
                    voiced = frame_dbfs(mulaw_to_pcm16(chunk)) > -40
                    if speaking:
                        utterance += chunk
                        silent_ms = 0 if voiced else silent_ms + 20
                        if silent_ms >= 300:
                            speaking = False
                            await self._end_turn(conn, bytes(utterance))
                        continue
                    voiced_ms = voiced_ms + 20 if voiced else 0
                    if voiced_ms >= 60:
                        speaking, silent_ms, utterance = True, 0, bytearray(chunk)
                        conn.speech_started_at.append(time.monotonic())
                        await self._send(
                            conn, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item"}
                        )

    async def _end_turn(self, conn: TranscriptionConnection, utterance: bytes) -> None:
        item = f"item_{next(self._ids)}"
        await self._send(conn, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0, "item_id": item})
        await self._send(conn, {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None})
        if self.label_calls:
            text = f"call {self.connections.index(conn)}"
        elif self.transcripts:
            text = self.transcripts.pop(0)
        else:
            pcm = np.frombuffer(mulaw_to_pcm16(utterance), dtype="<i2")
            text = f"tone {round(dominant_frequency(pcm, 8000) / 10) * 10} hertz"
        conn.completed_at.append(time.monotonic())
        await self._send(
            conn,
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item,
                "content_index": 0,
                "transcript": text,
                "usage": {"type": "duration", "seconds": len(utterance) / 8000},
            },
        )


# -- chat completions and speech --------------------------------------------------------------


@dataclass
class ChatReply:
    """One scripted answer: text (streamed a few characters at a time), then maybe a tool call."""

    text: str = ""
    tool: tuple[str, dict[str, Any]] | None = None
    delay_s: float = 0.0  # "thinking" before the first chunk
    chunk_gap_s: float = 0.005  # between content chunks of 7 characters


@dataclass
class ChatStream:
    received_at: float
    chunks: list[tuple[float, str]] = field(default_factory=list)  # (sent at, content)


@dataclass
class SpeechStream:
    text: str
    received_at: float = field(default_factory=time.monotonic)
    chunks_sent: int = 0
    completed: bool = False
    abandoned_at: float | None = None
    chunk_times: list[float] = field(default_factory=list)
    chunk_starts: list[int] = field(default_factory=list)  # bytes of this stream before each chunk
    bytes_sent: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # completed or abandoned


@dataclass(frozen=True)
class TokenUse:
    """A made-up but deterministic token count: a quarter of the request's characters in, a
    quarter of the answer's out; after the first request, 64 of the input as cached."""

    input: int
    cached: int
    output: int


class FakeOpenAIHttp:
    def __init__(
        self, replies: list[ChatReply] | None = None, *, speedup: float = 4.0, default_reply: str = "You said {user}."
    ) -> None:
        self.replies = list(replies or [])
        self.speedup = speedup
        self.default_reply = default_reply  # once the scripted replies are used up
        self.fail_status: int | None = None  # chat requests answered with this HTTP error
        self.chat_requests: list[dict[str, Any]] = []
        self.responses_requests: list[dict[str, Any]] = []
        self.chat_streams: list[ChatStream] = []
        self.speech_requests: list[dict[str, Any]] = []
        self.speech_streams: list[SpeechStream] = []
        self.usage_sent: list[TokenUse] = []  # the token count of each model request, as sent
        self.base_url = ""
        self._stack = contextlib.AsyncExitStack()
        self._ids = itertools.count(1)

    async def __aenter__(self) -> FakeOpenAIHttp:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/responses", self._responses, methods=["POST"]),
                Route("/v1/audio/speech", self._speech, methods=["POST"]),
            ]
        )
        self.base_url = await self._stack.enter_async_context(loopback_server(app)) + "/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == "Bearer test-key"

    async def _chat(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, 401)
        received_at = time.monotonic()
        body = await request.json()
        _chat_request.validate_python(body)
        self.chat_requests.append(body)
        if self.fail_status is not None:
            error = {"message": "the fake failed", "type": "server_error", "code": None, "param": None}
            return JSONResponse({"error": error}, self.fail_status)
        stream = ChatStream(received_at)
        self.chat_streams.append(stream)
        reply = self.replies.pop(0) if self.replies else ChatReply(self.default_reply.format(user=_last_user(body)))
        use = (
            self._token_use(body["messages"], reply)
            if (body.get("stream_options") or {}).get("include_usage")
            else None
        )
        return StreamingResponse(self._chat_stream(reply, stream, use), media_type="text/event-stream")

    def _token_use(self, prompt: Any, reply: ChatReply) -> TokenUse:
        given = len(json.dumps(prompt)) // 4
        made = (len(reply.text) + len(json.dumps(reply.tool or ""))) // 4 + 1
        return TokenUse(given, min(64, given) if self.usage_sent else 0, made)

    async def _chat_stream(self, reply: ChatReply, log: ChatStream, use: TokenUse | None) -> AsyncIterator[bytes]:
        ident, created = f"chatcmpl-{next(self._ids)}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": "fake-chat",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            ChatCompletionChunk.model_validate(body)
            return f"data: {json.dumps(body)}\n\n".encode()

        await asyncio.sleep(reply.delay_s)
        yield chunk({"role": "assistant", "content": ""})
        for start in range(0, len(reply.text), 7):
            log.chunks.append((time.monotonic(), reply.text[start : start + 7]))
            yield chunk({"content": reply.text[start : start + 7]})
            await asyncio.sleep(reply.chunk_gap_s)
        if reply.tool is not None:
            name, arguments = reply.tool
            raw = json.dumps(arguments)
            call = {"index": 0, "id": f"call_{next(self._ids)}", "type": "function"}
            yield chunk({"tool_calls": [{**call, "function": {"name": name, "arguments": ""}}]})
            for start in range(0, len(raw), 5):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": raw[start : start + 5]}}]})
        yield chunk({}, "tool_calls" if reply.tool else "stop")
        if use is not None:  # stream_options.include_usage: one more chunk, no choices
            usage = {
                "prompt_tokens": use.input,
                "completion_tokens": use.output,
                "total_tokens": use.input + use.output,
                "prompt_tokens_details": {"cached_tokens": use.cached},
            }
            body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": "fake-chat"}
            last = {**body, "choices": [], "usage": usage}
            ChatCompletionChunk.model_validate(last)
            self.usage_sent.append(use)
            yield f"data: {json.dumps(last)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def _responses(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, 401)
        body = await request.json()
        _responses_request.validate_python(body)
        self.responses_requests.append(body)
        users = [i["content"] for i in body["input"] if i.get("role") == "user"]
        reply = self.replies.pop(0) if self.replies else ChatReply(self.default_reply.format(user=users[-1]))
        return StreamingResponse(self._responses_stream(reply, body), media_type="text/event-stream")

    async def _responses_stream(self, reply: ChatReply, body: dict[str, Any]) -> AsyncIterator[bytes]:
        ident, sequence = f"resp_{next(self._ids)}", itertools.count()
        response = {
            "id": ident,
            "object": "response",
            "created_at": time.time(),
            "model": body["model"],
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": body.get("tools", []),
            "status": "in_progress",
        }

        def event(kind: str, **fields: Any) -> bytes:
            data = {"type": kind, "sequence_number": next(sequence), **fields}
            _responses_event.validate_python(data)
            return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

        await asyncio.sleep(reply.delay_s)
        yield event("response.created", response=response)
        output: list[dict[str, Any]] = []
        if reply.text:
            item = f"msg_{next(self._ids)}"
            message: dict[str, Any] = {
                "id": item,
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            yield event("response.output_item.added", output_index=0, item=message)
            for start in range(0, len(reply.text), 7):
                delta = reply.text[start : start + 7]
                yield event(
                    "response.output_text.delta",
                    item_id=item,
                    output_index=0,
                    content_index=0,
                    delta=delta,
                    logprobs=[],
                )
                await asyncio.sleep(reply.chunk_gap_s)
            text = {"type": "output_text", "text": reply.text, "annotations": []}
            message = {**message, "status": "completed", "content": [text]}
            yield event("response.output_item.done", output_index=0, item=message)
            output.append(message)
        if reply.tool is not None:
            name, arguments = reply.tool
            call = {
                "type": "function_call",
                "id": f"fc_{next(self._ids)}",
                "call_id": f"call_{next(self._ids)}",
                "name": name,
                "arguments": json.dumps(arguments),
                "status": "completed",
            }
            yield event("response.output_item.done", output_index=len(output), item=call)
            output.append(call)
        use = self._token_use(body["input"], reply)
        usage = {
            "input_tokens": use.input,
            "input_tokens_details": {"cached_tokens": use.cached, "cache_write_tokens": 0},
            "output_tokens": use.output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": use.input + use.output,
        }
        self.usage_sent.append(use)
        done = {**response, "status": "completed", "output": output, "usage": usage}
        yield event("response.completed", response=done)

    async def _speech(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, 401)
        received_at = time.monotonic()
        body = await request.json()
        _speech_request.validate_python(body)
        assert body["response_format"] == "pcm", body
        self.speech_requests.append(body)
        stream = SpeechStream(body["input"], received_at)
        self.speech_streams.append(stream)
        return StreamingResponse(self._speech_stream(stream), media_type="application/octet-stream")

    async def _speech_stream(self, stream: SpeechStream) -> AsyncIterator[bytes]:
        pcm = speech_pcm(stream.text)
        step = SPEECH_RATE * 2 * SPEECH_CHUNK_MS // 1000
        try:
            for start in range(0, len(pcm), step):
                stream.chunks_sent += 1
                stream.chunk_times.append(time.monotonic())
                stream.chunk_starts.append(start)
                stream.bytes_sent += len(pcm[start : start + step])
                yield pcm[start : start + step]
                await asyncio.sleep(SPEECH_CHUNK_MS / 1000 / self.speedup)
            stream.completed = True
        finally:
            if not stream.completed:
                stream.abandoned_at = time.monotonic()
            stream.ended.set()


def _last_user(body: dict[str, Any]) -> str:
    users = [m.get("content") for m in body["messages"] if m.get("role") == "user"]
    return str(users[-1]) if users else "nothing"
