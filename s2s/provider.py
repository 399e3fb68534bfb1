"""The provider interface: what every S2S provider implements and the bridge relies on.

A :class:`Provider` is configured once per config load and opens one
:class:`ProviderSession` per call (or more, when the recovery layer reconnects or the
rotation policy renews a session). Sessions speak the neutral vocabulary of
:mod:`s2s.events`; nothing above this interface knows a provider's wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

from s2s.closing import CLOSE_TIMEOUT_S
from s2s.errors import VoicebotError
from s2s.events import Closed, ProviderError, ProviderEvent, Role, SessionExpiring
from s2s.tools import ToolSpec
from transcoding.formats import AudioFormat

log = logging.getLogger(__name__)


class ProviderConfig(BaseModel):
    """Fields every provider table in the config file has. Provider packages subclass it
    (``extra="forbid"`` so a typo in a key is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    max_sessions: int | None = Field(default=None, ge=1, description="concurrent sessions; none = unlimited")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="connect + handshake deadline")

    # The keys a route may set for its own calls (``[routes.provider_settings.NAME]``): how the
    # model behaves in the conversation. Credentials, endpoints and limits belong to the
    # provider table and are shared by every route, so they are never listed here.
    route_settings: ClassVar[frozenset[str]] = frozenset()

    def for_route(self, settings: Mapping[str, Any]) -> Self:
        """This table with a route's settings laid over it, validated as a whole (so a
        cross-field rule sees the route's values too). Raises ``ValueError`` for a key a route
        may not set and pydantic's ``ValidationError`` for a bad value."""
        fixed = sorted(set(settings) - self.route_settings)
        if fixed:
            allowed = ", ".join(sorted(self.route_settings)) or "none"
            raise ValueError(f"a route cannot set {', '.join(fixed)} of a {self.type} provider (it can set: {allowed})")
        if not settings:
            return self
        return self.model_validate({**dict(self), **settings})


