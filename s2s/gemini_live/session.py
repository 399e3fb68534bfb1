"""The asyncio shell: one google-genai Live connection per :class:`GeminiLiveSession`.

Everything Gemini-specific that is not I/O lives in :mod:`s2s.gemini_live.protocol` and
:mod:`s2s.gemini_live.setup`; this module opens the SDK session, pumps its messages through
the mapper and sends what the bridge asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import ssl
import weakref
from typing import Any

import websockets
from google import genai
from google.genai import errors, types
from google.genai.live import AsyncSession

from s2s.events import ProviderError
from s2s.gemini_live.config import GeminiLiveConfig
from s2s.gemini_live.protocol import GeminiProtocolError, HeldNote, LiveEventMapper
from s2s.gemini_live.setup import (
    INPUT_MIME,
    Opening,
    client_content_waits,
    connect_config,
    opening,
    resume_needs_closed_socket,
    text_turn,
    tool_result_scheduling,
)
from s2s.provider import Provider, ProviderConfig, ProviderConnectError, QueuedSession, SessionContext
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
    client_args: dict[str, Any] = {"ping_interval": 20.0, "ping_timeout": config.keepalive_timeout_s}
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
    """One Gemini Live conversation on one WebSocket.

    Audio: PCM16 16 kHz in, PCM16 24 kHz out (https://ai.google.dev/gemini-api/docs/live-guide,
    audio formats); the bridge resamples
    from and to the 8 kHz mu-law of the phone line. The mapper rejects any other output
    rate, so a model change can never play at the wrong speed unnoticed."""

    input_format = PCM16_16K
    output_format = PCM16_24K

    def __init__(
        self,
        provider_name: str,
        config: GeminiLiveConfig,
        ctx: SessionContext,
        live: AsyncSession,
        exit_stack: contextlib.AsyncExitStack,
    ) -> None:
        super().__init__(provider_name)
        self.config = config
        self.ctx = ctx
        self.mapper = LiveEventMapper()
        self._live = live
        self._exit_stack = exit_stack
        self._model = ctx.model or config.model
        self._held_note: HeldNote | None = None

    @property
    def resume_handle(self) -> str | None:
        return self.mapper.resume_handle

    async def start(self, plan: Opening) -> None:
        """Replay history / ask for the greeting (see :func:`~s2s.gemini_live.setup.opening`),
        then start reading."""
        if plan.seed:
            content: list[types.Content | types.ContentDict] = [*plan.seed]
            await self._live.send_client_content(turns=content, turn_complete=plan.complete)
        if plan.prompt:
            await self._live.send_realtime_input(text=plan.prompt)
        self.start_reader(self._read())

    async def _read(self) -> None:
        try:
            await self._pump()
        finally:
            # Transcripts held back for a truncate() that will not come now.
            for event in self.mapper.flush():
                self.emit(event)
            usage = self.mapper.usage
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
                    for event in self.mapper.feed(message):
                        self.emit(event)
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
        log.warning(
            "%s session of %s closed by the service (%s); the recovery layer takes over",
            self.provider_name,
            self.ctx.call_sid,
            _describe(exc),
        )
        self.emit(ProviderError("connection_closed", _describe(exc), fatal=True))

    # -- bridge -> Gemini -------------------------------------------------------------------

    async def _send(self, what: str, coro: Any) -> None:
        """Run one SDK send. A send racing a dropped socket fails quietly: the reader reports
        the loss once, as ``Closed(error=True)``, and the bridge must not crash meanwhile."""
        try:
            await coro
        except (websockets.exceptions.ConnectionClosed, errors.APIError) as exc:
            log.debug("%s: %s not sent, connection closing: %r", self.provider_name, what, exc)

    async def send_audio(self, audio: bytes) -> None:
        if self.closed or not audio:
            return
        await self._send("audio", self._live.send_realtime_input(audio=types.Blob(data=audio, mime_type=INPUT_MIME)))
        held = self._held_note
        if held is not None:
            if self.mapper.bot_turns != held.bot_turns:
                self._held_note = None  # the model answered without it; too late now
                log.info(
                    "%s: barge-in note for %s dropped: the model answered first", self.provider_name, self.ctx.call_sid
                )
            elif held.caller_audio(audio, self.input_format.sample_rate):
                self._held_note = None
                await self._send("barge-in note", self._live.send_realtime_input(text=held.text))

    async def send_text(self, text: str) -> None:
        """Realtime text (DTMF digits, a note) is answered like speech, without the ordering
        and interruption semantics of ``clientContent`` (https://ai.google.dev/api/live)."""
        if self.closed or not text:
            return
        await self._send("text", self._live.send_realtime_input(text=text))

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        """Tell the model what the caller heard of its interrupted answer.

        Gemini has no truncate call and keeps in its context everything it *sent*, which
        streams faster than real time, so after a barge-in it believes the caller heard the
        whole answer. The correction is a one-line note quoting the heard part of the answer's
        output transcription, cut at ``heard_ms / total audio ms`` (see
        :func:`~s2s.gemini_live.protocol.heard_prefix`).

        The bridge calls this right after ``interrupted``, while the caller is talking, and the
        note must never start an answer over the caller:

        - gemini-3.8-live documents ``clientContent`` for the whole session, and that content
          without ``turnComplete`` waits for what follows instead of starting an answer
          (https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live). The note goes at once,
          as a user turn with ``turnComplete=false``, and joins the caller's turn.
        - Earlier models: an incomplete ``clientContent`` stops answers to later realtime audio
          on 2.5 (google-gemini/live-api-web-console#60) and 3.1 closes the socket on it
          (1007); whether realtime text during caller activity starts an answer is not
          documented. So the note is held (:class:`~s2s.gemini_live.protocol.HeldNote`) and
          sent as realtime text when the caller goes quiet, just before the service's own
          end of turn, or dropped if the model answers first.

        Caveats: the cut assumes an even speaking rate; without output transcription the note
        can only give the seconds heard."""
        if self.closed:
            return
        note, events = self.mapper.truncate(item_id, heard_ms, has_transcript=self.config.output_transcription)
        for event in events:
            self.emit(event)
        if note is None:
            return
        log.info(
            "%s: caller heard %d of %.0f ms of %s; telling the model",
            self.provider_name,
            note.heard_ms,
            note.total_ms,
            item_id,
        )
        if client_content_waits(self._model):
            await self._send(
                "barge-in note",
                self._live.send_client_content(turns=[text_turn("user", note.text)], turn_complete=False),
            )
            return
        quiet_ms = 200.0
        if self.config.silence_duration_ms:
            quiet_ms = min(quiet_ms, self.config.silence_duration_ms / 2)
        self._held_note = HeldNote(note.text, self.mapper.bot_turns, quiet_ms=quiet_ms)

    async def send_tool_result(self, call_id: str, output: str) -> None:
        name = self.mapper.pending_tool_calls.pop(call_id, None)
        if self.closed:
            return
        if name is None:
            log.warning("%s: result for unknown or cancelled tool call %s dropped", self.provider_name, call_id)
            return
        try:
            parsed = json.loads(output)
        except ValueError:
            parsed = output
        # FunctionResponse.response must be an object; the id and name tie it to the call.
        response = parsed if isinstance(parsed, dict) else {"output": parsed}
        await self._send(
            "tool result",
            self._live.send_tool_response(
                function_responses=[
                    types.FunctionResponse(
                        id=call_id, name=name, response=response, scheduling=tool_result_scheduling(self._model)
                    )
                ]
            ),
        )

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

    async def _open(self, ctx: SessionContext) -> GeminiLiveSession:
        stack = contextlib.AsyncExitStack()
        model = ctx.model or self.config.model
        plan = opening(ctx, model, vertex=self.config.vertex)
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                live = await stack.enter_async_context(
                    self.client.aio.live.connect(model=model, config=connect_config(self.config, ctx, plan))
                )
                session = GeminiLiveSession(self.name, self.config, ctx, live, stack)
                await session.start(plan)
        except (ProviderConnectError, asyncio.CancelledError):
            # Cancelled: the caller hung up while we connected. Close what is open either way.
            await _quiet_close(stack)
            raise
        except TimeoutError as exc:
            await _quiet_close(stack)
            raise ProviderConnectError(
                self.name, f"no setupComplete within {self.config.connect_timeout_s:g} s for {ctx.call_sid}"
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
