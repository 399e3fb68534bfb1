"""The thin asyncio shell around :class:`~s2s.realtime_protocol.protocol.RealtimeProtocol`.

It only moves frames: transport -> ``protocol.receive`` -> neutral events, and the protocol's
outgoing frames -> transport. Both OpenAI (over the official SDK's connection) and Grok (over
``websockets``) run this same code; a provider supplies how to connect and which protocol
subclass to use.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod

from websockets.exceptions import ConnectionClosed

from s2s.provider import Provider, QueuedSession, SessionContext
from s2s.realtime_protocol.config import RealtimeProviderConfig
from s2s.realtime_protocol.handshake import close_quietly, connect_error, run_handshake
from s2s.realtime_protocol.protocol import RealtimeProtocol
from s2s.realtime_protocol.transport import RealtimeTransport

log = logging.getLogger(__name__)


class RealtimeSession(QueuedSession):
    def __init__(
        self,
        provider_name: str,
        protocol: RealtimeProtocol,
        transport: RealtimeTransport,
        config: RealtimeProviderConfig,
    ) -> None:
        super().__init__(provider_name)
        self.config = config
        self.protocol = protocol
        self.input_format = protocol.audio_format
        self.output_format = protocol.output_format  # as the server confirmed it
        self._transport = transport
        # Frames from the inbound task (audio) and the outbound task (truncate, tool results)
        # go out in the order the protocol produced them: written at once when nothing is
        # waiting to be sent, else behind the lock.
        self._send_lock = asyncio.Lock()

    def start(self) -> None:
        self.start_reader(self._read())
        self.announce_expiry(self.config.renew_after_s, self.config.session_limit_s, "session limit")

    async def _read(self) -> None:
        await self._flush()  # what the handshake left queued (history, greeting)
        while True:
            data = await self._transport.recv()
            self.protocol.receive(data)
            for event in self.protocol.events_received():
                self.emit(event)
            await self._flush()
            if self.protocol.failed:
                # Fatal error: the ProviderError is queued; ending the reader yields
                # Closed(error=True) so the recovery layer takes over.
                await self._transport.close()
                return

    async def _flush(self) -> None:
        frames = self.protocol.data_to_send()
        if not frames:
            return
        if not self._send_lock.locked():
            # The usual case: every frame written now, in order, with no await in between.
            written = 0
            while written < len(frames) and self._transport.send_now(frames[written]):
                written += 1
            if written == len(frames):
                return
            frames = frames[written:]
        async with self._send_lock:
            for frame in frames:
                try:
                    await self._transport.send(frame)
                except ConnectionClosed:
                    # The reader sees the same close and reports it; late frames are moot.
                    log.debug("%s: dropped a frame after the socket closed", self.provider_name)
                    return

    async def send_audio(self, audio: bytes) -> None:
        if not self.closed:
            self.protocol.send_audio(audio)
            await self._flush()

    async def send_text(self, text: str) -> None:
        if not self.closed:
            self.protocol.send_text(text)
            await self._flush()

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        if not self.closed:
            self.protocol.truncate(item_id, heard_ms)
            await self._flush()

    async def send_tool_result(self, call_id: str, output: str) -> None:
        if not self.closed:
            self.protocol.send_tool_result(call_id, output)
            await self._flush()

    async def _close_transport(self) -> None:
        await self._transport.close()


class RealtimeProvider(Provider):
    """Opens :class:`RealtimeSession` s: connect, ``session.created`` -> one ``session.update``
    -> ``session.updated``, all within ``connect_timeout_s``."""

    config: RealtimeProviderConfig

    def __init__(self, name: str, config: RealtimeProviderConfig) -> None:
        super().__init__(name, config)

    @abstractmethod
    def make_protocol(self, ctx: SessionContext) -> RealtimeProtocol: ...

    @abstractmethod
    async def connect(self, ctx: SessionContext) -> RealtimeTransport:
        """Open the WebSocket (URL, auth header); raise what the client library raises."""

    def model_for(self, ctx: SessionContext) -> str:
        return ctx.model or self.config.model

    async def open_session(self, ctx: SessionContext) -> RealtimeSession:
        protocol = self.make_protocol(ctx)
        transport: RealtimeTransport | None = None
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                transport = await self.connect(ctx)
                await run_handshake(self.name, protocol, transport.send, transport.recv, "session.update")
        except BaseException as exc:
            if transport is not None:
                await close_quietly(transport.close)
            if isinstance(exc, Exception):
                raise connect_error(
                    self.name, ctx.call_sid, exc, self.config.connect_timeout_s, "session.updated"
                ) from exc
            raise
        session = RealtimeSession(self.name, protocol, transport, self.config)
        session.start()
        log.info(
            "%s session ready for call %s (%s, %s)",
            self.name,
            ctx.call_sid,
            self.model_for(ctx),
            protocol.audio_format,
        )
        return session
