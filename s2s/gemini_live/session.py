"""The asyncio shell: one google-genai Live connection per :class:`GeminiLiveSession`.

Everything Gemini-specific that is not I/O lives in :mod:`s2s.gemini_live.protocol` (the
sans-I/O :class:`~s2s.gemini_live.protocol.GeminiProtocol`: ``receive`` / ``events_received`` /
``data_to_send``) and :mod:`s2s.gemini_live.setup`; this module opens the SDK session, feeds
its messages to the protocol and sends the client messages the protocol queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import weakref
from typing import Any

import websockets
from google import genai
from google.genai import errors, types
from google.genai.live import AsyncSession
from websockets.asyncio.client import ClientConnection

from s2s.events import ProviderError
from s2s.gemini_live.config import GeminiLiveConfig
from s2s.gemini_live.protocol import CallerAudio, ClientMessage, GeminiProtocol, GeminiProtocolError
from s2s.gemini_live.setup import (
    INPUT_MIME,
    Opening,
    connect_config,
    opening,
    resume_needs_closed_socket,
)
from s2s.provider import Provider, ProviderConfig, ProviderConnectError, QueuedSession, SessionContext
from s2s.realtime_protocol.transport import FrameWriter
from transcoding.formats import PCM16_16K, PCM16_24K

log = logging.getLogger(__name__)

# Close codes that mean "this request will never work" (RFC 6455 section 7.4.1, as the service uses them:
# a wrong key closes with 1007; 1008 is a policy violation such as an unknown model).
_FATAL_CLOSE_CODES = frozenset({1007, 1008})
# HTTP statuses at the upgrade that retrying cannot fix.
_FATAL_HTTP_STATUSES = frozenset({400, 401, 403, 404})
# A few undecodable messages in a row are the service's problem; a stream of them is ours.
_MAX_BAD_MESSAGES = 20


def make_client(config: GeminiLiveConfig) -> genai.Client:
    """One SDK client per configured provider; sessions share it.

    ``ca_file`` (a private endpoint or the test fake) is handed to the SDK as the TLS context
    of its WebSocket via ``async_client_args["ssl"]`` rather than ``SSL_CERT_FILE``, so it
    affects this provider only, not every TLS client in the process."""
    # google-genai hands the async_client_args that python-websockets' connect() takes to the
    # Live socket (google.genai._api_client._ensure_websocket_ssl_ctx). Keepalive pings keep
    # websockets' 20 s interval, but a pong may take keepalive_timeout_s: a busy service that
    # answers pings slowly must not have its socket closed (1011 keepalive ping timeout) while
    # the call is fine; a dead one is still found, and the watchdog covers silence.
    # Per-message deflate off (python-websockets offers it by default): base64 PCM hardly
    # compresses, and deflating every 20 ms frame was ~4 % of the server's CPU in bench load.
    client_args: dict[str, Any] = {
        "ping_interval": 20.0,
        "ping_timeout": config.keepalive_timeout_s,
        "compression": None,
    }
    if config.ca_file:
        client_args["ssl"] = ssl.create_default_context(cafile=config.ca_file)
    http_options = types.HttpOptions(
        base_url=config.base_url,
        api_version=config.resolved_api_version,
        async_client_args=client_args,
    )
    if config.vertex:
        return genai.Client(
            vertexai=True,
            project=config.vertex_project,
            location=config.vertex_location,
            http_options=http_options,
        )
    api_key = config.api_key.get_secret_value() if config.api_key is not None else None
    return genai.Client(api_key=api_key, http_options=http_options)


def _close_code(exc: BaseException) -> int | None:
    """The WebSocket close code an SDK ``APIError`` carries, if it is one (1000-4999)."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) and 1000 <= code <= 4999 else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.APIError):
        return f"code {exc.code}: {exc.message or exc.details}"
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        return f"HTTP {exc.response.status_code} at the WebSocket upgrade"
    if isinstance(exc, TypeError):
        # What the SDK raises for a message with no field it knows (it reads a missing
        # "code" as an HTTP status): usually a top-level key newer than the SDK.
        return f"message the SDK cannot map (unknown top-level key?): {exc}"
    return f"{type(exc).__name__}: {exc}"


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, errors.APIError):
        return exc.code not in _FATAL_CLOSE_CODES and exc.code not in _FATAL_HTTP_STATUSES
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        return exc.response.status_code not in _FATAL_HTTP_STATUSES
    # A certificate the endpoint presents but we do not trust is a configuration problem.
    return not isinstance(exc, (ssl.SSLCertVerificationError, ValueError))


