"""What the realtime session shell needs from a WebSocket, and the plain ``websockets`` one.

Sending is the hot path: one caller frame every 20 ms per call. python-websockets'
``Connection.send`` wraps each message in an async context manager (state check, write,
``drain``), and the openai SDK's ``send_raw`` adds its reconnect send-queue bookkeeping on
top. :class:`FrameWriter` writes an ordinary text frame the way ``send`` does — the
connection's Sans-I/O protocol (``protocol.send_text`` / ``data_to_send``) onto its asyncio
transport — without either wrapper, and hands every other case (not open, a write buffer
past the limit, a fragmented send in progress) to ``send``, which raises, waits or drains as
usual. Figures are in the README ("Provider send path").
"""

from __future__ import annotations

from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

# Above this many bytes queued in the socket's write buffer, frames go through send(), which
# waits for the buffer to drain (websockets' own default write limit is 32 KiB).
WRITE_BUFFER_LIMIT = 32 * 1024


class RealtimeTransport(Protocol):
    """A connected WebSocket carrying JSON text frames."""

    def send_now(self, message: str) -> bool:
        """Write ``message`` at once without yielding to the event loop; False (nothing
        written) when that is not possible now and :meth:`send` must be awaited instead."""
        ...

    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes:
        """The next frame; raises ``websockets.exceptions.ConnectionClosed`` when the socket ends."""
        ...

    async def close(self) -> None: ...


class FrameWriter:
    """Text frames straight onto a python-websockets client connection (see the module docstring)."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    def send_now(self, message: str) -> bool:
        ws = self._ws
        transport = ws.transport
        if (
            ws.protocol.state is not State.OPEN
            or ws.send_in_progress is not None
            or transport.is_closing()
            or transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT
        ):
            return False
        ws.protocol.send_text(message.encode())
        for data in ws.protocol.data_to_send():
            transport.write(data)
        return True

    async def send(self, message: str) -> None:
        if not self.send_now(message):
            await self._ws.send(message)


class WebSocketTransport:
    """A python-websockets client connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._writer = FrameWriter(ws)

    @classmethod
    async def connect(cls, url: str, api_key: str) -> WebSocketTransport:
        # The caller bounds the whole handshake (connect_timeout_s); compression is off because
        # base64 audio does not compress and deflate would cost CPU per frame.
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {api_key}"},
            open_timeout=None,
            compression=None,
            max_size=16 * 2**20,
        )
        return cls(ws)

    def send_now(self, message: str) -> bool:
        return self._writer.send_now(message)

    async def send(self, message: str) -> None:
        await self._writer.send(message)

    async def recv(self) -> str | bytes:
        return await self._ws.recv()

    async def close(self) -> None:
        await self._ws.close()
