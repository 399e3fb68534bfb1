"""Nova Sonic sessions: the thin asyncio shell around :class:`~s2s.nova_sonic.protocol.NovaProtocol`.

One session = one bidirectional stream. The reader task turns output events into neutral
events; the send methods (called from the bridge's inbound task, the tool dispatcher and the
greeting) serialise their events through one lock, because a TEXT or TOOL content is three
events that must not be split by an ``audioInput``.

Renewal: AWS closes a stream after ~8 minutes (``ModelTimeoutException``). The session
emits :class:`~s2s.events.SessionExpiring` ``renew_after_s`` after it opened; the shared
rotation policy then opens the next session with ``ctx.history`` (replayed as Nova history,
see :mod:`s2s.nova_sonic.history`) and hands over between turns. If the limit is hit anyway,
or the stream drops (``receive()`` returning ``None`` unasked), the session ends with
``ProviderError(fatal=True)`` + ``Closed(error=True)`` for the recovery layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import wave
from pathlib import Path

from s2s.call_context import logged_text
from s2s.closing import ABANDON_TIMEOUT_S, CLOSE_TIMEOUT_S
from s2s.events import Closed, ProviderError
from s2s.nova_sonic.config import NovaSonicConfig
from s2s.nova_sonic.history import shape_history
from s2s.nova_sonic.protocol import NovaProtocol, PromptSettings, ProtocolStateError
from s2s.nova_sonic.transport import NovaStream, NovaStreamError, StreamFactory, stream_factory_for
from s2s.provider import Provider, ProviderConfig, ProviderConnectError, QueuedSession, SessionContext
from transcoding.formats import AudioFormat

log = logging.getLogger(__name__)

GREETING_CUE_LEAD_S = 0.5
"""Silence before the v1 greeting cue: the model misses the first moments of audio on a fresh
stream (pipecat's observation, which it handles the same way)."""

CUE_CHUNK_S = 0.02


def greeting_request(greeting: str) -> str:
    """The Nova 2 user text that makes the bot open the call (Nova has no "respond now"
    event; a cross-modal USER text turn is how AWS documents text-initiated answers)."""
    return f"The phone call has just connected. Greet the caller now by saying: {greeting}"


def v1_greeting_instructions(greeting: str) -> str:
    return (
        "\n\nThe first thing you hear on this call is a short connection cue, not the caller; "
        f"answer it by greeting the caller with: {greeting}"
    )


class NovaSonicSession(QueuedSession):
    def __init__(
        self,
        provider_name: str,
        config: NovaSonicConfig,
        ctx: SessionContext,
        stream: NovaStream,
        protocol: NovaProtocol,
    ) -> None:
        super().__init__(provider_name)
        self.config = config
        self.call_sid = ctx.call_sid
        self.input_format = AudioFormat("pcm16", config.input_sample_rate)
        self.output_format = AudioFormat("pcm16", config.output_sample_rate)
        self.protocol = protocol
        self._stream = stream
        self._send_lock = asyncio.Lock()
        self._cue: asyncio.Task[None] | None = None
        self._stream_ended = False  # the service ended or reset the stream: no goodbye to send
        self._release: asyncio.Future[None] | None = None

    def start(self) -> None:
        self.start_reader(self._read())
        self.announce_expiry(self.config.renew_after_s, self.config.stream_limit_s, "stream limit")

    # ------------------------------------------------------------------- reading

    async def _read(self) -> None:
        while True:
            try:
                message = await self._stream.receive()
            except NovaStreamError as exc:
                self._stream_ended = True
                if self._closing:
                    return
                log.warning("nova_sonic %s: stream failed (%s); ending session", self.call_sid, exc)
                self.emit(ProviderError(exc.code, exc.message, fatal=True))
                self._release_stream()
                return
            if message is None:
                self._stream_ended = True
                if not self._closing:
                    # The SDK reports a reset or lost connection as a plain end of stream.
                    log.warning("nova_sonic %s: stream ended without being closed; treating as a drop", self.call_sid)
                    self.emit(ProviderError("stream_dropped", "stream ended unexpectedly", fatal=True))
                    self._release_stream()
                return
            self.protocol.receive(message)
            for event in self.protocol.events_received():
                if isinstance(event, ProviderError):
                    log.warning("nova_sonic %s: %s: %s (ignored)", self.call_sid, event.code, event.message)
                self.emit(event)

    # ------------------------------------------------------------------- sending

    async def _flush(self) -> None:
        """Send the input events the protocol queued, in order."""
        if self.closed:
            self.protocol.data_to_send()  # the stream is gone: nothing queued can matter now
            return
        try:
            async with self._send_lock:
                for event in self.protocol.data_to_send():
                    await self._stream.send(event)
        except NovaStreamError as exc:
            self._fail(exc)

    def _fail(self, exc: NovaStreamError) -> None:
        """A send failed: the stream is unusable. End the session now rather than waiting for
        the reader, which may block on a stream that never answers again."""
        if self.closed:
            return
        log.warning("nova_sonic %s: send failed (%s); ending session", self.call_sid, exc)
        self.emit(ProviderError(exc.code, exc.message, fatal=True))
        self.emit(Closed(f"{self.provider_name} stream failed: {exc.code}", error=True))
        if self._reader is not None:
            self._reader.cancel()
        self._release_stream()

    def _release_stream(self) -> None:
        """Close the stream in the background after a failure we did not ask for. ``close()``
        is a no-op once ``Closed`` went out, so without this the SDK stream would stay
        half-open; the close is bounded because a reset stream can block forever."""
        self._stop_timers()
        if self._release is None:
            self._release = asyncio.ensure_future(self._bounded_stream_close())

    async def _bounded_stream_close(self) -> None:
        try:
            await asyncio.wait_for(self._stream.close(), timeout=CLOSE_TIMEOUT_S)
        except Exception as exc:  # already failed; only log what closing did
            log.debug("nova_sonic %s: releasing the failed stream: %r", self.call_sid, exc)

    async def send_audio(self, audio: bytes) -> None:
        if self.closed or (self._cue is not None and not self._cue.done()):
            return  # during the v1 greeting cue the caller is listening, not talking
        self.protocol.send_audio(audio)
        await self._flush()

    async def send_text(self, text: str) -> None:
        if self.closed:
            return
        try:
            self.protocol.send_text(text)
        except ProtocolStateError as exc:
            log.warning("nova_sonic %s: text %r not sent: %s", self.call_sid, logged_text(text), exc)
            self.emit(ProviderError("unsupported", f"text input: {exc}"))
            return
        await self._flush()

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        """Nothing to send. Nova's own barge-in already stopped generation where the caller
        spoke, it keeps its context of what it said, and the protocol has no event to edit an
        assistant turn. The gap between what Nova sent and what the caller heard is the
        audio the bridge cleared from Twilio; Nova cannot be told about it."""
        log.debug(
            "nova_sonic %s: barge-in on %s after %d ms heard (no truncate in Nova)",
            self.call_sid,
            item_id,
            heard_ms,
        )

    async def send_tool_result(self, call_id: str, output: str) -> None:
        if self.closed:
            return
        self.protocol.send_tool_result(call_id, output)
        await self._flush()

    def start_greeting_cue(self, pcm: bytes) -> None:
        self._cue = asyncio.ensure_future(self.play_cue(pcm))

    async def play_cue(self, pcm: bytes) -> None:
        """Stream a recorded cue as caller audio, in real time (v1 greeting)."""
        chunk = self.input_format.nbytes(CUE_CHUNK_S * 1000)
        lead = bytes(self.input_format.nbytes(GREETING_CUE_LEAD_S * 1000))
        data = lead + pcm
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, offset in enumerate(range(0, len(data), chunk)):
            if self.closed:
                return
            self.protocol.send_audio(data[offset : offset + chunk])
            await self._flush()
            await asyncio.sleep(max(0.0, start + (i + 1) * CUE_CHUNK_S - loop.time()))

    # ------------------------------------------------------------------- closing

    def _stop_timers(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._cue is not None:
            self._cue.cancel()

    async def _close_transport(self) -> None:
        self._stop_timers()
        try:
            async with self._send_lock:
                self.protocol.end()
                for event in self.protocol.data_to_send():
                    if self._stream_ended:
                        break
                    await self._stream.send(event)
        except NovaStreamError as exc:
            log.debug("nova_sonic %s: goodbye events not sent: %s", self.call_sid, exc)
        finally:
            await self._stream.close()


class NovaSonicProvider(Provider):
    """``stream_factory`` is the constructor-level seam (unit tests); without it the factory
    follows ``endpoint_url`` (the SDK, or a ``memory://`` factory for whole-server tests)."""

    config: NovaSonicConfig

    def __init__(self, name: str, config: ProviderConfig, stream_factory: StreamFactory | None = None) -> None:
        if not isinstance(config, NovaSonicConfig):
            raise TypeError(f"{name}: expected NovaSonicConfig, got {type(config).__name__}")
        super().__init__(name, config)
        self._factory = stream_factory
        self._greeting_cue = (
            load_cue(config.greeting_audio, config.input_sample_rate) if config.greeting_audio else None
        )

    async def open_session(self, ctx: SessionContext) -> NovaSonicSession:
        config = self.config
        model_id = ctx.model or config.model_id
        if ctx.model:
            config = config.model_copy(update={"model_id": model_id})
        nova2 = config.is_nova2
        instructions = ctx.instructions or config.instructions
        # A reopened session (renewal, recovery) carries history: the call is under way, so
        # the greeting must not be spoken again.
        greeting = ctx.greeting if not ctx.history else None
        cue = None
        if greeting and not nova2:
            if self._greeting_cue is not None:
                cue = self._greeting_cue
                instructions += v1_greeting_instructions(greeting)
            else:
                log.info(
                    "nova_sonic %s: %s cannot speak first without caller audio and no greeting_audio "
                    "is configured; the caller speaks first",
                    ctx.call_sid,
                    model_id,
                )
        protocol = NovaProtocol(
            PromptSettings(
                instructions=instructions,
                voice=ctx.voice or config.voice,
                input_sample_rate=config.input_sample_rate,
                output_sample_rate=config.output_sample_rate,
                tools=ctx.tools,
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                endpointing_sensitivity=config.endpointing_sensitivity,
                nova2=nova2,
            )
        )
        protocol.open(shape_history(ctx.history))
        opening = protocol.data_to_send()
        if self._factory is None:
            # One factory per provider, so every call (and every renewal) shares one SDK
            # client and its HTTP/2 connections.
            try:
                self._factory = stream_factory_for(self.config)
            except NovaStreamError as exc:
                raise ProviderConnectError(self.name, str(exc), retryable=False) from exc
        stream = self._factory()
        try:
            await asyncio.wait_for(stream.open(model_id, opening), timeout=config.connect_timeout_s)
        except (TimeoutError, NovaStreamError, asyncio.CancelledError) as exc:
            # Never leave a half-open stream behind, and never block on closing it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.close(), timeout=ABANDON_TIMEOUT_S)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if isinstance(exc, NovaStreamError):
                raise ProviderConnectError(self.name, f"open failed: {exc}", retryable=exc.retryable) from exc
            raise ProviderConnectError(self.name, f"no response within {config.connect_timeout_s} s") from exc
        session = NovaSonicSession(self.name, config, ctx, stream, protocol)
        session.start()
        await asyncio.sleep(0)  # let the reader task begin, so an immediate close() finds it running
        log.info(
            "nova_sonic %s: stream open (%s, %s in / %s out, %d history messages)",
            ctx.call_sid,
            model_id,
            session.input_format,
            session.output_format,
            len(ctx.history),
        )
        if greeting and nova2:
            await session.send_text(greeting_request(greeting))
        elif cue is not None:
            session.start_greeting_cue(cue)
        return session


def load_cue(path: Path, sample_rate: int) -> bytes:
    """Read the v1 greeting cue; it must already be mono 16-bit PCM at the input rate (no
    resampling at call time)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2 or wav.getframerate() != sample_rate:
            raise ValueError(
                f"{path}: greeting_audio must be mono 16-bit {sample_rate} Hz WAV, got "
                f"{wav.getnchannels()} ch {8 * wav.getsampwidth()}-bit {wav.getframerate()} Hz"
            )
        return wav.readframes(wav.getnframes())