class GeminiLiveSession(QueuedSession):
    """The asyncio shell around one :class:`~s2s.gemini_live.protocol.GeminiProtocol`: the SDK
    session's messages go into the protocol, its events to the bridge, and the client messages
    it queues go out through the SDK session, in order.

    Audio: PCM16 16 kHz in, PCM16 24 kHz out (https://ai.google.dev/gemini-api/docs/live-guide,
    audio formats); the bridge resamples from and to the 8 kHz mu-law of the phone line. The
    protocol rejects any other output rate, so a model change can never play at the wrong
    speed unnoticed."""

    input_format = PCM16_16K
    output_format = PCM16_24K

    def __init__(
        self,
        provider_name: str,
        protocol: GeminiProtocol,
        live: AsyncSession,
        exit_stack: contextlib.AsyncExitStack,
    ) -> None:
        super().__init__(provider_name)
        self.protocol = protocol
        self.ctx = protocol.ctx
        self._live = live
        self._exit_stack = exit_stack
        # Frames from the inbound task (audio, held notes) and the outbound task (truncate,
        # tool results) go out in the order the protocol produced them: written at once when
        # nothing is waiting to be sent, else behind the lock.
        self._send_lock = asyncio.Lock()
        # Caller audio is written as the SDK would send it (CallerAudio.wire_text) straight
        # onto the SDK session's own websockets connection (``AsyncSession._ws``), skipping
        # the SDK's per-call model validation and conversion; everything else, and audio on
        # an SDK that holds something else there, goes through the SDK's senders.
        ws = getattr(live, "_ws", None)
        self._writer = FrameWriter(ws) if isinstance(ws, ClientConnection) else None

    @property
    def resume_handle(self) -> str | None:
        return self.protocol.resume_handle

    async def start(self, plan: Opening) -> None:
        """Send the opening (history replay, greeting request), then start reading."""
        self.protocol.open(plan)
        await self._flush()
        self.start_reader(self._read())

    def _emit_events(self) -> None:
        for event in self.protocol.events_received():
            self.emit(event)

    async def _read(self) -> None:
        try:
            await self._pump()
        finally:
            # Transcripts held back for a truncate() that will not come now.
            self.protocol.end()
            self._emit_events()
            usage = self.protocol.mapper.usage
            log.info(
                "%s session of %s ended; tokens: %d prompt, %d response, %d total",
                self.provider_name,
                self.ctx.call_sid,
                usage.prompt_tokens,
                usage.response_tokens,
                usage.total_tokens,
            )
            if not self._closing:  # a fatal error leaves the socket open: do not leak it
                await _quiet_close(self._exit_stack)

    async def _pump(self) -> None:
        bad_messages = 0
        while True:
            # receive() ends after every turnComplete (google-genai ``live.AsyncSession.receive``): keep calling it.
            try:
                async for message in self._live.receive():
                    bad_messages = 0
                    self.protocol.receive(message)
                    self._emit_events()
                    await self._flush()  # a held note may have become due
            except GeminiProtocolError as exc:
                log.error("%s: %s; closing session of %s", self.provider_name, exc, self.ctx.call_sid)
                self.emit(ProviderError("bad_audio_format", str(exc), fatal=True))
                return
            except (errors.APIError, TypeError, ValueError) as exc:
                if _close_code(exc) is not None:
                    self._report_close(exc)
                    return
                # The socket is still open; only this message could not be parsed (an
                # unknown top-level key, bad JSON). Say so and keep the call going.
                bad_messages += 1
                log.error("%s: undecodable server message skipped: %s", self.provider_name, _describe(exc))
                self.emit(ProviderError("bad_message", _describe(exc)))
                if bad_messages >= _MAX_BAD_MESSAGES:
                    self.emit(ProviderError("bad_message", "too many undecodable messages", fatal=True))
                    return

    def _report_close(self, exc: BaseException) -> None:
        if self._closing:
            return
        if self.protocol.mapper.going_away:
            # The end goAway announced, reached before a gap between turns let the recovery
            # layer renew: no error. The answer in progress ends here (protocol.end), the
            # recovery layer resumes with the newest handle, which the service issues once the
            # model has finished generating (https://ai.google.dev/api/live, SessionResumptionUpdate).
            log.info(
                "%s session of %s ended as goAway announced (%s); handing over",
                self.provider_name,
                self.ctx.call_sid,
                _describe(exc),
            )
            return
        log.warning(
            "%s session of %s closed by the service (%s); the recovery layer takes over",
            self.provider_name,
            self.ctx.call_sid,
            _describe(exc),
        )
        self.emit(ProviderError("connection_closed", _describe(exc), fatal=True))

    # -- bridge -> Gemini -------------------------------------------------------------------

    async def _flush(self) -> None:
        """Send what the protocol queued. A send racing a dropped socket fails quietly: the
        reader reports the loss once, as ``Closed(error=True)``, and the bridge must not crash
        meanwhile."""
        messages = self.protocol.data_to_send()
        if not messages:
            return
        if not self._send_lock.locked():
            # The usual case: caller audio written now, in order, with no await in between.
            written = 0
            while written < len(messages) and self._send_now(messages[written]):
                written += 1
            if written == len(messages):
                return
            messages = messages[written:]
        async with self._send_lock:
            for message in messages:
                try:
                    await self._send_message(message)
                except (websockets.exceptions.ConnectionClosed, errors.APIError) as exc:
                    log.debug("%s: message not sent, connection closing: %r", self.provider_name, exc)
                    return

    def _send_now(self, message: ClientMessage) -> bool:
        writer = self._writer
        return type(message) is CallerAudio and writer is not None and writer.send_now(message.wire_text())

    async def _send_message(self, message: ClientMessage) -> None:
        """One client message: caller audio as its wire text, the rest through the SDK
        session's own sender for its kind."""
        if isinstance(message, CallerAudio):
            if self._writer is not None:
                await self._writer.send(message.wire_text())
            else:
                await self._live.send_realtime_input(audio=types.Blob(data=message.pcm16, mime_type=INPUT_MIME))
            return
        if message.realtime_input is not None:
            realtime = message.realtime_input
            if realtime.audio is not None:
                await self._live.send_realtime_input(audio=realtime.audio)
            elif realtime.text is not None:
                await self._live.send_realtime_input(text=realtime.text)
            elif realtime.activity_start is not None:
                await self._live.send_realtime_input(activity_start=realtime.activity_start)
            elif realtime.activity_end is not None:
                await self._live.send_realtime_input(activity_end=realtime.activity_end)
        elif message.client_content is not None:
            content = message.client_content
            turns: list[types.Content | types.ContentDict] = [*(content.turns or [])]
            await self._live.send_client_content(turns=turns, turn_complete=bool(content.turn_complete))
        elif message.tool_response is not None:
            await self._live.send_tool_response(function_responses=message.tool_response.function_responses or [])

    async def send_audio(self, audio: bytes) -> None:
        if not self.closed:
            self.protocol.send_audio(audio)
            await self._flush()

    async def send_caller_frame(self, audio: bytes, level_dbfs: float) -> None:
        """The bridge measured the frame's level once; the turn detection reuses it."""
        if not self.closed:
            self.protocol.send_audio(audio, level_dbfs)
            await self._flush()

    async def send_text(self, text: str) -> None:
        if not self.closed:
            self.protocol.send_text(text)
            await self._flush()

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        """See :meth:`~s2s.gemini_live.protocol.GeminiProtocol.truncate`."""
        if not self.closed:
            self.protocol.truncate(item_id, heard_ms)
            self._emit_events()
            await self._flush()

    async def send_tool_result(self, call_id: str, output: str) -> None:
        if not self.closed:
            self.protocol.send_tool_result(call_id, output)
            await self._flush()

    async def _close_transport(self) -> None:
        await self._exit_stack.aclose()


