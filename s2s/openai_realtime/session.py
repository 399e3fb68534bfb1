"""OpenAI Realtime sessions over the official ``openai`` SDK's realtime connection.

SDK decision: ``AsyncOpenAI(...).realtime.connect(...)`` is used as the transport. Its
``openai[realtime]`` extra pins ``websockets<16``, but the client itself only needs
``websockets.asyncio.client.connect`` and works with the websockets 17 the server runs
(checked against tests/fakes/openai_realtime_fake.py: URL, ``Authorization: Bearer``, no beta
header, frames both ways, close codes), so we depend on ``openai`` without the extra. Frames are
built and parsed by the shared sans-I/O protocol and moved with ``send_raw``/``recv_bytes``:
the SDK's pydantic event models would cost a model validation per 20 ms audio frame and would
hide Grok-only events, and one code path for both providers is the point of the protocol module.
SDK-level reconnects stay off (``max_retries=0``, no ``on_reconnecting``): a dropped session
surfaces as ``Closed(error=True)`` and the recovery layer, which knows the call, decides.
"""

from __future__ import annotations

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from websockets.asyncio.client import ClientConnection

from s2s.openai_realtime.config import OpenAIRealtimeConfig
from s2s.openai_realtime.protocol import OpenAIRealtimeProtocol
from s2s.provider import SessionContext
from s2s.realtime_protocol import RealtimeProvider, RealtimeTransport
from s2s.realtime_protocol.transport import FrameWriter


class SdkTransport:
    """The SDK connection seen as a :class:`~s2s.realtime_protocol.RealtimeTransport`.

    Connect, auth, receive and close go through the SDK. Sends skip ``send_raw``: its
    reconnect send-queue bookkeeping (off here: ``max_retries=0``) plus websockets' per-send
    context manager cost ~13 us CPU per 20 ms caller frame on loopback, ~0.07 % of a core per
    call; :class:`~s2s.realtime_protocol.transport.FrameWriter` writes the same frame on the
    SDK's own websockets connection (``AsyncRealtimeConnection._connection``, a
    ``websockets.asyncio.client.ClientConnection``). If a future SDK holds something else
    there, sends fall back to ``send_raw`` (tests/test_openai_realtime_session.py checks which
    path the installed SDK takes)."""

    def __init__(self, connection: AsyncRealtimeConnection) -> None:
        self._connection = connection
        ws = getattr(connection, "_connection", None)
        self.writer = FrameWriter(ws) if isinstance(ws, ClientConnection) else None

    def send_now(self, message: str) -> bool:
        return self.writer is not None and self.writer.send_now(message)

    async def send(self, message: str) -> None:
        if not self.send_now(message):
            await self._connection.send_raw(message)

    async def recv(self) -> str | bytes:
        return await self._connection.recv_bytes()

    async def close(self) -> None:
        await self._connection.close()


class OpenAIRealtimeProvider(RealtimeProvider):
    config: OpenAIRealtimeConfig

    def __init__(self, name: str, config: OpenAIRealtimeConfig) -> None:
        super().__init__(name, config)
        # websocket_base_url is used verbatim: {base_url}/realtime?model=... (openai resources/realtime/realtime.py).
        self._client = AsyncOpenAI(
            api_key=config.api_key.get_secret_value(), websocket_base_url=config.base_url, max_retries=0
        )

    def make_protocol(self, ctx: SessionContext) -> OpenAIRealtimeProtocol:
        return OpenAIRealtimeProtocol(ctx, self.config)

    async def connect(self, ctx: SessionContext) -> RealtimeTransport:
        manager = self._client.realtime.connect(
            model=self.model_for(ctx),
            max_retries=0,
            # open_session bounds connect + handshake with connect_timeout_s; base64 audio does not
            # compress, so per-message deflate would only cost CPU.
            websocket_connection_options={"max_size": 16 * 2**20, "compression": None},
        )
        return SdkTransport(await manager.enter())
