"""Calls between their voice webhook and their media stream, on this instance.

The webhook leaves a :class:`~voicebot.calls.plan.CallPlan` here under its stream token; the
media stream's ``start`` frame presents the token and takes the plan. Tokens taken here are
remembered until they expire, so a replay is refused, and plans whose stream never came are
dropped on a timer (their provider slot released, or left to lapse when the slot store is
shared: another instance may have taken the stream)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from voicebot.calls.plan import CallPlan

log = logging.getLogger(__name__)


class StreamHandoff:
    """``connect_timeout_s`` and ``shared_slots`` are read at each use: they follow config reloads."""

    def __init__(
        self,
        release: Callable[[CallPlan], None],
        connect_timeout_s: Callable[[], float],
        shared_slots: Callable[[], bool],
    ) -> None:
        self.pending: dict[str, CallPlan] = {}
        self._release = release
        self._connect_timeout_s = connect_timeout_s
        self._shared_slots = shared_slots
        self._claimed: dict[str, float] = {}  # token -> until when a replay is refused
        self._janitor: asyncio.TimerHandle | None = None

    def hold(self, plan: CallPlan) -> None:
        """Keep ``plan`` for its media stream, at most ``connect_timeout_s``."""
        self.pending[plan.token] = plan
        self._arm_janitor()

    def take(self, token: str, call_sid: str) -> CallPlan | None:
        """The plan this instance holds for ``token``, if the stream is the call it was made for."""
        plan = self.pending.get(token)
        if plan is None:
            return None
        if plan.call_sid != call_sid:
            log.warning("call %s: presented the stream token of call %s; refused", call_sid, plan.call_sid)
            return None
        del self.pending[token]
        return plan

    def used(self, token: str) -> bool:
        """``token`` was already taken here and has not expired (a replay)."""
        now = time.monotonic()
        for old, until in list(self._claimed.items()):
            if until < now:
                del self._claimed[old]
        return token in self._claimed

    def remember(self, token: str, for_s: float) -> None:
        self._claimed[token] = time.monotonic() + for_s

    def expire(self) -> None:
        """Drop reservations whose media stream never came here. With the in-process store
        the slot is released at once. With a shared store (Redis) it is left to lapse by its
        TTL (stream_connect_timeout_s + 5 s): the stream may have reached another instance,
        which adopted the very same slot (member = CallSid), and releasing it from here would
        free that live call's slot. An adopting instance renews the TTL on adoption and its
        heartbeat keeps it; an unclaimed one frees itself 5 s after this."""
        deadline = time.monotonic() - self._connect_timeout_s()
        for token, plan in list(self.pending.items()):
            if plan.created_at < deadline:
                del self.pending[token]
                if self._shared_slots():
                    log.warning(
                        "call %s: media stream did not reach this instance; its reservation lapses unless "
                        "another instance took the stream",
                        plan.call_sid,
                    )
                    plan.lease = None
                else:
                    log.warning("call %s: media stream never connected; reservation released", plan.call_sid)
                self._release(plan)

    def _janitor_tick(self) -> None:
        self._janitor = None
        self.expire()
        if self.pending:
            self._arm_janitor()

    def _arm_janitor(self) -> None:
        """Expire on a timer, not only on the next webhook. A loop timer rather than a task:
        it re-arms only while something is pending."""
        if self._janitor is None:
            interval = min(1.0, self._connect_timeout_s() / 4)
            self._janitor = asyncio.get_running_loop().call_later(interval, self._janitor_tick)
