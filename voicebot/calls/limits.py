"""A route's limits on one call: ``max_call_seconds`` (with ``time_warning`` said to the model
``time_warning_s`` before) and ``max_cost_usd``. Each acts on the bridge built from the plan
it was armed for, so nothing done to another plan of the same CallSid can fire it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from telephony.bridge import CallBridge
from telephony.call_state import CallOutcome
from voicebot.calls.plan import CallPlan

log = logging.getLogger(__name__)


class CallLimits:
    """``bridge_of``: the live bridge of a plan, if any (:meth:`voicebot.calls.live.LiveCalls.bridge_of`);
    ``spawn``: runs what a limit does (a hang-up, a warning) off the timer callback."""

    def __init__(
        self,
        bridge_of: Callable[[CallPlan], CallBridge | None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._bridge_of = bridge_of
        self._spawn = spawn

    def arm(self, plan: CallPlan) -> None:
        """Start the route's call clock (once the provider session is open: time spent
        connecting is not talk time)."""
        limit = plan.route.max_call_seconds
        if limit is None:
            return
        loop = asyncio.get_running_loop()
        plan.time_limit = loop.call_later(limit, self._time_up, plan)
        warn_at = limit - plan.route.time_warning_s
        if plan.route.time_warning_s > 0 and warn_at > 0:
            plan.time_warning = loop.call_later(warn_at, self._time_warning, plan)

    def disarm(self, plan: CallPlan) -> None:
        for timer in (plan.time_limit, plan.time_warning):
            if timer is not None:
                timer.cancel()
        plan.time_limit = plan.time_warning = None

    def _time_warning(self, plan: CallPlan) -> None:
        """The model is told the call is about to be cut, so it can wrap up."""
        if (bridge := self._bridge_of(plan)) is not None:
            left_s = plan.route.time_warning_s
            log.info("call %s: %.0f s left of max_call_seconds; telling the model", plan.call_sid, left_s)
            self._spawn(bridge.handle.say(plan.route.time_warning))

    def _time_up(self, plan: CallPlan) -> None:
        if (bridge := self._bridge_of(plan)) is not None:
            log.info("call %s: route %r max_call_seconds reached; hanging up", plan.call_sid, plan.route.name)
            self._spawn(bridge.hang_up(CallOutcome.MAX_DURATION))

    def over_budget(self, plan: CallPlan, cost: float) -> None:
        """The call's cost reached the route's ``max_cost_usd`` (called by its
        :class:`~voicebot.calls.cost.CallCost`): the goodbye, then hang up."""
        if (bridge := self._bridge_of(plan)) is not None:
            log.info(
                "call %s: route %r max_cost_usd %.4f reached ($%.4f); saying goodbye",
                plan.call_sid,
                plan.route.name,
                plan.route.max_cost_usd,
                cost,
            )
            self._spawn(bridge.hang_up(CallOutcome.MAX_COST))