class ProviderConnectError(VoicebotError):
    """Opening a session failed: refused, timed out, or the handshake went wrong.

    The recovery layer retries ``retryable`` errors and then moves down the fallback chain;
    a non-retryable one (bad credentials, unknown model) skips straight to the next provider."""

    def __init__(self, provider: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Turn:
    """One finished utterance of the conversation, kept for renewal, recovery and agents."""

    role: Role
    text: str


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Everything a provider needs to open a session for one call.

    ``history`` is the conversation so far when a session is reopened (recovery, renewal);
    providers replay it in their own history format. ``resume_handle`` is the opaque value a
    previous session of the *same* provider exposed (e.g. a Gemini resumption handle)."""

    call_sid: str
    instructions: str = ""
    voice: str | None = None
    model: str | None = None
    language: str | None = None
    greeting: str | None = None
    # The caller must hear the greeting in full (a disclosure). The bridge ignores barge-ins
    # until it has played; a provider that can also keep the caller from cutting the
    # greeting's generation does so (Gemini: s2s.gemini_live.protocol).
    greeting_uninterruptible: bool = False
    tools: tuple[ToolSpec, ...] = ()
    history: tuple[Turn, ...] = ()
    resume_handle: str | None = None
    # A route's own settings for providers of its chain, by provider name, already laid over
    # their tables (:meth:`ProviderConfig.for_route`); see :meth:`Provider.config_for`.
    provider_configs: Mapping[str, ProviderConfig] = field(default_factory=dict)


class ProviderSession(ABC):
    """One live conversation with a provider.

    Methods may be called from the bridge's inbound task while ``events()`` is consumed by
    its outbound task; implementations must tolerate that interleaving. After ``Closed`` has
    been yielded, send methods are no-ops (a late caller frame must not raise)."""

    input_format: AudioFormat
    output_format: AudioFormat
    # The full-duplex capability. A half-duplex session (None) is interrupted by barge-in and
    # truncated to what was heard, so its audio may queue at the phone edge. A full-duplex one
    # (the model owns turn-taking; its context is append-only) sets how far, in ms, its audio
    # may run ahead of what the caller hears: the bridge paces it (telephony.pacing).
    playout_lead_ms: int | None = None

    @abstractmethod
    async def send_audio(self, audio: bytes) -> None:
        """Caller audio in ``input_format``; any length."""

    async def send_caller_frame(self, audio: bytes, level_dbfs: float) -> None:
        """Caller audio whose level the bridge already measured on the phone frame (once per
        frame, shared by every detector). Layers that watch the caller's level (the recovery
        layer's watchdog) use it instead of measuring again; a plain session just sends."""
        await self.send_audio(audio)

    @abstractmethod
    async def send_text(self, text: str) -> None:
        """Caller-side text (DTMF digits, a note), which the model answers as a user turn."""

    @abstractmethod
    async def truncate(self, item_id: str, heard_ms: int) -> None:
        """The caller heard only the first ``heard_ms`` of bot utterance ``item_id``."""

    @abstractmethod
    async def send_tool_result(self, call_id: str, output: str) -> None:
        """Answer a :class:`~s2s.events.ToolCall`; ``output`` is usually JSON text."""

    @abstractmethod
    def events(self) -> AsyncIterator[ProviderEvent]:
        """The session's events, ending with exactly one :class:`~s2s.events.Closed`."""

    @abstractmethod
    async def close(self) -> None:
        """Close on our initiative; idempotent. Ends ``events()`` with ``Closed(error=False)``."""

    @property
    def resume_handle(self) -> str | None:
        """Opaque handle a follow-up session of the same provider can resume from."""
        return None


class QueuedSession(ProviderSession):
    """Shared plumbing for sessions whose wire reader runs as a task.

    The reader turns wire events into neutral ones with :meth:`emit`; ``events()`` drains
    them. A reader that ends or raises without ``close()`` having been called produces
    ``Closed(error=True)``, which is how the recovery layer learns of a dropped connection.
    The queue is unbounded on purpose: providers send faster than real time and the bridge
    drains without blocking, so back-pressure here would only add latency."""

    def __init__(self, provider_name: str) -> None:
        self.provider_name = provider_name
        self._queue: asyncio.Queue[ProviderEvent] = asyncio.Queue()
        self._closed = False
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._sink: Callable[[ProviderEvent], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed or self._closing

    def emit(self, event: ProviderEvent) -> None:
        if self._closed:
            return
        if isinstance(event, Closed):
            self._closed = True
        if self._sink is not None:
            self._sink(event)
        else:
            self._queue.put_nowait(event)

    def attach(self, sink: Callable[[ProviderEvent], None]) -> None:
        """Hand events straight to ``sink`` (the recovery layer's queue) from now on, instead
        of queueing them for ``events()``; what is queued already goes first. Bot audio then
        crosses one queue and no extra task between the wire reader and the bridge."""
        while not self._queue.empty():
            sink(self._queue.get_nowait())
        self._sink = sink

    def start_reader(self, reader: Awaitable[None]) -> None:
        self._reader = asyncio.ensure_future(self._run_reader(reader))

    def announce_expiry(self, after_s: float, limit_s: float, reason: str) -> None:
        """Emit ``SessionExpiring`` ``after_s`` from now, for providers whose sessions end at a
        known age (``limit_s``); the rotation policy then renews the session between turns."""

        def expiring() -> None:
            log.info("%s session open %.0f s, renewal due (%s)", self.provider_name, after_s, reason)
            self.emit(SessionExpiring(reason, seconds_left=limit_s - after_s))

        self._expiry = asyncio.get_running_loop().call_later(after_s, expiring)

    async def _run_reader(self, reader: Awaitable[None]) -> None:
        try:
            await reader
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the wire failed: report it as a provider loss
            if not self._closing:
                log.warning("%s session reader failed: %r", self.provider_name, exc)
                self.emit(ProviderError("transport", f"{type(exc).__name__}: {exc}", fatal=True))
        if self._closing:
            self.emit(Closed("closed by voicebot"))
        else:
            self.emit(Closed(f"{self.provider_name} ended the session", error=True))

    async def events(self) -> AsyncIterator[ProviderEvent]:
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, Closed):
                return

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._closing or self._closed:
            return
        self._closing = True
        try:
            await asyncio.wait_for(self._close_transport(), timeout=CLOSE_TIMEOUT_S)
        except (TimeoutError, Exception) as exc:
            log.debug("%s transport close: %r", self.provider_name, exc)
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self.emit(Closed("closed by voicebot"))

    @abstractmethod
    async def _close_transport(self) -> None:
        """Send the provider's goodbye (if any) and close the socket/stream."""


class Provider(ABC):
    """A configured provider (one ``[providers.NAME]`` table)."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config

    @property
    def max_sessions(self) -> int | None:
        return self.config.max_sessions

    def config_for(self, ctx: SessionContext) -> ProviderConfig:
        """The table this session runs with: the route's settings over the provider's."""
        return ctx.provider_configs.get(self.name, self.config)

    @abstractmethod
    async def open_session(self, ctx: SessionContext) -> ProviderSession:
        """Connect and finish the handshake; raise :class:`ProviderConnectError` on failure.
        Callers bound this with ``config.connect_timeout_s``."""
