"""What the voice webhook decides for a call: its route, and a slot on the first provider of
the route's chain that can take it; the admitted plan then waits in the
:class:`~voicebot.calls.handoff.StreamHandoff` for its media stream."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping

from s2s.call_context import logged_number
from s2s.circuit import CircuitBoard
from telephony import routing
from telephony.application import Declined
from telephony.twiml import say_and_hangup
from voicebot.agent.registry import CallTools
from voicebot.calls.admission import SlotLease, SlotStore, admit
from voicebot.calls.handoff import StreamHandoff
from voicebot.calls.loaded import LoadedConfig
from voicebot.calls.next_twiml import NextTwiml
from voicebot.calls.plan import NO_ROUTE_MESSAGE, CallPlan, unavailable_twiml
from voicebot.calls.stream_token import StreamTicket
from voicebot.config import RouteConfig

log = logging.getLogger(__name__)


class CallPlanner:
    """``plan_of``: the plan of a CallSid pending or live here (a repeated webhook gets it back)."""

    def __init__(
        self,
        loaded: LoadedConfig,
        slots: SlotStore,
        circuits: CircuitBoard,
        handoff: StreamHandoff,
        next_twiml: NextTwiml,
        plan_of: Callable[[str], CallPlan | None],
    ) -> None:
        self._loaded = loaded
        self._slots = slots
        self._circuits = circuits
        self._handoff = handoff
        self._next_twiml = next_twiml
        self._plan_of = plan_of
        self._planning: dict[str, asyncio.Task[CallPlan | Declined]] = {}  # webhooks being planned

    async def plan_call(self, params: Mapping[str, str], received_at: float | None = None) -> CallPlan | Declined:
        """The plan of the call: its route, and a slot on the first provider of the route's
        chain that can take it (circuit closed, room left); or why the call is declined.
        ``received_at``: when the webhook request arrived (monotonic), where the call's span starts.

        One CallSid has one plan: Twilio retries a webhook it got no answer to, and a captured
        webhook can be replayed (signatures carry no nonce), so a webhook for a call that is
        pending or live here gets that call's plan back (same stream token, same slot), and
        concurrent ones for a new call share one planning."""
        self._handoff.expire()
        call_sid = params.get("CallSid", "")
        existing = self._plan_of(call_sid)
        if existing is not None:
            log.info("call %s: repeated voice webhook; answering with the call's plan", call_sid)
            return existing
        planning = self._planning.get(call_sid)
        if planning is None:
            planning = asyncio.ensure_future(self._plan_new(params, received_at))
            self._planning[call_sid] = planning
            planning.add_done_callback(lambda _: self._planning.pop(call_sid, None))
        else:
            log.info("call %s: repeated voice webhook while the first is planned; sharing its plan", call_sid)
        # shield: a webhook whose client left does not cancel the planning the others wait on
        return await asyncio.shield(planning)

    async def _plan_new(self, params: Mapping[str, str], received_at: float | None) -> CallPlan | Declined:
        config = self._loaded.config
        route = routing.select_route(config.routes, params.get("To", ""), params.get("From", ""))
        if route is None:
            return Declined(params.get("CallSid", ""), None, say_and_hangup(NO_ROUTE_MESSAGE), "no route matches")
        plan = self.new_plan(params, route)
        lease = self.new_lease(plan.call_sid, route)
        ttl_s = config.server.stream_connect_timeout_s + 5.0
        admitted = await admit(route.providers, lease, self._circuits, ttl_s)
        if admitted is None:
            twiml = unavailable_twiml(route.on_unavailable)
            return Declined(plan.call_sid, route.name, twiml, "every provider of the route is full or failing")
        self.hold_plan(plan, lease, admitted, received_at)
        return plan

    def new_plan(self, params: Mapping[str, str], route: RouteConfig) -> CallPlan:
        """The plan of a call to ``route``, before admission (no lease, no token yet)."""
        config, providers = self._loaded.config, self._loaded.providers
        call_sid, caller = params.get("CallSid", ""), params.get("From", "")
        return CallPlan(
            token="",  # signed by hold_plan, once the admitted provider order is known
            call_sid=call_sid,
            route=route,
            providers=[providers[name] for name in route.providers],
            caller=caller,
            called=params.get("To", ""),
            config=config,
            tools=CallTools(route, config, call_sid, caller, self._next_twiml.deliverer(config.twilio)),
        )

    def new_lease(self, key: str, route: RouteConfig) -> SlotLease:
        """An empty lease over ``route``'s providers, keyed ``key`` (the CallSid, or an outbound
        call's reservation id before Twilio has named the call)."""
        providers = self._loaded.providers
        return SlotLease(self._slots, key, {name: providers[name].max_sessions for name in route.providers})

    def hold_plan(self, plan: CallPlan, lease: SlotLease, admitted: str, received_at: float | None) -> None:
        """The admitted plan (slot held on ``admitted``) waits in the handoff for its stream."""
        route, call_sid, caller = plan.route, plan.call_sid, plan.caller
        plan.lease = lease
        plan.received_at = received_at
        plan.providers.sort(key=lambda p: p.name != admitted)  # admitted first, then route order
        ticket = StreamTicket(
            call_sid, route.name, tuple(p.name for p in plan.providers), caller, plan.called, time.time()
        )
        token = self._loaded.stream_tokens.issue(ticket)
        if token is None:
            log.warning(
                "call %s: plan too large for a portable stream token; the stream must reach this instance", call_sid
            )
            token = secrets.token_urlsafe(18)
        plan.token = token
        self._handoff.hold(plan)
        log.info(
            "call %s from %s to %s: route %r, providers %s",
            plan.call_sid,
            logged_number(plan.caller),
            plan.called,
            route.name,
            [p.name for p in plan.providers],
        )
