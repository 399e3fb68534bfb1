"""Bedrock's ``InvokeModelWithBidirectionalStream`` wire format on loopback, for the real SDK.

HTTP/2 over TLS with ALPN ``h2`` (awscrt only speaks duplex HTTP/2 over TLS; over plain
``http://`` it falls back to HTTP/1.1, buffers the whole body and hangs).
Each request stream gets its own :class:`~tests.fakes.nova_sonic_fake.FakeNovaModel`:

* request: ``POST /model/<url-encoded id>/invoke-with-bidirectional-stream``; the response
  headers (200, ``application/vnd.amazon.eventstream``) go out at once, because the SDK's
  ``await_output()`` waits for them;
* client frames: a signed outer event-stream message (``:date``, ``:chunk-signature``) whose
  payload is the inner ``chunk`` message, whose payload is ``{"bytes": "<b64 JSON event>"}``;
  an outer frame with an empty payload ends the input. Signatures are not checked;
* server frames: unsigned inner-shape messages; model errors become ``:message-type
  exception`` frames (``modelTimeoutException``, ...) followed by the end of the stream;
  :meth:`FakeNovaModel.drop` becomes an RST_STREAM.

Frames are encoded/decoded with ``smithy_aws_event_stream`` (the SDK's own codec).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from smithy_aws_event_stream.events import Event as WireEvent
from smithy_aws_event_stream.events import EventMessage

from s2s.nova_sonic.transport import NovaStreamError
from tests.fakes.nova_sonic_fake import FakeNovaModel

_EXCEPTION_TYPES = {
    "model_timeout": "modelTimeoutException",
    "validation": "validationException",
    "throttled": "throttlingException",
    "unavailable": "serviceUnavailableException",
    "internal": "internalServerException",
    "model_stream": "modelStreamErrorException",
}


def chunk_frame(event: dict[str, Any] | bytes) -> bytes:
    """A ``chunk`` event; ``bytes`` go in as they are (a corrupt payload, for robustness tests)."""
    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    payload = json.dumps({"bytes": base64.b64encode(raw).decode()}).encode()
    headers = {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"}
    return EventMessage(headers=headers, payload=payload).encode()  # type: ignore[arg-type]


def exception_frame(error: NovaStreamError) -> bytes:
    headers = {
        ":message-type": "exception",
        ":exception-type": _EXCEPTION_TYPES.get(error.code, "internalServerException"),
        ":content-type": "application/json",
    }
    return EventMessage(headers=headers, payload=json.dumps({"message": error.message}).encode()).encode()  # type: ignore[arg-type]


def split_frames(buffer: bytearray) -> list[WireEvent]:
    """Remove and decode every complete event-stream message at the head of ``buffer``."""
    frames = []
    while len(buffer) >= 4:
        (total,) = struct.unpack(">I", buffer[:4])
        if len(buffer) < total:
            break
        event = WireEvent.decode(io.BytesIO(bytes(buffer[:total])))
        del buffer[:total]
        if event is not None:
            frames.append(event)
    return frames


@dataclass
class _Stream:
    model: FakeNovaModel
    buffer: bytearray = field(default_factory=bytearray)
    pump: asyncio.Task[None] | None = None
    input_ended: bool = False
    input_closed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class NovaH2Fake:
    """``async with NovaH2Fake(ssl_context) as fake:`` then point ``endpoint_url`` at
    ``fake.url``; ``fake.models`` / ``fake.paths`` / ``fake.headers`` record each request."""

    ssl_context: ssl.SSLContext
    make_model: Callable[[], FakeNovaModel] = FakeNovaModel
    status: int = 200
    """Answer every request with this status (429, 503: a refusal) instead of a stream."""
    models: list[FakeNovaModel] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    frames_in: int = 0
    connections: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    async def __aenter__(self) -> NovaH2Fake:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        self._connections: set[asyncio.Task[None]] = set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for model in self.models:
            model.shutdown()
        for task in list(self._connections):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        streams: dict[int, _Stream] = {}
        window_open = asyncio.Event()
        lock = asyncio.Lock()

        async def flush() -> None:
            data = conn.data_to_send()
            if data:
                writer.write(data)
                await writer.drain()

        async def send_data(stream_id: int, data: bytes, end: bool = False) -> None:
            while data:
                async with lock:
                    size = min(len(data), conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
                    if size > 0:
                        conn.send_data(stream_id, data[:size])
                        data = data[size:]
                        await flush()
                        continue
                    window_open.clear()
                await window_open.wait()
            if end:
                async with lock:
                    conn.end_stream(stream_id)
                    await flush()

        async def pump(stream_id: int, stream: _Stream) -> None:
            model = stream.model
            with contextlib.suppress(h2.exceptions.StreamClosedError, ConnectionError):
                while True:
                    item = await model.output.get()
                    if item is None:
                        if model.ended:
                            # After sessionEnd, answer the client's end of input with ours.
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stream.input_closed.wait(), 2.0)
                            await send_data(stream_id, b"", end=True)
                        else:  # a drop: reset, as a lost stream looks to the client
                            async with lock:
                                conn.reset_stream(stream_id)
                                await flush()
                        return
                    if isinstance(item, NovaStreamError):
                        await send_data(stream_id, exception_frame(item), end=True)
                        return
                    await send_data(stream_id, chunk_frame(item))

        try:
            async with lock:
                await flush()
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                async with lock:
                    events = conn.receive_data(data)
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        headers = dict(event.headers)  # type: ignore[arg-type]
                        self.paths.append(headers[":path"])
                        self.headers.append(headers)
                        if self.status != 200:
                            async with lock:
                                conn.send_headers(event.stream_id, [(":status", str(self.status))])
                                conn.send_data(event.stream_id, b'{"message":"refused by fake"}', end_stream=True)
                            continue
                        model = self.make_model()
                        model_id = unquote(headers[":path"].split("/")[2])
                        model.start(model_id)
                        self.models.append(model)
                        stream = _Stream(model)
                        streams[event.stream_id] = stream
                        async with lock:
                            conn.send_headers(
                                event.stream_id,
                                [(":status", "200"), ("content-type", "application/vnd.amazon.eventstream")],
                            )
                        stream.pump = asyncio.ensure_future(pump(event.stream_id, stream))
                    elif isinstance(event, h2.events.DataReceived):
                        async with lock:
                            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        stream = streams.get(event.stream_id)  # type: ignore[assignment]
                        if stream is None:
                            continue
                        stream.buffer += event.data
                        for outer in split_frames(stream.buffer):
                            self.frames_in += 1
                            if not outer.message.payload:
                                stream.input_ended = True  # the signed empty frame ends the input
                                continue
                            inner = WireEvent.decode(io.BytesIO(outer.message.payload))
                            if inner is None:
                                continue
                            body = json.loads(inner.message.payload)
                            stream.model.feed(json.loads(base64.b64decode(body["bytes"])))
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = streams.get(event.stream_id)
                        if ended is not None:
                            ended.input_closed.set()
                    elif isinstance(event, h2.events.WindowUpdated):
                        window_open.set()
                    elif isinstance(event, h2.events.StreamReset):
                        gone = streams.pop(event.stream_id, None)
                        if gone is not None:
                            gone.model.shutdown()
                            if gone.pump:
                                gone.pump.cancel()
                async with lock:
                    await flush()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # fake shutting down; ending normally keeps asyncio's server callback quiet
        finally:
            for stream in streams.values():
                stream.model.shutdown()
                if stream.pump:
                    stream.pump.cancel()
            writer.close()
            self._connections.discard(task)
