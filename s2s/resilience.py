"""Fallback, silent retry, mid-call recovery and session renewal — once, above every provider.

The bridge talks to one :class:`ResilientSession`; behind it, real provider sessions come
and go. No provider module knows about any of this: a provider only opens sessions, speaks
the neutral events, reports ``Closed(error=True)`` when its connection dies, emits
``SessionExpiring`` before a limit and may expose ``resume_handle``.

Connect (call start, recovery, renewal) walks the route's provider chain. Each provider
gets up to ``attempts`` tries with jittered exponential backoff, all within ``budget_s``
(the route's ``retry_budget_s``): an attempt's timeout is the provider's
``connect_timeout_s`` cut to what is left of the budget, so a refused or dead port moves
on in a few hundred ms and a provider that accepts TCP but never finishes its handshake
costs at most the budget. The last provider of the chain is the exception: with nothing
to fall back to, its attempts get the full ``connect_timeout_s``. Providers whose circuit
is open (:mod:`s2s.circuit`) or that have no free slot (``SessionSlots``) are skipped.

Mid-call loss: an inner ``Closed(error=True)``, or the watchdog — the caller spoke (at
least ``WATCHDOG_MIN_SPEECH_MS`` of voiced audio), went quiet, and the session sent nothing
at all for ``watchdog_s`` after the caller's last voiced audio (measured from the end of
speech, because some providers are silent during a long utterance). A provider that is
healthy but hears only noise it rightly ignores looks the same, hence the generous default
(8 s) and the minimum speech; a false alarm costs a silent reconnect with history, not the
call. Then a new session opens: the same provider first (with its
``resume_handle``), then the rest of the chain, each with the route's instructions and the
conversation so far as ``SessionContext.history`` and no greeting. The history is read
from the bridge's transcript (the one copy, ``CallSummary.transcript``) through the
``history`` callable. The caller's stream stays open: they hear a pause, not a drop.

Caller audio during recovery is kept, up to ``buffer_ms`` (default 3 s), and replayed to
the new session in order, transcoded if the new provider takes another format; audio older
than ``buffer_ms`` when the session comes up is dropped, since a provider answering a
sentence the caller said long ago would be worse than asking again. If recovery fails the
stream ends with ``Closed(error=True)``; the bridge ends as ``provider-lost`` and the
runtime serves the route's apology when Twilio fetches the TwiML after ``<Connect>``.

Renewal (the rotation policy for Gemini ``goAway``, Nova's stream limit, session caps):
on ``SessionExpiring`` the replacement opens *in the background*, at the next point between
turns — bot not speaking (no ``AudioOut`` since the last ``TurnDone``), caller not
speaking (no ``SpeechStarted`` without ``SpeechStopped``, no voiced caller audio in the
last ``QUIET_S``) — while the old session keeps serving the call. It gets instructions,
history and, for the same provider, the old session's ``resume_handle``. Once it is up
and the call is still between turns with no new turn since it was opened, the swap is
one assignment (no audible gap); the old session is closed in the background within
``close_timeout_s``. If a turn happened meanwhile the replacement's history is stale: it is
discarded and reopened at the next gap (a provider whose transcript arrives after its
``TurnDone`` therefore costs one extra open, never a stale history). If the old session
dies first, the ordinary recovery path takes over. During the overlap the call holds one
admission slot although two sessions of the same provider are briefly open: limits count
calls, and the overlap lasts one handshake.

Item ids: sessions opened after the first have their ``item_id``s prefixed ``r<N>:`` so
the bridge's per-item bookkeeping (dropped items, marks) never confuses two sessions that
number items the same way; ``truncate`` strips the prefix and drops items of an old session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from s2s.circuit import CircuitBoard
from s2s.events import (
    AudioOut,
    Closed,
    ProviderError,
    ProviderEvent,
    SessionExpiring,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    TurnDone,
)
from s2s.provider import Provider, ProviderConnectError, ProviderSession, QueuedSession, SessionContext, Turn
from transcoding.formats import AudioFormat
from transcoding.levels import frame_dbfs
from transcoding.mulaw import mulaw_to_pcm16
from transcoding.pipeline import Transcoder, make_transcoder

log = logging.getLogger(__name__)

# Caller audio above this level counts as speech for the watchdog and the renewal gap.
VOICED_DBFS = -40.0
# The watchdog arms only after this much voiced caller audio with no event in return: a
# cough or a click that a provider's VAD rightly ignores must not count as a lost session.
WATCHDOG_MIN_SPEECH_MS = 400.0
# The caller is "not speaking" once no voiced audio has been sent for this long.
QUIET_S = 0.4
# How often the event loop re-checks for a renewal gap while one is wanted, and otherwise
# whether caller speech has started the watchdog (send_audio runs on another task).
RENEWAL_POLL_S = 0.05
WATCHDOG_POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    budget_s: float = 1.5
    attempts: int = 3
    backoff_s: float = 0.1
    watchdog_s: float = 8.0
    buffer_ms: int = 3000
    close_timeout_s: float = 2.0


class SessionSlots(Protocol):
    """Admission control as the recovery layer sees it (``voicebot.calls.admission.SlotLease``)."""

    async def move_to(self, provider: str) -> bool:
        """Hold this call's slot on ``provider``; False when it has no room."""


