"""Outbound calls: reserve a provider slot, have Twilio dial, and bridge the answered call
like an inbound one.

The order matters. The slot is taken (:func:`voicebot.calls.admission.admit`, as for an
inbound webhook) *before* Twilio is asked to dial: a full provider means the call is not
placed at all, rather than someone answering to silence. Until Twilio names the call the
reservation is keyed by our own id (``OB…``), which also rides in every callback URL we give
Twilio (``?call=OB…``), so a callback that outruns the REST answer still finds its call.

Twilio then fetches ``/twilio/outbound/answer`` when the callee picks up; the answer is the
same ``<Connect><Stream>`` an inbound call gets, for a plan built on the reserved slot. The
status callback releases the slot of a call that was never answered (busy, no-answer,
failed, canceled); a reservation whose callbacks never come expires with its TTL.

On a fleet, each callback reaches whichever instance the load balancer picks. So the calls
live in a store (:mod:`voicebot.calls.outbound_store`) that, with the Redis admission store,
every instance shares, and the slot is counted in the shared admission store as any call's:
held under ``OB…`` while the call rings, then, when Twilio fetches the answer, handed over
to the CallSid (:meth:`voicebot.calls.admission.SlotLease.take_over`), where the media
stream adopts it on whichever instance it reaches.

Answering-machine detection is Twilio's asynchronous AMD
(https://www.twilio.com/docs/voice/answering-machine-detection): the stream opens at once,
but the provider session, and with it the bot's greeting, waits for the verdict
(``AnsweredBy``) up to the route's ``amd_hold_s``, so the bot never talks over a voicemail
greeting. On a human it speaks first; on a machine the call's TwiML is replaced through the
REST API, with the route's ``voicemail_message`` (``<Say>``, after the beep: the route asks
for ``MachineDetection=DetectMessageEnd``) or a bare hang-up.

Per-call variables fill ``{name}`` fields of the route's instructions, greeting and
voicemail message; a field without a variable stays as written.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from s2s.call_context import logged_number
from s2s.errors import VoicebotError
from telephony.application import Declined
from telephony.call_state import CallOutcome
from telephony.twilio_rest import cancel_call, create_call
from telephony.twiml import hangup, play_and_hangup, say_and_hangup
from voicebot.calls.admission import admit
from voicebot.calls.outbound_store import FINAL, MACHINE, OutboundRecord, OutboundStore, outbound_store
from voicebot.calls.plan import CallPlan
from voicebot.config import RouteConfig
from voicebot.telemetry.metrics import record_outbound_amd, record_outbound_result

if TYPE_CHECKING:
    from voicebot.calls.runtime import Runtime

log = logging.getLogger(__name__)

ANSWER_PATH = "/twilio/outbound/answer"
STATUS_PATH = "/twilio/outbound/status"
AMD_PATH = "/twilio/outbound/amd"

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` that has a variable replaced by it (never raises on
    stray braces, unlike ``str.format``)."""
    return _FIELD.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def route_for_call(route: RouteConfig, variables: Mapping[str, str]) -> RouteConfig:
    """``route`` with the call's variables in its instructions, greeting and voicemail message."""
    if not variables:
        return route
    outbound = route.outbound
    message = outbound.voicemail_message
    return route.model_copy(
        update={
            "instructions": fill(route.instructions, variables),
            "greeting": fill(route.greeting, variables) if route.greeting else None,
            "outbound": outbound.model_copy(
                update={"voicemail_message": fill(message, variables) if message else None}
            ),
        }
    )


