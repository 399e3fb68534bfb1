"""What the realtime session shell needs from a WebSocket, and the plain ``websockets`` one."""

from __future__ import annotations

from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect


class RealtimeTransport(Protocol):
    """A connected WebSocket carrying JSON text frames."""

    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes:
        """The next frame; raises ``websockets.exceptions.ConnectionClosed`` when the socket ends."""
        ...

    async def close(self) -> None: ...


class WebSocketTransport:
    """A python-websockets client connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

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

    async def send(self, message: str) -> None:
        await self._ws.send(message)

    async def recv(self) -> str | bytes:
        return await self._ws.recv()

    async def close(self) -> None:
        await self._ws.close()
