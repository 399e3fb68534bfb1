"""Admission control: how many sessions each provider may hold (``max_sessions``).

A call takes a *slot* on a provider when the webhook decides its route, before Twilio is
told to open the media stream, so a full provider is skipped (next in the chain, or the
route's ``on_unavailable``) while the call can still be answered differently. The media
stream then holds the slot, moves it when recovery falls back to another provider, and
releases it on every exit path (hang-up, provider crash, stream that never connects: see
``StreamHandoff.expire``).

The store is an interface so a fleet can share limits. :class:`SlotStore` contract, for
any implementation (the in-process one here; a Redis one can implement the same):

- ``acquire(provider, call_sid, limit, ttl_s) -> bool``: atomically take a slot if fewer
  than ``limit`` live slots exist (``limit`` None = unlimited). Idempotent per call: a call
  that already holds a slot on ``provider`` gets True and its TTL renewed. ``limit`` is
  passed on every call rather than configured once, so a hot-reloaded ``max_sessions``
  applies to the next acquisition with no store-side state to update.
- ``refresh(provider, call_sid, ttl_s) -> bool``: heartbeat; False if the slot was lost
  (expired or released) — the holder then carries on (the call is live) and re-acquires.
- ``release(provider, call_sid)``: idempotent.
- ``count(provider) -> int``: live slots (for health and tests).
- ``shared``: True when other instances see the same slots (Redis). Then a slot may be held
  by a call whose webhook and media stream reached different instances (the stream's
  instance adopts the webhook's slot by acquiring it again under the same CallSid), and an
  instance must not release a reservation it merely stopped waiting for
  (``StreamHandoff.expire``).

A slot whose TTL passes without a refresh is dead: that is what frees slots of a process
that crashed (Redis) and of a reservation nobody claimed. Holders refresh every
``HELD_TTL_S / 3``. All methods are coroutines so a networked store fits; the in-process
store never awaits inside acquire, so concurrent webhooks on one event loop are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from s2s.circuit import CircuitBoard

log = logging.getLogger(__name__)

# A media stream's slot lives this long without a heartbeat; refreshed every third of it.
HELD_TTL_S = 30.0


class SlotStore(Protocol):
    shared: bool

    async def acquire(self, provider: str, call_sid: str, limit: int | None, ttl_s: float) -> bool: ...

    async def refresh(self, provider: str, call_sid: str, ttl_s: float) -> bool: ...

    async def release(self, provider: str, call_sid: str) -> None: ...

    async def count(self, provider: str) -> int: ...


class InProcessSlotStore:
    """Slots of this process only; exact because acquire never yields to the event loop."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._slots: dict[str, dict[str, float]] = {}

    def _live(self, provider: str) -> dict[str, float]:
        slots = self._slots.setdefault(provider, {})
        now = self.clock()
        for call_sid, expires in list(slots.items()):
            if expires <= now:
                log.warning("call %s: %s slot expired without a heartbeat; freed", call_sid, provider)
                del slots[call_sid]
        return slots

    async def acquire(self, provider: str, call_sid: str, limit: int | None, ttl_s: float) -> bool:
        slots = self._live(provider)
        if call_sid not in slots and limit is not None and len(slots) >= limit:
            return False
        slots[call_sid] = self.clock() + ttl_s
        return True

    async def refresh(self, provider: str, call_sid: str, ttl_s: float) -> bool:
        slots = self._live(provider)
        if call_sid not in slots:
            return False
        slots[call_sid] = self.clock() + ttl_s
        return True

    async def release(self, provider: str, call_sid: str) -> None:
        self._slots.get(provider, {}).pop(call_sid, None)

    async def count(self, provider: str) -> int:
        return len(self._live(provider))


class SlotLease:
    """The slot one call holds, on at most one provider at a time.

    It is what :class:`s2s.resilience.ResilientSession` asks before using a provider
    (:meth:`move_to`), so a call that falls back mid-call never exceeds the new provider's
    ``max_sessions`` and frees the old one's slot."""

    def __init__(self, store: SlotStore, call_sid: str, limits: Mapping[str, int | None]) -> None:
        self.store = store
        self.call_sid = call_sid
        self.limits = dict(limits)
        self.provider: str | None = None
        self._ttl_s = HELD_TTL_S
        self._heartbeat: asyncio.Task[None] | None = None
        self._released = False

    async def move_to(self, provider: str, ttl_s: float | None = None) -> bool:
        """Hold a slot on ``provider`` (releasing the one held elsewhere); False when full."""
        if self._released:
            return False
        ttl = self._ttl_s if ttl_s is None else ttl_s
        if not await self.store.acquire(provider, self.call_sid, self.limits.get(provider), ttl):
            return False
        old, self.provider = self.provider, provider
        if old is not None and old != provider:
            await self.store.release(old, self.call_sid)
        return True

    async def take_over(self, provider: str, holder: str, ttl_s: float) -> bool:
        """Hold, under this lease's key, the slot ``holder`` (another key) has on ``provider``:
        an outbound call's reservation, taken under our own id before Twilio named the call,
        becomes its CallSid's. It is already counted, so it is taken past the limit, then the
        holder's is released. If the holder's slot lapsed, a slot is taken as by :meth:`move_to`."""
        if not await self.store.refresh(provider, holder, ttl_s):
            return await self.move_to(provider, ttl_s)
        if self._released or not await self.store.acquire(provider, self.call_sid, None, ttl_s):
            return False
        self.provider = provider
        await self.store.release(provider, holder)
        return True

    def hold(self, ttl_s: float = HELD_TTL_S) -> None:
        """The media stream claimed the call: keep the slot alive until :meth:`release`."""
        self._ttl_s = ttl_s
        if self._heartbeat is None and not self._released:
            self._heartbeat = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_s / 3)
            provider = self.provider
            if provider is None:
                continue
            try:
                if not await self.store.refresh(provider, self.call_sid, self._ttl_s):
                    log.warning("call %s: %s slot was lost; taking it again", self.call_sid, provider)
                    await self.store.acquire(provider, self.call_sid, None, self._ttl_s)
            except Exception as exc:  # a networked store hiccup must not end the call
                log.warning("call %s: slot heartbeat failed: %r", self.call_sid, exc)

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self.provider is not None:
            provider, self.provider = self.provider, None
            await self.store.release(provider, self.call_sid)


async def admit(chain: Sequence[str], lease: SlotLease, circuits: CircuitBoard, ttl_s: float) -> str | None:
    """Take a slot on the first provider of ``chain`` whose circuit lets calls through and
    that has room; None when there is none (the route's ``on_unavailable`` answers)."""
    for name in chain:
        if not circuits[name].available():
            log.info("call %s: provider %s skipped: circuit open", lease.call_sid, name)
            continue
        if await lease.move_to(name, ttl_s):
            return name
        log.info("call %s: provider %s skipped: all %s sessions in use", lease.call_sid, name, lease.limits.get(name))
    return None
