"""GPT-Live sessions over the official SDK's ``client.live.connect()`` (a thin asyncio shell).

The SDK connection is the transport (``send_raw`` / ``recv_bytes``, as for OpenAI Realtime):
frames are built and read by :class:`~s2s.gpt_live.protocol.GptLiveProtocol`. SDK reconnects
stay off (``max_retries=0``): a lost session is ``Closed(error=True)`` and the recovery layer,
which knows the call, reopens it or falls back to the next provider.

Two things here are specific to a full-duplex model:

- The input clock. The model listens continuously and paces itself by the audio it
  receives; a caller stream that goes quiet (a held call, a stall, the bridge reconnecting)
  would stop its clock. When no caller audio has gone out for ``input_gap_ms``, μ-law silence
  is appended in its place, up to real time.
- ``playout_lead_ms`` declares the session full duplex, so the bridge paces its audio.

The session cap comes from ``session.started`` (``SessionResource.expires_at``), bounded by
the config's ``session_limit_s``; ``SessionExpiring`` goes out ``session_limit_s -
renew_after_s`` before it so the rotation policy renews between turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from openai import AsyncOpenAI
from openai.resources.live.live import AsyncLiveConnection
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from s2s.gpt_live.config import GptLiveConfig
from s2s.gpt_live.protocol import GptLiveProtocol, warm_up_models
from s2s.provider import Provider, QueuedSession, SessionContext
from s2s.realtime_protocol.handshake import close_quietly, connect_error, run_handshake
from s2s.realtime_protocol.transport import FrameWriter
from transcoding.formats import MULAW_8K

log = logging.getLogger(__name__)

MULAW_SILENCE = b"\xff"
INPUT_FRAME_MS = 20
FINAL_USAGE_WAIT_S = 1.0


class GptLiveSession(QueuedSession):
    def __init__(
        self, provider_name: str, protocol: GptLiveProtocol, connection: AsyncLiveConnection, config: GptLiveConfig
    ) -> None:
        super().__init__(provider_name)
        self.config = config
        self.protocol = protocol
        self.input_format = protocol.audio_format
        self.output_format = protocol.audio_format
        self.playout_lead_ms = config.lead_ms
        self._connection = connection
        # Audio appends go straight onto the SDK's own websockets connection, as for OpenAI
        # Realtime (s2s.realtime_protocol.transport.FrameWriter: send_raw's reconnect queue is
        # off here and costs CPU per 20 ms frame); anything else falls back to send_raw.
        ws = getattr(connection, "_connection", None)
        self._writer = FrameWriter(ws) if isinstance(ws, ClientConnection) else None
        self._send_lock = asyncio.Lock()
        self._clock_origin = time.monotonic()
        self._input_clock: asyncio.Task[None] | None = None
        self._server_closed = asyncio.Event()
        self._padding = False

    def start(self) -> None:
        self._clock_origin = time.monotonic()
        self.start_reader(self._read())
        self._input_clock = asyncio.ensure_future(self._keep_input_clock())
        after_s, limit_s = self._renewal_times()
        self.announce_expiry(after_s, limit_s, "session limit")

    def _renewal_times(self) -> tuple[float, float]:
        limit_s = self.config.session_limit_s
        if self.protocol.expires_at is not None:
            limit_s = min(limit_s, max(0.0, self.protocol.expires_at - time.time()))
        margin = self.config.session_limit_s - self.config.renew_after_s
        return max(0.0, limit_s - margin), limit_s

    async def _read(self) -> None:
        while True:
            data = await self._connection.recv_bytes()
            self.protocol.receive(data)
            self._emit_all()
            await self._flush()
            if self.protocol.closed_reason is not None:
                self._server_closed.set()
            if self.protocol.failed:
                await self._connection.close()
                return

    def _emit_all(self) -> None:
        for event in self.protocol.events_received():
            self.emit(event)

    async def _flush(self) -> None:
        async with self._send_lock:
            for frame in self.protocol.data_to_send():
                try:
                    if self._writer is None or not self._writer.send_now(frame):
                        await self._connection.send_raw(frame)
                except ConnectionClosed:
                    log.debug("%s: dropped a frame after the socket closed", self.provider_name)
                    return

    async def _keep_input_clock(self) -> None:
        """Silence in place of caller audio that has not come for ``input_gap_ms``; once
        padding, one frame per tick keeps the model's input at real time until the caller's
        stream is back (a jittery stream alone never triggers it)."""
        frame = MULAW_SILENCE * MULAW_8K.nbytes(INPUT_FRAME_MS)
        while not self.closed:
            await asyncio.sleep(INPUT_FRAME_MS / 1000)
            behind_ms = (time.monotonic() - self._clock_origin) * 1000 - self.protocol.input_ms
            if not self._padding and behind_ms < self.config.input_gap_ms:
                continue
            self._padding = True
            frames = int(behind_ms // INPUT_FRAME_MS)
            if frames > 0:
                await self._send_audio_now(frame * frames)

    async def _send_audio_now(self, audio: bytes) -> None:
        self.protocol.send_audio(audio)
        self._emit_all()  # the input clock may have ended an utterance or a caller turn
        await self._flush()

    async def send_audio(self, audio: bytes) -> None:
        if not self.closed:
            self._padding = False
            await self._send_audio_now(audio)

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
            self._emit_all()
            await self._flush()

    async def _close_transport(self) -> None:
        if self._input_clock is not None:
            self._input_clock.cancel()
        # session.close asks the server to finalize; its session.closed carries the final
        # usage, worth a short wait (the whole close is bounded by QueuedSession.close).
        self.protocol.close()
        await self._flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server_closed.wait(), FINAL_USAGE_WAIT_S)
        await self._connection.close()


class GptLiveProvider(Provider):
    """Opens :class:`GptLiveSession` s: connect, ``session.start`` -> ``session.started``."""

    config: GptLiveConfig

    def __init__(self, name: str, config: GptLiveConfig) -> None:
        super().__init__(name, config)
        warm_up_models()
        self._client = AsyncOpenAI(
            api_key=config.api_key.get_secret_value(), websocket_base_url=config.base_url, max_retries=0
        )

    async def open_session(self, ctx: SessionContext) -> GptLiveSession:
        protocol = GptLiveProtocol(ctx, self.config)
        connection: AsyncLiveConnection | None = None
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                connection = await self._client.live.connect(
                    max_retries=0,
                    # base64 audio does not compress; deflate would only cost CPU per frame.
                    websocket_connection_options={"max_size": 16 * 2**20, "compression": None},
                ).enter()
                protocol.start()
                await run_handshake(self.name, protocol, connection.send_raw, connection.recv_bytes, "session.start")
        except BaseException as exc:
            if connection is not None:
                await close_quietly(connection.close)
            if isinstance(exc, Exception):
                raise connect_error(
                    self.name, ctx.call_sid, exc, self.config.connect_timeout_s, "session.started"
                ) from exc
            raise
        session = GptLiveSession(self.name, protocol, connection, self.config)
        session.start()
        log.info(
            "%s session %s ready for call %s (%s, lead %d ms)",
            self.name,
            protocol.session_id,
            ctx.call_sid,
            ctx.model or self.config.model,
            self.config.lead_ms,
        )
        return session
