"""The application behind telephony's endpoints: the loaded config and its providers, and
a call's way from the voice webhook (plan, admission) through its media stream (claim or
adopt, bridge, provider session) to its end. The parts live beside it: the plan
(:mod:`voicebot.calls.plan`), the webhook-to-stream handoff (:mod:`voicebot.calls.handoff`),
what Twilio runs after the stream (:mod:`voicebot.calls.next_twiml`), admission and stream
tokens."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from s2s.call_context import logged_number, set_personal_data_in_logs
from s2s.circuit import CircuitBoard
from s2s.provider import Provider, ProviderSession, Turn
from s2s.registry import build_provider
from s2s.resilience import ResilientSession
from telephony import routing
from telephony.application import Declined, HttpLimits
from telephony.bridge import CallBridge, CallInfo, CallSummary, TwilioSocket
from telephony.call_state import CallOutcome
from telephony.media_stream import MediaStreamProtocol, Start
from telephony.observer import CallObserver
from telephony.signature import SignatureChecker
from telephony.twiml import say_and_hangup
from voicebot.agent.call_control import DeliverTwiml
from voicebot.agent.registry import CallTools
from voicebot.calls.admission import HELD_TTL_S, SlotLease, SlotStore, admit
from voicebot.calls.admission_redis import slot_store
from voicebot.calls.adoption import adopt_plan
from voicebot.calls.barge_in import local_barge_in
from voicebot.calls.cost import CallCost
from voicebot.calls.greeting_guard import greeting_guard
from voicebot.calls.handoff import StreamHandoff
from voicebot.calls.next_twiml import NextTwiml
from voicebot.calls.plan import NO_ROUTE_MESSAGE, CallPlan, recovery_policy, unavailable_twiml
from voicebot.calls.silence import silence_watch
from voicebot.calls.stream_token import CLOCK_SKEW_S, BadStreamToken, StreamTicket, StreamTokens, derived_key
from voicebot.config import AppConfig, RouteConfig
from voicebot.devtools.tape.recorder import recorder_for_call, wants_recording
from voicebot.telemetry.metrics import (
    provider_connect,
    record_circuit_open,
    record_error,
    record_webhook_rejected,
    resilience_hooks,
)

log = logging.getLogger(__name__)


class Runtime:
    """The application behind telephony's endpoints (it implements
    :class:`telephony.application.CallApplication`)."""

    def __init__(self, config: AppConfig) -> None:
        self.handoff = StreamHandoff(
            self._release, lambda: self.config.server.stream_connect_timeout_s, lambda: self.slots.shared
        )
        self.active: dict[str, CallBridge] = {}
        self._plans: dict[CallBridge, CallPlan] = {}  # the plan of each bridge in ``active``
        self.next_twiml = NextTwiml()
        # one observer per call from each factory (voicebot.telemetry registers CallTelemetry)
        self.observer_factories: list[Callable[[CallPlan], CallObserver]] = []
        self.draining = False
        # Admission and circuit state outlive config reloads (keyed by provider name).
        self.slots: SlotStore = slot_store(config.admission)
        self.circuits = CircuitBoard(on_open=record_circuit_open)
        self._tasks: set[asyncio.Task[None]] = set()
        # One plan and one media stream per CallSid (see plan_call and adopt_stream): webhooks
        # being planned, and CallSids whose stream is being set up or running here.
        self._planning: dict[str, asyncio.Task[CallPlan | Declined]] = {}
        self._streams: set[str] = set()
        self._process_key = secrets.token_bytes(32)  # only when no key is configured; kept over reloads
        self.apply(config)

    def apply(self, config: AppConfig) -> None:
        """Use ``config`` for new calls; calls in progress keep the providers they hold."""
        self.config = config
        set_personal_data_in_logs(config.logs.personal_data)
        self.providers: dict[str, Provider] = {name: build_provider(name, c) for name, c in config.providers.items()}
        token = config.twilio.auth_token.get_secret_value() if config.twilio.auth_token else None
        self.signatures = SignatureChecker(token, config.twilio.validate_signatures)
        self.circuits.configure(config.resilience.circuit_failures, config.resilience.circuit_cooldown_s)
        key = derived_key(config)
        if key is None:
            log.warning(
                "no [server] stream_token_secret and no Twilio auth token: media stream tokens are signed "
                "with a per-process key, so a call's media stream must reach the instance that answered "
                "its webhook; a fleet needs stream_token_secret, the same on every instance"
            )
        self.stream_tokens = StreamTokens(key or self._process_key)

    @property
    def limits(self) -> HttpLimits:
        server = self.config.server
        return HttpLimits(server.public_url, server.max_body_bytes, server.max_message_bytes)

    def webhook_rejected(self, reason: str) -> None:
        record_webhook_rejected(reason)

    def stream_error(self, call_sid: str, error: str) -> None:
        record_error("twilio-stream-error", "twilio")

    def bad_frames_before_start(self, count: int) -> None:
        record_error("twilio-bad-frame", "twilio", count)

    # -- webhook -> media stream -------------------------------------------------------

    def select_route(self, params: Mapping[str, str]) -> RouteConfig | None:
        return routing.select_route(self.config.routes, params.get("To", ""), params.get("From", ""))

    def plan_of(self, call_sid: str) -> CallPlan | None:
        """The plan of ``call_sid`` if it is waiting for its stream or live here."""
        plan = next((p for p in self.handoff.pending.values() if p.call_sid == call_sid), None)
        if plan is None and (bridge := self.active.get(call_sid)) is not None:
            plan = self._plans.get(bridge)
        return plan

    async def plan_call(self, params: Mapping[str, str], received_at: float | None = None) -> CallPlan | Declined:
        """The plan of the call: its route, and a slot on the first provider of the route's
        chain that can take it (circuit closed, room left); or why the call is declined.
        ``received_at``: when the webhook request arrived (monotonic), where the call's span starts.

        One CallSid has one plan: Twilio retries a webhook it got no answer to, and a captured
        webhook can be replayed (signatures carry no nonce), so a webhook for a call that is
        pending or live here gets that call's plan back (same stream token, same slot), and
        concurrent ones for a new call share one planning."""
        self.handoff.expire()
        call_sid = params.get("CallSid", "")
        existing = self.plan_of(call_sid)
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
        route = self.select_route(params)
        if route is None:
            return Declined(params.get("CallSid", ""), None, say_and_hangup(NO_ROUTE_MESSAGE), "no route matches")
        plan = self.new_plan(params, route)
        lease = self.new_lease(plan.call_sid, route)
        ttl_s = self.config.server.stream_connect_timeout_s + 5.0
        admitted = await admit(route.providers, lease, self.circuits, ttl_s)
        if admitted is None:
            twiml = unavailable_twiml(route.on_unavailable)
            return Declined(plan.call_sid, route.name, twiml, "every provider of the route is full or failing")
        self.hold_plan(plan, lease, admitted, received_at)
        return plan

    def new_plan(self, params: Mapping[str, str], route: RouteConfig) -> CallPlan:
        """The plan of a call to ``route``, before admission (no lease, no token yet)."""
        call_sid, caller = params.get("CallSid", ""), params.get("From", "")
        return CallPlan(
            token="",  # signed by hold_plan, once the admitted provider order is known
            call_sid=call_sid,
            route=route,
            providers=[self.providers[name] for name in route.providers],
            caller=caller,
            called=params.get("To", ""),
            config=self.config,
            tools=CallTools(route, self.config, call_sid, caller, self._twiml_deliverer(self.config)),
        )

    def new_lease(self, key: str, route: RouteConfig) -> SlotLease:
        """An empty lease over ``route``'s providers, keyed ``key`` (the CallSid, or an outbound
        call's reservation id before Twilio has named the call)."""
        return SlotLease(self.slots, key, {name: self.providers[name].max_sessions for name in route.providers})

    def hold_plan(self, plan: CallPlan, lease: SlotLease, admitted: str, received_at: float | None) -> None:
        """The admitted plan (slot held on ``admitted``) waits in the handoff for its stream."""
        route, call_sid, caller = plan.route, plan.call_sid, plan.caller
        plan.lease = lease
        plan.received_at = received_at
        plan.providers.sort(key=lambda p: p.name != admitted)  # admitted first, then route order
        ticket = StreamTicket(
            call_sid, route.name, tuple(p.name for p in plan.providers), caller, plan.called, time.time()
        )
        token = self.stream_tokens.issue(ticket)
        if token is None:
            log.warning(
                "call %s: plan too large for a portable stream token; the stream must reach this instance", call_sid
            )
            token = secrets.token_urlsafe(18)
        plan.token = token
        self.handoff.hold(plan)
        log.info(
            "call %s from %s to %s: route %r, providers %s",
            plan.call_sid,
            logged_number(plan.caller),
            plan.called,
            route.name,
            [p.name for p in plan.providers],
        )

    async def claim(self, token: str, call_sid: str) -> CallPlan | None:
        """The plan for the media stream of ``call_sid`` (the ``start`` frame's callSid) that
        presents ``token``, or None (logged) when the stream must be refused.

        Fast path: this instance answered the webhook, the plan and its lease are in the
        handoff. Otherwise another instance did: the signed token
        (:mod:`voicebot.calls.stream_token`) is checked and the plan rebuilt here
        (:func:`voicebot.calls.adoption.adopt_plan`).
        A token is accepted once per instance; a replay to *another* instance within the
        expiry can only open a stream for the signed CallSid, whose upgrade Twilio signed,
        so it cannot start a call Twilio did not place."""
        self.handoff.expire()
        if token in self.handoff.pending:
            plan = self.handoff.take(token, call_sid)
            if plan is None:
                return None
            self._remember_claimed(token)
            if plan.lease is not None:
                plan.lease.hold(HELD_TTL_S)
            return plan
        if self.handoff.used(token):
            log.warning("call %s: stream token already used on this instance (replay); refused", call_sid)
            return None
        try:
            ticket = self.stream_tokens.verify(token, call_sid, self.config.server.stream_connect_timeout_s)
        except BadStreamToken as exc:
            log.warning("call %s: stream token refused: %s", call_sid, exc)
            return None
        self._remember_claimed(token)  # before any await: a concurrent replay sees it
        return await adopt_plan(
            token, ticket, self.config, self.providers, self.slots, self._twiml_deliverer(self.config)
        )

    def _remember_claimed(self, token: str) -> None:
        self.handoff.remember(token, self.config.server.stream_connect_timeout_s + 2 * CLOCK_SKEW_S)

    def withdraw_pending(self) -> list[CallPlan]:
        """Take back every reservation still waiting for its stream (the drain deadline): its
        slot is released, and its token counts as used, so a stream that still comes is
        refused and Twilio goes on to ``/twilio/stream-ended``."""
        plans = list(self.handoff.pending.values())
        self.handoff.pending.clear()
        for plan in plans:
            self._remember_claimed(plan.token)
            if self.slots.shared:
                plan.lease = None  # its stream may be live on another instance (StreamHandoff.expire)
            self._release(plan)
        return plans

    async def adopt_stream(
        self, token: str, start: Start, socket: TwilioSocket, protocol: MediaStreamProtocol
    ) -> CallBridge | None:
        """The bridge for the media stream that presented ``token`` (:meth:`claim`), built from
        the call's plan, or None when the stream must be refused: also when the call already
        has a stream here (a replayed or duplicated stream must not open a second provider
        session for one call, nor take over its bookkeeping)."""
        call_sid = start.call_sid
        if call_sid in self._streams:
            log.warning("call %s: refused a second media stream while the call has one", call_sid)
            return None
        self._streams.add(call_sid)  # before any await: a concurrent duplicate sees it
        try:
            plan = await self.claim(token, call_sid)
            bridge = None if plan is None else self._bridge(plan, start, socket, protocol)
        finally:
            if call_sid not in self.active:
                self._streams.discard(call_sid)  # refused (or failed): the CallSid is free again
        return bridge

    def _bridge(self, plan: CallPlan, start: Start, socket: TwilioSocket, protocol: MediaStreamProtocol) -> CallBridge:
        info = CallInfo(start.call_sid, start.stream_sid, plan.route.name, plan.caller, plan.called)
        server = plan.config.server
        guards = greeting_guard(plan.route, lambda: bridge.handle.bot_audio_pending)
        bridge = CallBridge(
            socket,
            protocol,
            info,
            lambda: self.open_session(plan, lambda: bridge.summary.transcript),
            outbound_chunk_ms=server.outbound_chunk_ms,
            local_barge_in=local_barge_in(plan.route, server),
            observers=[*self.observers(plan), *silence_watch(plan.route, lambda: bridge.handle), *guards],
            before_close=lambda summary: self.before_stream_close(plan, summary),
            tool_handler=plan.tools,
            dtmf_handler=plan.tools.dtmf,
            barge_in_held=guards[0].holds if guards else None,
        )
        self.active[info.call_sid] = bridge
        self._plans[bridge] = plan
        return bridge

    async def open_session(self, plan: CallPlan, history: Callable[[], Sequence[Turn]] = tuple) -> ProviderSession:
        """The call's session: a :class:`ResilientSession` over the route's chain, starting with
        the provider the webhook admitted; it raises ProviderConnectError if none connects.
        ``history``: the call's transcript so far, which a recovered session is given."""
        await plan.tools.prepare()
        if plan.before_session is not None:
            await plan.before_session()  # an outbound call holds its greeting for the AMD verdict
        session = ResilientSession(
            plan.providers,
            plan.session_context(),
            recovery_policy(plan.config, plan.route),
            self.circuits,
            slots=plan.lease,
            history=history,
            attempt_context=provider_connect,
            hooks=resilience_hooks(),
        )
        plan.session = session
        await session.open()
        limit = plan.route.max_call_seconds
        if limit is not None:
            loop = asyncio.get_running_loop()
            plan.time_limit = loop.call_later(limit, self._time_up, plan)
            warn_at = limit - plan.route.time_warning_s
            if plan.route.time_warning_s > 0 and warn_at > 0:
                plan.time_warning = loop.call_later(warn_at, self._time_warning, plan)
        return session

    def _bridge_of(self, plan: CallPlan) -> CallBridge | None:
        bridge = self.active.get(plan.call_sid)
        return bridge if bridge is not None and self._plans.get(bridge) is plan else None

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

    def _release(self, plan: CallPlan) -> None:
        for timer in (plan.time_limit, plan.time_warning):
            if timer is not None:
                timer.cancel()
        plan.time_limit = plan.time_warning = None
        if plan.lease is not None:
            self._spawn(plan.lease.release())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def observers(self, plan: CallPlan) -> list[CallObserver]:
        plan.cost = CallCost(plan.config, plan.route.max_cost_usd, lambda cost: self._over_budget(plan, cost))
        observers: list[CallObserver] = [plan.cost]
        observers += [factory(plan) for factory in self.observer_factories]
        if wants_recording(plan.config, plan.route):
            recorder = recorder_for_call(plan.config, plan.route, plan.call_sid, tuple(plan.route.providers))
            recorder.usage = plan.cost.summary
            observers.append(recorder)
        return observers

    def _over_budget(self, plan: CallPlan, cost: float) -> None:
        bridge = self.active.get(plan.call_sid)
        if bridge is not None and self._plans.get(bridge) is plan:
            log.info(
                "call %s: route %r max_cost_usd %.4f reached ($%.4f); saying goodbye",
                plan.call_sid,
                plan.route.name,
                plan.route.max_cost_usd,
                cost,
            )
            self._spawn(bridge.hang_up(CallOutcome.MAX_COST))

    # -- after the stream ---------------------------------------------------------------

    def call_ended(self, bridge: CallBridge, summary: CallSummary) -> None:
        call_sid = bridge.info.call_sid
        if self.active.get(call_sid) is bridge:
            del self.active[call_sid]
            self._streams.discard(call_sid)
        plan = self._plans.pop(bridge)
        self._release(plan)
        if plan.cost is not None:
            log.info("call %s cost $%.6f: %s", call_sid, plan.cost.cost_usd, plan.cost.summary())
        plan.tools.call_ended(summary)

    async def before_stream_close(self, plan: CallPlan, summary: CallSummary) -> None:
        """A call that failed gets its apology before we close the stream.

        No provider at stream start: the route's on_unavailable, as the webhook would have
        answered; lost mid-call: the apology. Then a human, if the route names one."""
        if summary.outcome is CallOutcome.MAX_COST and plan.call_sid not in self.next_twiml:
            goodbye = say_and_hangup(plan.route.max_cost_goodbye, plan.route.on_unavailable.language)
            await self.next_twiml.deliver(self.config.twilio, plan.call_sid, goodbye)
            return
        lost = summary.outcome is CallOutcome.PROVIDER_LOST
        if not (lost or summary.outcome is CallOutcome.PROVIDER_UNAVAILABLE) or plan.call_sid in self.next_twiml:
            return
        apology = plan.route.apology if lost else None
        await self.next_twiml.deliver(
            self.config.twilio, plan.call_sid, unavailable_twiml(plan.route.on_unavailable, apology)
        )

    def _twiml_deliverer(self, config: AppConfig) -> DeliverTwiml:
        """How a call's tools hand Twilio its next TwiML, with the config the call started on."""

        def deliver(call_sid: str, twiml: str, use_rest: bool) -> Awaitable[bool]:
            return self.next_twiml.deliver(config.twilio, call_sid, twiml, use_rest)

        return deliver

    def take_next_twiml(self, call_sid: str) -> str | None:
        return self.next_twiml.take(call_sid)
