"""A loopback WebSocket "provider" that can fail the ways real ones do, for the recovery layer.

Real providers' fakes (openai_realtime_fake, ...) test each provider's own protocol. What the
recovery layer (s2s.resilience, voicebot.calls.admission) needs is a provider whose failures are
*real socket failures*, switchable per test: refuse the WebSocket handshake (HTTP 503),
complete it but never send the first event, go mute after the first event, or drop every
live connection mid-call. Plus :class:`HangingTcpServer` (accepts TCP, never speaks HTTP)
and :func:`dead_port` (nothing listens: connection refused).

The wire protocol is tiny and JSON: the client sends ``hello`` (instructions, history,
resume handle, greeting — recorded per connection so tests can assert what a recovered
session was given), the server answers ``ready``; then ``audio`` both ways (8 kHz mu-law,
base64), ``speech_started``/``speech_stopped``/``transcript``/``turn_done`` from the server.
When healthy it behaves like the echo line (the pure :class:`~s2s.echo.engine.EchoEngine`):
it repeats each caller utterance and transcribes it as its duration.

Importing this module registers provider ``type = "loopback"`` through ``s2s.registry``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.http11 import Request, Response

from s2s.echo.engine import EchoEngine, VadSettings
from s2s.events import AudioOut, ProviderEvent, SessionExpiring, SpeechStarted, SpeechStopped, Transcript, TurnDone
from s2s.provider import Provider, ProviderConfig, ProviderConnectError, ProviderSession, QueuedSession, SessionContext
from s2s.registry import ProviderSpec
from transcoding.formats import MULAW_8K

Mode = Literal["ok", "refuse", "silent", "mute"]


# -- the client: a provider type the config can name --------------------------------------


class LoopbackConfig(ProviderConfig):
    type: Literal["loopback"] = "loopback"
    url: str


class LoopbackSession(QueuedSession):
    input_format = MULAW_8K
    output_format = MULAW_8K

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__("loopback")
        self.ws = ws

    async def _send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(message))

    async def send_audio(self, audio: bytes) -> None:
        await self._send({"type": "audio", "audio": base64.b64encode(audio).decode()})

    async def send_text(self, text: str) -> None:
        await self._send({"type": "text", "text": text})

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        await self._send({"type": "truncate", "item": item_id, "heard_ms": heard_ms})

    async def send_tool_result(self, call_id: str, output: str) -> None:
        await self._send({"type": "tool_result", "call_id": call_id, "output": output})

    async def read(self) -> None:
        async for frame in self.ws:
            event = _event(json.loads(frame))
            if event is not None:
                self.emit(event)

    async def _close_transport(self) -> None:
        await self.ws.close()


def _event(msg: dict[str, Any]) -> ProviderEvent | None:
    kind = msg.get("type")
    if kind == "audio":
        return AudioOut(base64.b64decode(msg["audio"]), msg["item"])
    if kind == "speech_started":
        return SpeechStarted(msg.get("item"))
    if kind == "speech_stopped":
        return SpeechStopped()
    if kind == "transcript":
        return Transcript(msg["role"], msg["text"])
    if kind == "turn_done":
        return TurnDone(msg["item"], interrupted=msg.get("interrupted", False))
    if kind == "expiring":
        return SessionExpiring("loopback limit")
    return None


class LoopbackProvider(Provider):
    config: LoopbackConfig

    async def open_session(self, ctx: SessionContext) -> ProviderSession:
        try:
            ws = await connect(self.config.url, open_timeout=None, compression=None)
        except (OSError, InvalidHandshake) as exc:
            raise ProviderConnectError(self.name, f"connect failed: {exc}") from exc
        try:
            hello = {
                "type": "hello",
                "call_sid": ctx.call_sid,
                "instructions": ctx.instructions,
                "history": [{"role": t.role, "text": t.text} for t in ctx.history],
                "resume_handle": ctx.resume_handle,
                "greeting": ctx.greeting,
            }
            await ws.send(json.dumps(hello))
            first = json.loads(await ws.recv())  # the handshake ends with "ready"
            if first.get("type") != "ready":
                raise ProviderConnectError(self.name, f"expected ready, got {first!r}")
        except BaseException:
            ws.transport.abort()  # also on cancellation (connect timeout): no lingering socket
            raise
        session = LoopbackSession(ws)
        session.start_reader(session.read())
        return session


def _create(name: str, config: ProviderConfig) -> Provider:
    assert isinstance(config, LoopbackConfig)
    return LoopbackProvider(name, config)


SPEC = ProviderSpec(LoopbackConfig, _create)


# -- the server ----------------------------------------------------------------------------


@dataclass
class Connection:
    number: int
    opened_at: float = field(default_factory=time.monotonic)
    hello: dict[str, Any] = field(default_factory=dict)
    audio_bytes: int = 0
    texts: list[str] = field(default_factory=list)
    ws: ServerConnection | None = None


class FaultyProviderServer:
    """One fake provider endpoint on 127.0.0.1; ``mode`` applies to new connections."""

    def __init__(self, mode: Mode = "ok", reply_speed: float = 4.0) -> None:
        self.mode: Mode = mode
        self.reply_speed = reply_speed
        self.connections: list[Connection] = []
        self.handshakes_refused = 0
        self._numbers = itertools.count(1)
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    @property
    def live(self) -> list[Connection]:
        return [c for c in self.connections if c.ws is not None]

    async def start(self) -> FaultyProviderServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._gate, compression=None)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _gate(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.mode == "refuse":
            self.handshakes_refused += 1
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "overloaded\n")
        return None

    def drop_all(self) -> None:
        """Every live session's TCP connection dies at once (no close frame): a crash."""
        for connection in self.live:
            assert connection.ws is not None
            connection.ws.transport.abort()

    async def _handle(self, ws: ServerConnection) -> None:
        connection = Connection(next(self._numbers), ws=ws)
        self.connections.append(connection)
        mode = self.mode
        try:
            connection.hello = json.loads(await ws.recv())
            if mode == "silent":
                await ws.wait_closed()  # handshake done, first event never comes
                return
            await ws.send(json.dumps({"type": "ready"}))
            if mode == "mute":
                async for _ in ws:  # listens, never answers
                    pass
                return
            await self._echo(ws, connection)
        except ConnectionClosed:
            pass
        finally:
            connection.ws = None

    async def _echo(self, ws: ServerConnection, connection: Connection) -> None:
        engine = EchoEngine(MULAW_8K, VadSettings())
        outgoing: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        speaker = asyncio.ensure_future(self._speak(ws, engine, outgoing))
        try:
            async for frame in ws:
                msg = json.loads(frame)
                if msg["type"] == "text":
                    connection.texts.append(msg["text"])
                if msg["type"] != "audio":
                    continue
                audio = base64.b64decode(msg["audio"])
                connection.audio_bytes += len(audio)
                for event in engine.feed(audio):
                    if isinstance(event, SpeechStarted):
                        await ws.send(json.dumps({"type": "speech_started", "item": event.item_id}))
                    elif isinstance(event, SpeechStopped):
                        await ws.send(json.dumps({"type": "speech_stopped"}))
                    elif isinstance(event, TurnDone):
                        await ws.send(json.dumps({"type": "turn_done", "item": event.item_id, "interrupted": True}))
                while (reply := engine.take_reply()) is not None:
                    outgoing.put_nowait(reply)
        finally:
            speaker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaker

    async def _speak(
        self, ws: ServerConnection, engine: EchoEngine, outgoing: asyncio.Queue[tuple[str, bytes]]
    ) -> None:
        chunk = MULAW_8K.nbytes(100)
        while True:
            item, audio = await outgoing.get()
            spoken_ms = round(MULAW_8K.duration_ms(len(audio)))
            await ws.send(json.dumps({"type": "transcript", "role": "caller", "text": f"{spoken_ms} ms of speech"}))
            await asyncio.sleep(0.1)
            for start in range(0, len(audio), chunk):
                if engine.replying_item != item:
                    break
                data = base64.b64encode(audio[start : start + chunk]).decode()
                await ws.send(json.dumps({"type": "audio", "item": item, "audio": data}))
                await asyncio.sleep(0.1 / self.reply_speed)
            if engine.reply_finished(item):
                await ws.send(json.dumps({"type": "transcript", "role": "bot", "text": f"echo of {spoken_ms} ms"}))
                await ws.send(json.dumps({"type": "turn_done", "item": item}))


class HangingTcpServer:
    """Accepts TCP connections and never says a word (no HTTP, no WebSocket handshake)."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.accepted = 0

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    async def start(self) -> HangingTcpServer:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self._writers.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def dead_port() -> str:
    """A loopback URL where nothing listens (bound, then released: connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/"


@contextlib.asynccontextmanager
async def faulty_servers(*modes: Mode) -> AsyncIterator[list[FaultyProviderServer]]:
    servers = [await FaultyProviderServer(mode).start() for mode in modes]
    try:
        yield servers
    finally:
        for server in servers:
            await server.stop()