class GeminiLiveProvider(Provider):
    """A configured ``gemini_live`` provider."""

    config: GeminiLiveConfig

    def __init__(self, name: str, config: ProviderConfig) -> None:
        if not isinstance(config, GeminiLiveConfig):
            raise TypeError(f"{name}: expected GeminiLiveConfig, got {type(config).__name__}")
        super().__init__(name, config)
        self._client: genai.Client | None = None
        self._sessions: weakref.WeakSet[GeminiLiveSession] = weakref.WeakSet()

    @property
    def client(self) -> genai.Client:
        if self._client is None:
            try:
                self._client = make_client(self.config)
            except ValueError as exc:  # no API key anywhere, bad Vertex settings
                raise ProviderConnectError(self.name, f"client setup failed: {exc}", retryable=False) from exc
        return self._client

    async def open_session(self, ctx: SessionContext) -> GeminiLiveSession:
        if (
            ctx.resume_handle
            and resume_needs_closed_socket(ctx.model or self.config.model)
            and any(not s.closed and s.resume_handle == ctx.resume_handle for s in self._sessions)
        ):
            # A renewal overlaps the session that issued the handle; gemini-3.8-live refuses
            # (1011) to resume a session whose socket is still open, so this one starts fresh
            # from the history instead. A recovery (old socket gone) still resumes.
            log.info("%s: %s renews while its session is open: fresh session with history", self.name, ctx.call_sid)
            ctx = dataclasses.replace(ctx, resume_handle=None)
        try:
            session = await self._open(ctx)
        except ProviderConnectError as exc:
            if not ctx.resume_handle or not isinstance(exc.__cause__, errors.APIError):
                raise
            # The service read the setup and closed: the handle may have expired (2 h) or been
            # refused. The history still carries the call. (Transport failures are re-raised:
            # retrying them is the recovery layer's job, with the handle.)
            log.warning("%s: resuming %s failed (%s); opening a fresh session", self.name, ctx.call_sid, exc)
            session = await self._open(dataclasses.replace(ctx, resume_handle=None))
        self._sessions.add(session)
        return session

    def route_config(self, ctx: SessionContext) -> GeminiLiveConfig:
        """The provider table with the route's ``provider_settings`` laid over it."""
        config = self.config_for(ctx)
        if not isinstance(config, GeminiLiveConfig):
            raise TypeError(f"{self.name}: route settings of type {type(config).__name__}")
        return config

    async def _open(self, ctx: SessionContext) -> GeminiLiveSession:
        stack = contextlib.AsyncExitStack()
        config = self.route_config(ctx)
        model = ctx.model or config.model
        plan = opening(ctx, model, vertex=config.vertex)
        try:
            async with asyncio.timeout(config.connect_timeout_s):
                live = await stack.enter_async_context(
                    self.client.aio.live.connect(model=model, config=connect_config(config, ctx, plan))
                )
                session = GeminiLiveSession(self.name, GeminiProtocol(config, ctx), live, stack)
                await session.start(plan)
        except (ProviderConnectError, asyncio.CancelledError):
            # Cancelled: the caller hung up while we connected. Close what is open either way.
            await _quiet_close(stack)
            raise
        except TimeoutError as exc:
            await _quiet_close(stack)
            raise ProviderConnectError(
                self.name, f"no setupComplete within {config.connect_timeout_s:g} s for {ctx.call_sid}"
            ) from exc
        except Exception as exc:
            await _quiet_close(stack)
            raise ProviderConnectError(
                self.name, f"connect for {ctx.call_sid} failed: {_describe(exc)}", retryable=_retryable(exc)
            ) from exc
        log.info(
            "%s: session open for %s (model %s%s)",
            self.name,
            ctx.call_sid,
            model,
            ", resumed" if ctx.resume_handle else "",
        )
        return session


async def _quiet_close(stack: contextlib.AsyncExitStack) -> None:
    try:
        await stack.aclose()
    except Exception as exc:
        log.debug("gemini connect cleanup: %r", exc)