def is_voiced(audio: bytes, fmt: AudioFormat) -> bool:
    pcm = mulaw_to_pcm16(audio) if fmt.encoding == "mulaw" else audio[: len(audio) - len(audio) % 2]
    return bool(pcm) and frame_dbfs(pcm) > VOICED_DBFS


@dataclass(slots=True)
class _Live:
    """One inner session and what the wrapper needs to know about it."""

    provider: Provider
    session: ProviderSession
    generation: int
    pump: asyncio.Task[None] | None = None

    def inward(self, item_id: str) -> str | None:
        """The session's own id for an outward id, or None if it belongs to another session."""
        if self.generation == 1:
            return None if item_id.startswith("r") and ":" in item_id else item_id
        prefix = f"r{self.generation}:"
        return item_id[len(prefix) :] if item_id.startswith(prefix) else None


@dataclass(slots=True)
class _Renewal:
    task: asyncio.Task[_Live]
    turns_at_open: int


def _ignore(*args: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ResilienceHooks:
    """Where this layer reports what it did, as it happens (voicebot.telemetry wires its
    metrics and span events here; the defaults report nothing). ``retry(provider, kind,
    attempt)``: an attempt failed and will be retried (kind: timeout, refused, error);
    ``fallback(from_provider, to_provider, why)``: a session opened further down the chain
    (why: connect, recovery); ``recovered(lost_provider, new_provider, kind, ok,
    duration_s)``: a mid-call recovery finished (kind: session-lost, watchdog)."""

    retry: Callable[[str, str, int], None] = _ignore
    fallback: Callable[[str, str, str], None] = _ignore
    recovered: Callable[[str, str | None, str, bool, float], None] = _ignore


class ResilientSession(ProviderSession):
    """A provider session that survives its providers. See the module docstring."""

    def __init__(
        self,
        chain: Sequence[Provider],
        ctx: SessionContext,
        policy: RecoveryPolicy,
        circuits: CircuitBoard,
        *,
        slots: SessionSlots | None = None,
        history: Callable[[], Sequence[Turn]] = lambda: (),
        attempt_context: Callable[[str], AbstractContextManager[Any]] = lambda provider: nullcontext(),
        hooks: ResilienceHooks = ResilienceHooks(),
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not chain:
            raise ValueError("a ResilientSession needs at least one provider")
        self.chain = list(chain)
        self.ctx = ctx
        self.policy = policy
        self.circuits = circuits
        self.slots = slots
        self.history = history
        self.attempt_context = attempt_context  # wraps each connect attempt (metrics, traces)
        self.hooks = hooks
        self.rng = rng
        self.clock = clock
        self.generations = 0
        self.opened: list[tuple[str, SessionContext]] = []  # (provider, context) of every session opened
        self.recoveries = 0
        self.renewed_at: list[float] = []  # clock() of each between-turn swap (tests, metrics)
        self._live: _Live | None = None
        self._queue: asyncio.Queue[tuple[_Live, ProviderEvent]] = asyncio.Queue()
        self._closing = False
        self._recovering = False
        self._buffer: deque[tuple[float, AudioFormat, bytes]] = deque()
        self._buffer_ms = 0.0
        self._background: set[asyncio.Task[Any]] = set()
        # Turn state, for the watchdog and for finding a gap to renew in.
        self._last_event_at = clock()
        self._last_voiced_at = float("-inf")
        self._unanswered_ms = 0.0
        self._bot_speaking = False
        self._caller_speaking = False
        self._expiring: SessionExpiring | None = None
        self._renewal: _Renewal | None = None

    # -- opening -----------------------------------------------------------------------------

    @property
    def call_sid(self) -> str:
        return self.ctx.call_sid

    @property
    def current(self) -> ProviderSession | None:
        return self._live.session if self._live else None

    @property
    def provider_name(self) -> str | None:
        return self._live.provider.name if self._live else None

    async def open(self) -> None:
        """Open the first session; raises :class:`ProviderConnectError` if no provider can."""
        self._adopt(await self._open_chain(self.chain, reopening=False))

    def _context_for(self, provider: Provider, reopening: bool) -> SessionContext:
        if not reopening:
            return self.ctx
        same = self._live is not None and self._live.provider.name == provider.name
        return dataclasses.replace(
            self.ctx,
            greeting=None,
            history=tuple(self.history()),
            resume_handle=self._live.session.resume_handle if same and self._live else None,
        )

    def _reopen_order(self) -> list[Provider]:
        """Same provider first, then the rest of the route's chain in order."""
        assert self._live is not None
        first = self._live.provider
        return [first, *(p for p in self.chain if p.name != first.name)]

    async def _open_chain(self, order: Sequence[Provider], reopening: bool) -> _Live:
        problems: list[str] = []
        for index, provider in enumerate(order):
            if not self.circuits[provider.name].available():
                problems.append(f"{provider.name}: circuit open")
                continue
            if self.slots is not None and not await self.slots.move_to(provider.name):
                problems.append(f"{provider.name}: no free session slot")
                continue
            session = await self._try_provider(provider, index == len(order) - 1, reopening, problems)
            if session is not None:
                if index > 0:
                    self.hooks.fallback(order[0].name, provider.name, "recovery" if reopening else "connect")
                self.generations += 1
                return _Live(provider, session, self.generations)
        raise ProviderConnectError(
            "/".join(p.name for p in order), "no provider could be opened: " + "; ".join(problems), retryable=False
        )

    async def _try_provider(
        self, provider: Provider, last: bool, reopening: bool, problems: list[str]
    ) -> ProviderSession | None:
        breaker = self.circuits[provider.name]
        deadline = self.clock() + self.policy.budget_s
        timeout_cap = provider.config.connect_timeout_s
        for attempt in range(1, self.policy.attempts + 1):
            left = deadline - self.clock()
            timeout = timeout_cap if last else min(timeout_cap, left)
            if timeout <= 0 or not breaker.allow_attempt():
                break
            ctx = self._context_for(provider, reopening)
            try:
                with self.attempt_context(provider.name):
                    session = await asyncio.wait_for(provider.open_session(ctx), timeout)
            except TimeoutError:
                problem, retryable, kind = f"connect timed out after {timeout:.2f} s", True, "timeout"
            except ProviderConnectError as exc:
                problem, retryable, kind = str(exc), exc.retryable, "refused"
            except Exception as exc:  # an SDK error type we do not know: treat as a failed connect
                problem, retryable, kind = f"{type(exc).__name__}: {exc}", True, "error"
            else:
                breaker.record_success()
                self.opened.append((provider.name, ctx))
                return session
            breaker.record_failure()
            problems.append(f"{provider.name} attempt {attempt}: {problem}")
            delay = self.policy.backoff_s * 2 ** (attempt - 1) * (0.5 + 0.5 * self.rng())
            retry = retryable and attempt < self.policy.attempts and self.clock() + delay < deadline
            log.warning(
                "call %s: %s connect attempt %d failed (%s); %s",
                self.call_sid,
                provider.name,
                attempt,
                problem,
                f"retrying in {delay * 1000:.0f} ms" if retry else "moving on",
            )
            if not retry:
                break
            self.hooks.retry(provider.name, kind, attempt)
            await asyncio.sleep(delay)
        return None

    def _adopt(self, live: _Live) -> None:
        self._live = live
        self.input_format = live.session.input_format
        self.output_format = live.session.output_format
        self.playout_lead_ms = live.session.playout_lead_ms
        self._last_event_at = self.clock()
        self._unanswered_ms = 0.0
        self._bot_speaking = self._caller_speaking = False
        self._expiring = None
        live.pump = asyncio.ensure_future(self._pump(live))
        log.info(
            "call %s: session %d on %s (%s in / %s out)",
            self.call_sid,
            live.generation,
            live.provider.name,
            live.session.input_format,
            live.session.output_format,
        )

    async def _pump(self, live: _Live) -> None:
        async for event in live.session.events():
            self._queue.put_nowait((live, event))

    # -- caller -> provider ------------------------------------------------------------------

    async def send_audio(self, audio: bytes) -> None:
        if self._closing or self._live is None:
            return
        now = self.clock()
        if is_voiced(audio, self.input_format):
            self._last_voiced_at = now
            self._unanswered_ms += self.input_format.duration_ms(len(audio))
        session = self._live.session
        if self._recovering or (isinstance(session, QueuedSession) and session.closed):
            # Lost but not yet noticed by events(): keep the audio for the next session.
            self._keep(now, self.input_format, audio)
            return
        await session.send_audio(audio)

    def _keep(self, now: float, fmt: AudioFormat, audio: bytes) -> None:
        self._buffer.append((now, fmt, audio))
        self._buffer_ms += fmt.duration_ms(len(audio))
        while self._buffer and self._buffer_ms > self.policy.buffer_ms:
            _, old_fmt, old = self._buffer.popleft()
            self._buffer_ms -= old_fmt.duration_ms(len(old))

    async def _replay(self, live: _Live) -> None:
        """Send kept caller audio to the new session, oldest first; new audio keeps queueing
        behind it until the buffer is empty, so order is preserved."""
        dropped_ms = sent_ms = 0.0
        converters: dict[AudioFormat, Transcoder] = {}
        while self._buffer:
            at, fmt, audio = self._buffer.popleft()
            duration_ms = fmt.duration_ms(len(audio))
            self._buffer_ms -= duration_ms
            if self.clock() - at > self.policy.buffer_ms / 1000.0:
                dropped_ms += duration_ms
                continue
            sent_ms += duration_ms
            if fmt != live.session.input_format:
                if fmt not in converters:
                    converters[fmt] = make_transcoder(fmt, live.session.input_format)
                audio = converters[fmt].convert(audio)
            if audio:
                await live.session.send_audio(audio)
        self._buffer_ms = 0.0
        if dropped_ms or sent_ms:
            log.info(
                "call %s: replayed %.0f ms of caller audio kept during recovery, dropped %.0f ms (too old)",
                self.call_sid,
                sent_ms,
                dropped_ms,
            )

    async def send_text(self, text: str) -> None:
        if self._recovering or self._live is None:
            log.warning("call %s: text %r dropped: provider session is being recovered", self.call_sid, text)
            return
        await self._live.session.send_text(text)

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        live = self._live
        inner = live.inward(item_id) if live else None
        if live is None or inner is None or self._recovering:
            log.debug("call %s: truncate of %s skipped: it belongs to an earlier session", self.call_sid, item_id)
            return
        await live.session.truncate(inner, heard_ms)

    async def send_tool_result(self, call_id: str, output: str) -> None:
        if self._recovering or self._live is None:
            log.warning("call %s: result of tool call %s dropped during recovery", self.call_sid, call_id)
            return
        await self._live.session.send_tool_result(call_id, output)

    @property
    def resume_handle(self) -> str | None:
        return self._live.session.resume_handle if self._live else None

    # -- provider -> bridge ------------------------------------------------------------------

    def _wait_timeout(self) -> float:
        waits = []
        if self._unanswered_ms >= WATCHDOG_MIN_SPEECH_MS:
            since = max(self._last_voiced_at, self._last_event_at)
            waits.append(since + self.policy.watchdog_s - self.clock())
        if self._expiring is not None or self._renewal is not None:
            waits.append(RENEWAL_POLL_S)
        return max(0.01, min(waits)) if waits else WATCHDOG_POLL_S

    def _watchdog_fired(self) -> bool:
        if self._unanswered_ms < WATCHDOG_MIN_SPEECH_MS:
            return False
        since = max(self._last_voiced_at, self._last_event_at)
        return self.clock() - since >= self.policy.watchdog_s

    async def events(self) -> AsyncIterator[ProviderEvent]:
        while True:
            try:
                live, event = await asyncio.wait_for(self._queue.get(), self._wait_timeout())
            except TimeoutError:
                if self._watchdog_fired():
                    reason = f"no events for {self.policy.watchdog_s:.1f} s after the caller spoke"
                    log.error("call %s: %s session unresponsive: %s", self.call_sid, self.provider_name, reason)
                    if not await self._recover(reason, "watchdog"):
                        yield ProviderError("recovery-failed", f"provider lost ({reason}); recovery failed", True)
                        yield Closed(reason, error=True)
                        return
                await self._renew_if_due()
                continue
            if live is not self._live:
                continue  # a late event of a session we already left
            self._note(event)
            if isinstance(event, Closed):
                if self._closing:
                    yield event
                    return
                if not event.error and self._expiring is None:
                    yield event  # the provider ended the conversation on purpose
                    return
                reason = event.reason if event.error else f"session ended after expiring ({self._expiring})"
                log.error("call %s: %s session lost: %s; recovering", self.call_sid, live.provider.name, reason)
                if await self._recover(reason):
                    continue
                yield ProviderError("recovery-failed", f"provider lost ({reason}); recovery failed", True)
                yield Closed(reason, error=True)
                return
            yield self._outward(live, event)
            await self._renew_if_due()

    def _note(self, event: ProviderEvent) -> None:
        self._last_event_at = self.clock()
        self._unanswered_ms = 0.0
        if isinstance(event, AudioOut):
            self._bot_speaking = True
        elif isinstance(event, TurnDone):
            self._bot_speaking = False
        elif isinstance(event, SpeechStarted):
            self._caller_speaking = True
        elif isinstance(event, SpeechStopped):
            self._caller_speaking = False
        elif isinstance(event, SessionExpiring):
            log.info(
                "call %s: %s session expiring (%s, %s s left); renewing at the next gap between turns",
                self.call_sid,
                self.provider_name,
                event.reason,
                "?" if event.seconds_left is None else f"{event.seconds_left:.0f}",
            )
            self._expiring = event

    @staticmethod
    def _outward(live: _Live, event: ProviderEvent) -> ProviderEvent:
        if live.generation == 1:
            return event
        if isinstance(event, AudioOut | TurnDone | SpeechStarted | Transcript) and event.item_id is not None:
            return dataclasses.replace(event, item_id=f"r{live.generation}:{event.item_id}")
        return event

    # -- recovery ----------------------------------------------------------------------------

    async def _recover(self, reason: str, kind: str = "session-lost") -> bool:
        """Replace a lost session; True when the call goes on. Caller audio is kept meanwhile."""
        assert self._live is not None
        lost = self._live
        started = self.clock()
        self._recovering = True
        try:
            replacement = await self._take_renewal()
            if replacement is None:
                try:
                    replacement = await self._open_chain(self._reopen_order(), reopening=True)
                except ProviderConnectError as exc:
                    log.error("call %s: recovery failed: %s", self.call_sid, exc)
                    self.hooks.recovered(lost.provider.name, None, kind, False, self.clock() - started)
                    return False
            self._spawn(self._close_quietly(lost))
            self._adopt(replacement)
            self.recoveries += 1
            self.hooks.recovered(lost.provider.name, replacement.provider.name, kind, True, self.clock() - started)
            await self._replay(replacement)
            log.warning(
                "call %s: recovered from %s loss (%s) on %s in %.0f ms with %d turn(s) of history",
                self.call_sid,
                lost.provider.name,
                reason,
                replacement.provider.name,
                (self.clock() - started) * 1000,
                len(self.opened[-1][1].history),
            )
            return True
        finally:
            self._recovering = False

    async def _take_renewal(self) -> _Live | None:
        """A renewal already opening or open can stand in for a lost session if its history
        is still complete; otherwise it is closed."""
        renewal, self._renewal = self._renewal, None
        if renewal is None:
            return None
        try:
            live = await renewal.task
        except Exception:
            return None
        if len(self.history()) == renewal.turns_at_open:
            return live
        self._spawn(self._close_quietly(live))
        return None

    # -- renewal -----------------------------------------------------------------------------

    def _between_turns(self) -> bool:
        return (
            not self._bot_speaking
            and not self._caller_speaking
            and self.clock() - self._last_voiced_at >= QUIET_S
            and not self._recovering
        )

    async def _renew_if_due(self) -> None:
        if self._closing or self._live is None:
            return
        renewal = self._renewal
        if renewal is None:
            if self._expiring is not None and self._between_turns():
                task = asyncio.ensure_future(self._open_chain(self._reopen_order(), reopening=True))
                self._renewal = _Renewal(task, len(self.history()))
            return
        if not renewal.task.done():
            return
        self._renewal = None
        try:
            replacement = renewal.task.result()
        except Exception as exc:
            log.warning("call %s: renewal failed (%s); keeping the expiring session for now", self.call_sid, exc)
            return  # _expiring stays set: tried again at the next gap
        if len(self.history()) != renewal.turns_at_open:
            log.info("call %s: a turn happened while renewing; reopening with the full history", self.call_sid)
            self._spawn(self._close_quietly(replacement))
            return
        if not self._between_turns():
            self._renewal = renewal  # ready; swap at the next gap
            return
        old = self._live
        self._adopt(replacement)
        self.renewed_at.append(self.clock())
        log.info(
            "call %s: session renewed between turns: %s -> %s (%d turn(s) of history%s)",
            self.call_sid,
            old.provider.name,
            replacement.provider.name,
            len(self.opened[-1][1].history),
            ", resumed" if self.opened[-1][1].resume_handle else "",
        )
        self._spawn(self._close_quietly(old))

    # -- closing -----------------------------------------------------------------------------

    async def _close_quietly(self, live: _Live) -> None:
        try:
            await asyncio.wait_for(live.session.close(), self.policy.close_timeout_s)
        except Exception as exc:
            log.warning("call %s: old %s session did not close cleanly: %r", self.call_sid, live.provider.name, exc)
        if live.pump is not None and live is not self._live:
            live.pump.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            task = renewal.task
            if task.done() and not task.cancelled() and task.exception() is None:
                self._spawn(self._close_quietly(task.result()))
            else:
                task.cancel()  # wait_for inside the open cancels the provider's handshake
        if self._live is not None:
            self._spawn(self._close_quietly(self._live))
        # Everything closes concurrently, within one close_timeout_s (the bridge bounds us).
        if self._background:
            await asyncio.wait(set(self._background), timeout=self.policy.close_timeout_s)
        pump = self._live.pump if self._live is not None else None
        if pump is not None and not pump.done():
            await asyncio.wait({pump}, timeout=0.1)  # let Closed through to events()
            pump.cancel()  # a session that never said Closed must not leave a task behind