class NotPlaced(VoicebotError):
    """The call was not placed; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class OutboundCalls:
    """Placing calls, and Twilio's callbacks for them (``app.state.outbound``). The calls
    themselves are in :attr:`store` (voicebot.calls.outbound_store), shared by the fleet with
    the Redis admission store, so any instance can take any callback."""

    def __init__(self, runtime: Runtime, store: OutboundStore | None = None) -> None:
        self.runtime = runtime
        self.store = store or outbound_store(runtime.slots, runtime.config.admission)
        runtime.claims.tailor = self.tailored
        # calls this instance placed that ring still (nobody answered, no final status):
        # key -> (CallSid, ring deadline)
        self._ringing: dict[str, tuple[str, float]] = {}

    def _route(self, record: OutboundRecord) -> RouteConfig | None:
        """The call's route, with its variables filled in; None if a reload removed it."""
        route = next((r for r in self.runtime.config.routes if r.name == record.route), None)
        return None if route is None else route_for_call(route, record.variables)

    async def place(
        self, route_name: str, to: str, from_: str | None, variables: Mapping[str, str], base_url: str
    ) -> OutboundRecord:
        """Reserve a slot, then ask Twilio to dial; raises :class:`NotPlaced` (nothing dialled,
        nothing held) when that cannot be done."""
        runtime = self.runtime
        config = runtime.config
        route = next((r for r in config.routes if r.name == route_name), None)
        if route is None:
            raise NotPlaced(404, f"no route named {route_name!r}")
        if runtime.draining:
            raise NotPlaced(503, "the server is draining for shutdown")
        twilio = config.twilio
        if not (twilio.account_sid and twilio.auth_token):
            raise NotPlaced(503, "placing calls needs [twilio] account_sid and auth_token")
        caller_id = from_ or route.outbound.caller_id
        if not caller_id:
            raise NotPlaced(400, f"no caller id: pass 'from' or set route {route.name!r} outbound.caller_id")
        settings = route.outbound
        key = "OB" + secrets.token_hex(16)
        lease = runtime.planner.new_lease(key, route)
        # Held without a heartbeat while it rings: if no callback ever comes, the TTL frees it.
        ttl_s = settings.ring_timeout_s + config.server.stream_connect_timeout_s + 30.0
        provider = await admit(route.providers, lease, runtime.circuits, ttl_s)
        if provider is None:
            record_outbound_result(route.name, "provider-full")
            raise NotPlaced(503, f"not placed: every provider of route {route.name!r} is full or failing")
        record = OutboundRecord(key, route.name, to, caller_id, provider, time.time() + ttl_s, dict(variables))
        try:
            await self.store.create(record)
        except RedisError as exc:
            await lease.release()
            log.error("outbound call to %s: the call store is unreachable (%r); not placed", logged_number(to), exc)
            raise NotPlaced(503, f"not placed: the call store is unreachable: {exc}") from exc
        query = f"?call={key}"
        params: dict[str, Any] = {
            "to": to,
            "from_": caller_id,
            "url": base_url + ANSWER_PATH + query,
            "method": "POST",
            "status_callback": base_url + STATUS_PATH + query,
            "status_callback_event": ["initiated", "ringing", "answered", "completed"],
            "status_callback_method": "POST",
            "timeout": settings.ring_timeout_s,
        }
        if settings.machine_detection:
            # DetectMessageEnd waits for the beep before a machine verdict, which is when a
            # message must start; Enable answers as soon as it knows (hang-up case).
            wants_message = settings.on_machine == "message" and bool(
                settings.voicemail_message or settings.voicemail_recording
            )
            params |= {
                "machine_detection": "DetectMessageEnd" if wants_message else "Enable",
                "async_amd": "true",
                "async_amd_status_callback": base_url + AMD_PATH + query,
                "async_amd_status_callback_method": "POST",
            }
        try:
            call_sid, status = await create_call(
                twilio.account_sid,
                twilio.auth_token.get_secret_value(),
                params,
                api_base_url=twilio.api_base_url,
            )
        except Exception as exc:
            await lease.release()
            record_outbound_result(route.name, "rejected")
            log.error("outbound call to %s: Twilio did not place it: %r", logged_number(to), exc)
            raise NotPlaced(502, f"Twilio did not place the call: {exc}") from exc
        # A callback that outran Twilio's REST answer may have named the call (and moved it on) already.
        named = await self.store.name(key, call_sid)
        log.info("outbound call %s to %s: route %r, slot on %s", call_sid, logged_number(to), route.name, provider)
        if named is None:
            record.call_sid, record.status = call_sid, status
            named = record
        if not named.answered and named.status not in FINAL:
            self._ringing[key] = (call_sid, named.ring_deadline)
        return named

    def ringing_here(self) -> list[str]:
        """The CallSids of calls this instance placed that ring still and whose answer only it
        can take: with the in-process store (on a fleet's shared store any instance takes it,
        so they do not hold this one's drain). A call past its ring deadline is lost, not ringing."""
        now = time.time()
        for key, (_, deadline) in list(self._ringing.items()):
            if now > deadline:
                del self._ringing[key]
        return [] if self.store.shared else [call_sid for call_sid, _ in self._ringing.values()]

    async def cancel_ringing(self) -> list[str]:
        """The drain deadline: ask Twilio to stop ringing :meth:`ringing_here`'s calls, whose
        answer would find nobody here (``canceled``: the status callback then frees the slot,
        or its TTL does). Returns the CallSids Twilio accepted."""
        twilio = self.runtime.config.twilio
        if self.store.shared or not (twilio.account_sid and twilio.auth_token):
            return []  # shared: another instance takes the answer; no credentials: nothing was placed
        canceled = []
        for key, (call_sid, _) in list(self._ringing.items()):
            try:
                await cancel_call(
                    twilio.account_sid, twilio.auth_token.get_secret_value(), call_sid, api_base_url=twilio.api_base_url
                )
            except Exception as exc:
                log.error("outbound call %s: Twilio did not cancel it (%r)", call_sid, exc)
                continue
            self._ringing.pop(key, None)
            canceled.append(call_sid)
        return canceled

    async def answer(self, key: str, params: Mapping[str, str], received_at: float) -> CallPlan | Declined:
        """Twilio fetches the answered call's TwiML: the plan on the reserved slot, which from
        now on is held under the CallSid (where a stream on any instance finds it)."""
        runtime = self.runtime
        call_sid = params.get("CallSid", "")
        record = await self.store.name(key, call_sid)
        self._ringing.pop(key, None)  # answered: the handoff (then the stream) holds the drain
        if record is None:
            log.warning("outbound answer for %s (%s): no such outbound call; hanging up", call_sid, key[:40])
            return Declined(call_sid, None, hangup(), "unknown outbound call")
        existing = runtime.plan_of(call_sid)
        if existing is not None:  # Twilio retried the fetch
            return existing
        route = self._route(record)
        if route is None:
            log.warning("outbound call %s: route %r no longer exists; hanging up", call_sid, record.route)
            return Declined(call_sid, record.route, hangup(), "route removed")
        lease = runtime.planner.new_lease(call_sid, route)
        ttl_s = runtime.config.server.stream_connect_timeout_s + 5.0
        if not await lease.take_over(record.provider, key, ttl_s):
            log.warning("outbound call %s: its slot was lost before the answer; hanging up", call_sid)
            return Declined(call_sid, route.name, hangup(), "slot lost")
        await self.store.answer(key)
        # The far end is the person this call is about (memory, logs): it is the plan's caller.
        plan = runtime.planner.new_plan({"CallSid": call_sid, "From": record.to, "To": record.from_}, route)
        self.prepare(plan, record)
        runtime.planner.hold_plan(plan, lease, record.provider, received_at)
        return plan

    async def tailored(
        self, call_sid: str, route: RouteConfig
    ) -> tuple[RouteConfig, Callable[[CallPlan], None]] | None:
        """A media stream reached this instance for a call another instance answered: if it is
        an outbound call, its route with the call's variables, and :meth:`prepare` for its plan
        (:data:`voicebot.calls.adoption.Tailor`)."""
        try:
            record = await self.store.find(call_sid)
        except RedisError as exc:
            log.error("call %s: the call store is unreachable (%r); taken for an inbound call", call_sid, exc)
            return None
        if record is None or record.route != route.name:
            return None
        return route_for_call(route, record.variables), lambda plan: self.prepare(plan, record)

    def prepare(self, plan: CallPlan, record: OutboundRecord) -> None:
        """What an outbound call's plan has beyond an inbound one's: its direction, the
        greeting held for the AMD verdict, and its tape's path kept with the call."""
        plan.direction = "outbound"
        plan.on_tape = lambda path: self.runtime.tasks.spawn(self._keep_tape(record.key, plan.call_sid, path))
        if plan.route.outbound.machine_detection:
            plan.before_session = lambda: self._await_verdict(record.key, plan.call_sid, plan.route)

    async def _keep_tape(self, key: str, call_sid: str, path: Path) -> None:
        try:
            await self.store.set_tape(key, str(path))
        except RedisError as exc:
            log.error("outbound call %s: its tape path was not kept, the call store is unreachable (%r)", call_sid, exc)

    async def _await_verdict(self, key: str, call_sid: str, route: RouteConfig) -> None:
        """Hold the provider session (and its greeting) until AMD says human, or the route's
        bound passes. On a machine it never returns: the REST update of the call ends the
        stream, and with it this wait (the bridge cancels the session opener)."""
        bound = route.outbound.amd_hold_s
        answered_by = await self.store.wait_verdict(key, bound)
        if answered_by is None:
            log.info("outbound call %s: no AMD verdict within %.1f s; the bot speaks", call_sid, bound)
        elif answered_by in MACHINE:
            await asyncio.Event().wait()
        bridge = self.runtime.active.get(call_sid)
        if bridge is not None:
            bridge.drop_pre_session_audio()

    async def amd_result(self, key: str, params: Mapping[str, str]) -> bool:
        """Twilio's AMD verdict; False for a call we do not know."""
        call_sid = params.get("CallSid", "")
        if await self.store.name(key, call_sid) is None:
            return False
        answered_by = params.get("AnsweredBy", "unknown")
        first, record = await self.store.verdict(key, answered_by)
        if not first or record is None:
            return True  # one verdict per call; a repeat changes nothing
        record_outbound_amd(record.route, answered_by)
        log.info(
            "outbound call %s: answered by %s (detection took %s ms)",
            call_sid,
            answered_by,
            params.get("MachineDetectionDuration", "?"),
        )
        if record.machine:
            await self._on_machine(call_sid, record)
        return True

    async def _on_machine(self, call_sid: str, record: OutboundRecord) -> None:
        route = self._route(record)
        twiml = hangup()
        if route is not None and route.outbound.on_machine == "message" and record.answered_by != "fax":
            message, recording = route.outbound.voicemail_message, route.outbound.voicemail_recording
            if recording:
                twiml = play_and_hangup(recording)
            elif message:
                twiml = say_and_hangup(message, route.language)
        runtime = self.runtime
        delivered = await runtime.next_twiml.deliver(runtime.config.twilio, call_sid, twiml)
        if delivered:
            return
        bridge = runtime.active.get(call_sid)
        if bridge is not None:
            # Twilio runs it once the stream ends (/twilio/stream-ended): end the stream now.
            await bridge.hang_up(CallOutcome.BOT_HANGUP)
        else:
            log.error("outbound call %s: a machine answered, but its stream is not here to end", call_sid)

    async def status(self, key: str, params: Mapping[str, str]) -> bool:
        """A status callback; releases the slot of a call that ended unanswered."""
        call_sid = params.get("CallSid", "")
        if await self.store.name(key, call_sid) is None:
            return False
        status = params.get("CallStatus", "")
        duration = params.get("CallDuration", "")
        final = status in FINAL
        if final:
            self._ringing.pop(key, None)
        changed, record = await self.store.advance(key, status, int(duration) if final and duration.isdigit() else None)
        if not changed or record is None:
            return True
        if final:
            result = "machine" if record.machine and status == "completed" else status
            record_outbound_result(record.route, result)
            log.info("outbound call %s: %s", call_sid, status)
            if not record.answered:
                # never answered: no plan or stream holds the slot (otherwise they release it)
                await self.runtime.slots.release(record.provider, key)
        return True
