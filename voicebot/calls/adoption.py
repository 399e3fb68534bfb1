"""A call's plan rebuilt on the instance its media stream reached, when another instance
answered its webhook: everything comes from the signed stream token
(:mod:`voicebot.calls.stream_token`) and this instance's config."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from s2s.provider import Provider
from telephony import routing
from voicebot.agent.call_control import DeliverTwiml
from voicebot.agent.registry import CallTools
from voicebot.calls.admission import HELD_TTL_S, SlotLease, SlotStore
from voicebot.calls.plan import CallPlan
from voicebot.calls.stream_token import StreamTicket
from voicebot.config import AppConfig, RouteConfig

log = logging.getLogger(__name__)

# For a call of another kind than an inbound one (an outbound call: voicebot.calls.outbound),
# the route as the call sees it (its variables filled in) and what its plan gets beyond an
# inbound call's; None for an ordinary call.
Tailor = Callable[[str, RouteConfig], Awaitable[tuple[RouteConfig, Callable[[CallPlan], None]] | None]]


async def adopt_plan(
    token: str,
    ticket: StreamTicket,
    config: AppConfig,
    providers_by_name: Mapping[str, Provider],
    slots: SlotStore,
    deliver_twiml: DeliverTwiml,
    tailor: Tailor | None = None,
) -> CallPlan | None:
    """Rebuild on this instance the plan another instance's webhook made, from this
    instance's config: the route by name (re-selected from called/caller if a reload
    removed it), the providers by name in the webhook's order (unknown ones skipped).

    The slot: with a shared store (Redis) the webhook's instance took it under this
    CallSid, and acquiring it again for the same CallSid is idempotent, so this *adopts*
    it (renewing its TTL) and the heartbeat keeps it; the webhook's instance never
    releases it (:meth:`voicebot.calls.handoff.StreamHandoff.expire`). With the in-process store this is a fresh
    acquisition; if the provider is full, the session's fallback tries the rest.

    ``tailor`` makes an outbound call's plan what its answering instance made it."""
    call_sid = ticket.call_sid
    route = next((r for r in config.routes if r.name == ticket.route), None)
    if route is None:
        route = routing.select_route(config.routes, ticket.called, ticket.caller)
        log.warning(
            "call %s: route %r no longer exists; re-selected %r",
            call_sid,
            ticket.route,
            route.name if route else None,
        )
    if route is None:
        return None
    providers = [providers_by_name[name] for name in ticket.providers if name in providers_by_name]
    if not providers:
        log.warning("call %s: none of providers %s is configured here", call_sid, list(ticket.providers))
        return None
    tailored = await tailor(call_sid, route) if tailor is not None else None
    if tailored is not None:
        route = tailored[0]
    plan = CallPlan(
        token=token,
        call_sid=call_sid,
        route=route,
        providers=providers,
        caller=ticket.caller,
        called=ticket.called,
        config=config,
        tools=CallTools(route, config, call_sid, ticket.caller, deliver_twiml),
    )
    lease = SlotLease(slots, call_sid, {p.name: p.max_sessions for p in providers})
    if not await lease.move_to(providers[0].name, HELD_TTL_S):
        log.info("call %s: no slot on %s here; the session falls back along the chain", call_sid, providers[0].name)
    plan.lease = lease
    lease.hold(HELD_TTL_S)
    if tailored is not None:
        tailored[1](plan)
    log.info("call %s: media stream adopted from another instance (route %r)", call_sid, route.name)
    return plan
