"""The asyncio shell of the recovery layer: one :class:`ResilientSession` per call.

It owns the call's provider sessions, feeds their events straight into one queue (the
session's wire reader calls :meth:`_deliver`; no task in between), and moves through
:class:`~s2s.resilience.state.SessionState` as the pure parts beside it decide: the connect
walk (:mod:`.connect`), the watchdog and the gap between turns (:mod:`.turns`), the audio kept
during recovery (:mod:`.kept_audio`) and item ids across sessions (:mod:`.item_ids`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from s2s.call_context import logged_text
from s2s.circuit import CircuitBoard
from s2s.events import AudioOut, Closed, ProviderError, ProviderEvent, SessionExpiring
from s2s.provider import Provider, ProviderConnectError, ProviderSession, QueuedSession, SessionContext, Turn
from s2s.resilience.connect import ChainWalk, reopen_context
from s2s.resilience.item_ids import inward, outward
from s2s.resilience.kept_audio import KeptAudio
from s2s.resilience.policy import NO_HOOKS, RecoveryPolicy, ResilienceHooks, SessionSlots
from s2s.resilience.state import SessionState, SessionStateMachine
from s2s.resilience.turns import VOICED_DBFS, TurnTracker, Watchdog, is_voiced

log = logging.getLogger(__name__)

# While a renewal waits for a gap between turns, how often the gap is looked for.
RENEWAL_POLL_S = 0.05

_RENEWAL_STATES = frozenset({SessionState.EXPIRING, SessionState.RENEWING})


@dataclass(slots=True)
class _Live:
    """One inner session and what the wrapper needs to know about it."""

    provider: Provider
    session: ProviderSession
    generation: int
    pump: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Renewal:
    task: asyncio.Task[_Live]
    turns_at_open: int


# What the queue carries: an event of a session, or (None, None) when a timer wants a look.
_Item = tuple[_Live | None, ProviderEvent | None]
_TICK: _Item = (None, None)


class ResilientSession(ProviderSession):
    """A provider session that survives its providers. See :mod:`s2s.resilience`."""

    def __init__(
        self,
        chain: Sequence[Provider],
        ctx: SessionContext,
        policy: RecoveryPolicy,
        circuits: CircuitBoard,
        *,
        slots: SessionSlots | None = None,
        history: Sequence[Turn] = (),
        attempt_context: Callable[[str], AbstractContextManager[Any]] = lambda provider: nullcontext(),
        hooks: ResilienceHooks = NO_HOOKS,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not chain:
            raise ValueError("a ResilientSession needs at least one provider")
        self.chain = list(chain)
        self.ctx = ctx
        self.policy = policy
        self.history = history
        self.hooks = hooks
        self.clock = clock
        self.state = SessionStateMachine(ctx.call_sid)
        self.generations = 0
        self.recoveries = 0
        self.renewed_at: list[float] = []  # clock() of each between-turn swap (tests, metrics)
        self._walk = ChainWalk(ctx.call_sid, policy, circuits, slots, attempt_context, hooks, rng, clock)
        self._live: _Live | None = None
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._tick: asyncio.TimerHandle | None = None
        self._kept = KeptAudio(policy.buffer_ms)
        self._turns = TurnTracker()
        self._watchdog = Watchdog(policy.watchdog_s, last_event_at=clock())
        self._expiring: SessionExpiring | None = None
        self._renewal: _Renewal | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # Tool results that came back while the session was being recovered: (call_id, output).
        self._held_results: list[tuple[str, str]] = []

    @property
    def call_sid(self) -> str:
        return self.ctx.call_sid

    @property
    def opened(self) -> list[tuple[str, SessionContext]]:
        """(provider, context) of every session opened, in order."""
        return self._walk.opened

    @property
    def current(self) -> ProviderSession | None:
        return self._live.session if self._live else None

    @property
    def provider_name(self) -> str | None:
        return self._live.provider.name if self._live else None

    @property
    def resume_handle(self) -> str | None:
        return self._live.session.resume_handle if self._live else None

    # -- opening -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the first session; raises :class:`ProviderConnectError` if no provider can."""
        provider, session = await self._walk.open(self.chain, lambda provider: self.ctx, "connect")
        live = self._new_live(provider, session)
        if self.state.ending:  # closed while the first session was opening
            await self._close_quietly(live)
            raise ProviderConnectError(provider.name, "the call ended while the session was opening")
        self._adopt(live)
        self.state.to(SessionState.LIVE)

    def _new_live(self, provider: Provider, session: ProviderSession) -> _Live:
        self.generations += 1
        return _Live(provider, session, self.generations)

    async def _open_again(self) -> _Live:
        """Recovery and renewal: the same provider first (with its resume handle), then the rest
        of the route's chain in order, each with the conversation so far."""
        assert self._live is not None
        current = self._live

        def context_for(provider: Provider) -> SessionContext:
            same = provider.name == current.provider.name
            return reopen_context(self.ctx, self.history, current.session.resume_handle if same else None)

        order = [current.provider, *(p for p in self.chain if p.name != current.provider.name)]
        return self._new_live(*await self._walk.open(order, context_for, "recovery"))

    def _adopt(self, live: _Live) -> None:
        self._live = live
        self.input_format = live.session.input_format
        self.output_format = live.session.output_format
        self.playout_lead_ms = live.session.playout_lead_ms
        self._watchdog.answered(self.clock())
        self._turns.new_session()
        self._expiring = None
        if isinstance(live.session, QueuedSession):
            live.session.attach(functools.partial(self._deliver, live))
        else:
            live.pump = asyncio.ensure_future(self._pump(live))
        log.info(
            "call %s: session %d on %s (%s in / %s out)",
            self.call_sid,
            live.generation,
            live.provider.name,
            live.session.input_format,
            live.session.output_format,
        )

    def _deliver(self, live: _Live, event: ProviderEvent) -> None:
        self._queue.put_nowait((live, event))

    async def _pump(self, live: _Live) -> None:
        """For a session that is not a QueuedSession: its events() drained by a task."""
        async for event in live.session.events():
            self._deliver(live, event)

    # -- caller -> provider ------------------------------------------------------------------

    async def send_audio(self, audio: bytes) -> None:
        await self._send(audio, is_voiced(audio, self.input_format))

    async def send_caller_frame(self, audio: bytes, level_dbfs: float) -> None:
        await self._send(audio, level_dbfs > VOICED_DBFS, level_dbfs)

    async def _send(self, audio: bytes, voiced: bool, level_dbfs: float | None = None) -> None:
        live = self._live
        if live is None or self.state.ending:
            return
        now = self.clock()
        if voiced:
            self._turns.caller_voiced(now)
            self._watchdog.caller_voiced(now, self.input_format.duration_ms(len(audio)))
            if self._tick is None:
                self._schedule_tick()  # the caller's speech may have armed the watchdog just now
        session = live.session
        if self.state.state is SessionState.RECOVERING or (isinstance(session, QueuedSession) and session.closed):
            # Lost but not yet noticed by events(): keep the audio for the next session.
            self._kept.keep(now, self.input_format, audio)
            return
        if level_dbfs is None:
            await session.send_audio(audio)
        else:  # the level the bridge measured goes on, for sessions that watch it too
            await session.send_caller_frame(audio, level_dbfs)

    async def _replay(self, live: _Live) -> None:
        """Send kept caller audio to the new session, oldest first; audio arriving meanwhile
        is kept behind it (the state is still RECOVERING), so order is preserved."""
        sent_ms = dropped_ms = 0.0
        while self._kept:
            replay = self._kept.take(self.clock(), live.session.input_format)
            sent_ms += replay.sent_ms
            dropped_ms += replay.dropped_ms
            for audio in replay.chunks:
                await live.session.send_audio(audio)
        if dropped_ms or sent_ms:
            log.info(
                "call %s: replayed %.0f ms of caller audio kept during recovery, dropped %.0f ms (too old)",
                self.call_sid,
                sent_ms,
                dropped_ms,
            )

    async def send_text(self, text: str) -> None:
        if self.state.state is SessionState.RECOVERING or self._live is None:
            log.warning(
                "call %s: text %r dropped: provider session is being recovered", self.call_sid, logged_text(text)
            )
            return
        await self._live.session.send_text(text)

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        live = self._live
        inner = inward(live.generation, item_id) if live else None
        if live is None or inner is None or self.state.state is SessionState.RECOVERING:
            log.debug("call %s: truncate of %s skipped: it belongs to an earlier session", self.call_sid, item_id)
            return
        await live.session.truncate(inner, heard_ms)

    async def send_tool_result(self, call_id: str, output: str) -> None:
        if self.state.state is SessionState.RECOVERING or self._live is None:
            # A slow tool often outlives a dropped socket; its result is held for the next session.
            log.info("call %s: result of tool call %s held until the session is recovered", self.call_sid, call_id)
            self._held_results.append((call_id, output))
            return
        await self._live.session.send_tool_result(call_id, output)

    async def _deliver_held_results(self, live: _Live, resumed: bool) -> None:
        """Tool results held during recovery go to the new session only if it resumed the lost
        one (e.g. Gemini session resumption keeps the pending function call in the model's
        context). A fresh session never saw those calls, and an answer to an unknown call id is
        an error on every provider, so there they are dropped, loudly."""
        held, self._held_results = self._held_results, []
        for call_id, output in held:
            if resumed:
                await live.session.send_tool_result(call_id, output)
            else:
                log.warning(
                    "call %s: result of tool call %s dropped: %s did not resume the session that asked for it",
                    self.call_sid,
                    call_id,
                    live.provider.name,
                )

    # -- provider -> bridge ------------------------------------------------------------------

    async def events(self) -> AsyncIterator[ProviderEvent]:
        self._schedule_tick()
        while True:
            live, event = await self._queue.get()
            if event is None:
                self._tick = None
                if self._watchdog.fired(self.clock()) and not self.state.ending:
                    reason = f"no events for {self.policy.watchdog_s:.1f} s after the caller spoke"
                    log.error("call %s: %s session unresponsive: %s", self.call_sid, self.provider_name, reason)
                    if not await self._recover(reason, "watchdog"):
                        yield ProviderError("recovery-failed", f"provider lost ({reason}); recovery failed", True)
                        yield Closed(reason, error=True)
                        return
                await self._renew_if_due()
                self._schedule_tick()
                continue
            if live is None or live is not self._live:
                continue  # a late event of a session we already left
            self._note(event)
            if isinstance(event, AudioOut):
                yield outward(live.generation, event)
                continue
            if isinstance(event, Closed):
                state = self.state.state
                if self.state.ending:
                    yield event
                    return
                if not event.error and state is SessionState.LIVE:
                    self.state.to(SessionState.CLOSED)
                    yield event  # the provider ended the conversation on purpose
                    return
                reason = event.reason if event.error else f"session ended after expiring ({self._expiring})"
                kind = "session-lost"
                if self._expiring is not None:
                    # The end the provider announced came before a gap between turns: hand
                    # the call over now (resuming where the provider allows), not a loss.
                    kind = "expired"
                    log.info("call %s: %s session ended as announced; handing over", self.call_sid, live.provider.name)
                else:
                    log.error("call %s: %s session lost: %s; recovering", self.call_sid, live.provider.name, reason)
                if not await self._recover(reason, kind):
                    yield ProviderError("recovery-failed", f"provider lost ({reason}); recovery failed", True)
                    yield Closed(reason, error=True)
                    return
                self._schedule_tick()
                continue
            yield outward(live.generation, event)
            await self._renew_if_due()
            self._schedule_tick()

    def _note(self, event: ProviderEvent) -> None:
        self._watchdog.answered(self.clock())
        self._turns.provider_event(event)
        if isinstance(event, SessionExpiring):
            log.info(
                "call %s: %s session expiring (%s, %s s left); renewing at the next gap between turns",
                self.call_sid,
                self.provider_name,
                event.reason,
                "?" if event.seconds_left is None else f"{event.seconds_left:.0f}",
            )
            self._expiring = event
            if self.state.state is SessionState.LIVE:
                self.state.to(SessionState.EXPIRING)

    def _schedule_tick(self) -> None:
        """Wake events() when the watchdog is due or when a renewal gap should be looked for:
        one timer per call, not one per event, and none while there is nothing to wait for
        (caller speech that arms the watchdog schedules it from :meth:`_send`). A 4 Hz poll
        per call here was 400 wake-ups a second at 100 calls."""
        if self.state.ending:
            return
        deadline = self._watchdog.deadline()
        delay = float("inf") if deadline is None else deadline - self.clock()
        if self.state.state in _RENEWAL_STATES:
            delay = min(delay, RENEWAL_POLL_S)
        if delay == float("inf"):
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.01, delay)
        if self._tick is not None:
            if self._tick.when() <= when:
                return
            self._tick.cancel()
        self._tick = loop.call_at(when, self._queue.put_nowait, _TICK)

    # -- recovery ----------------------------------------------------------------------------

    async def _recover(self, reason: str, kind: str = "session-lost") -> bool:
        """Replace a lost session (``kind``: session-lost, watchdog, or expired: it ended as
        announced before a gap came); True when the call goes on. Caller audio is kept meanwhile."""
        assert self._live is not None
        lost = self._live
        started = self.clock()
        self.state.to(SessionState.RECOVERING)
        replacement = await self._take_renewal()
        if replacement is None:
            try:
                replacement = await self._open_again()
            except ProviderConnectError as exc:
                log.error("call %s: recovery failed: %s", self.call_sid, exc)
                self.hooks.recovered(lost.provider.name, None, kind, False, self.clock() - started)
                if not self.state.ending:
                    self.state.to(SessionState.CLOSED)
                return False
        if self.state.ending:  # the call ended while we were reopening
            self._spawn(self._close_quietly(replacement))
            return False
        self._spawn(self._close_quietly(lost))
        self._adopt(replacement)
        self.recoveries += 1
        self.hooks.recovered(lost.provider.name, replacement.provider.name, kind, True, self.clock() - started)
        resumed = replacement.provider.name == lost.provider.name and self.opened[-1][1].resume_handle is not None
        await self._deliver_held_results(replacement, resumed)
        await self._replay(replacement)
        if self.state.ending:
            return False
        self.state.to(SessionState.LIVE)
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
        if len(self.history) == renewal.turns_at_open:
            return live
        self._spawn(self._close_quietly(live))
        return None

    # -- renewal -----------------------------------------------------------------------------

    async def _renew_if_due(self) -> None:
        if self.state.state not in _RENEWAL_STATES:
            return
        renewal = self._renewal
        if renewal is None:
            if self._turns.between_turns(self.clock()):
                self._renewal = _Renewal(asyncio.ensure_future(self._open_again()), len(self.history))
                self.state.to(SessionState.RENEWING)
            return
        if not renewal.task.done():
            return
        self._renewal = None
        try:
            replacement = renewal.task.result()
        except Exception as exc:
            log.warning("call %s: renewal failed (%s); keeping the expiring session for now", self.call_sid, exc)
            self.state.to(SessionState.EXPIRING)  # tried again at the next gap
            return
        if len(self.history) != renewal.turns_at_open:
            log.info("call %s: a turn happened while renewing; reopening with the full history", self.call_sid)
            self._spawn(self._close_quietly(replacement))
            self.state.to(SessionState.EXPIRING)
            return
        if not self._turns.between_turns(self.clock()):
            self._renewal = renewal  # ready; swap at the next gap
            return
        old = self._live
        assert old is not None
        self._adopt(replacement)
        self.state.to(SessionState.LIVE)
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
        if self.state.state is SessionState.CLOSING:
            return
        self.state.to(SessionState.CLOSING if self.state.state is not SessionState.CLOSED else SessionState.CLOSED)
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
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
        self.state.to(SessionState.CLOSED)
