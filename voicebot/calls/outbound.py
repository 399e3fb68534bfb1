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
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s2s.call_context import logged_number
from s2s.errors import VoicebotError
from telephony.application import Declined
from telephony.call_state import CallOutcome
from telephony.twilio_rest import create_call
from telephony.twiml import hangup, play_and_hangup, say_and_hangup
from voicebot.calls.admission import SlotLease, admit
from voicebot.calls.plan import CallPlan
from voicebot.config import RouteConfig
from voicebot.telemetry.metrics import record_outbound_amd, record_outbound_result

if TYPE_CHECKING:
    from voicebot.calls.runtime import Runtime

log = logging.getLogger(__name__)

ANSWER_PATH = "/twilio/outbound/answer"
STATUS_PATH = "/twilio/outbound/status"
AMD_PATH = "/twilio/outbound/amd"

# CallStatus values of a call that was never answered
# (https://www.twilio.com/docs/voice/api/call-resource#call-status-values).
UNANSWERED = frozenset({"busy", "no-answer", "failed", "canceled"})
FINAL = UNANSWERED | {"completed"}
# AnsweredBy values that are not a person (https://www.twilio.com/docs/voice/answering-machine-detection).
MACHINE = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"})
# Outbound calls remembered for GET /calls/{sid}; the oldest finished ones go first.
REMEMBERED = 10_000

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


@dataclass(slots=True)
class OutboundCall:
    key: str  # our id (OB…), in every callback URL; the slot is held under it
    route: RouteConfig  # with the call's variables filled in
    to: str
    from_: str
    lease: SlotLease
    provider: str  # where the slot was reserved
    call_sid: str | None = None
    status: str = "reserving"
    answered_by: str | None = None
    created_at: float = field(default_factory=time.time)
    verdict: asyncio.Event = field(default_factory=asyncio.Event)
    expiry: asyncio.TimerHandle | None = None
    duration_s: int | None = None  # CallDuration of the final status callback
    answered: bool = False  # Twilio fetched the answer: the plan (then the stream) owns the slot

    @property
    def machine(self) -> bool:
        return self.answered_by in MACHINE

    def row(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "direction": "outbound",
            "route": self.route.name,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "answered_by": self.answered_by,
            "provider": self.provider,
            "duration_s": self.duration_s,
        }


class OutboundCalls:
    """The outbound calls of one server process (``app.state.outbound``)."""

    def __init__(self, runtime: Runtime, remembered: int = REMEMBERED) -> None:
        self.runtime = runtime
        self._by_key: OrderedDict[str, OutboundCall] = OrderedDict()
        self._by_sid: dict[str, OutboundCall] = {}
        self._remembered = remembered
        self._tasks: set[asyncio.Task[None]] = set()

    def _release(self, call: OutboundCall) -> None:
        task = asyncio.ensure_future(call.lease.release())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def get(self, call_sid: str) -> OutboundCall | None:
        return self._by_sid.get(call_sid)

    def by_key(self, key: str) -> OutboundCall | None:
        return self._by_key.get(key)

    async def place(
        self, route_name: str, to: str, from_: str | None, variables: Mapping[str, str], base_url: str
    ) -> OutboundCall:
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
        route = route_for_call(route, variables)
        settings = route.outbound
        key = "OB" + secrets.token_hex(16)
        lease = runtime.planner.new_lease(key, route)
        # Held without a heartbeat while it rings: if no callback ever comes, the TTL frees it.
        ttl_s = settings.ring_timeout_s + config.server.stream_connect_timeout_s + 30.0
        provider = await admit(route.providers, lease, runtime.circuits, ttl_s)
        if provider is None:
            record_outbound_result(route.name, "provider-full")
            raise NotPlaced(503, f"not placed: every provider of route {route.name!r} is full or failing")
        call = OutboundCall(key, route, to, caller_id, lease, provider)
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
        self._remember(call)
        try:
            call_sid, status = await create_call(
                twilio.account_sid,
                twilio.auth_token.get_secret_value(),
                params,
                api_base_url=twilio.api_base_url,
            )
        except Exception as exc:
            self._by_key.pop(key, None)
            await lease.release()
            record_outbound_result(route.name, "rejected")
            log.error("outbound call to %s: Twilio did not place it: %r", logged_number(to), exc)
            raise NotPlaced(502, f"Twilio did not place the call: {exc}") from exc
        call.call_sid = call.call_sid or call_sid
        if call.status == "reserving":
            call.status = status
        self._by_sid[call.call_sid] = call
        call.expiry = asyncio.get_running_loop().call_later(ttl_s, self._expire, call)
        log.info("outbound call %s to %s: route %r, slot on %s", call.call_sid, logged_number(to), route.name, provider)
        return call

    def _remember(self, call: OutboundCall) -> None:
        self._by_key[call.key] = call
        while len(self._by_key) > self._remembered:
            _, old = self._by_key.popitem(last=False)
            if old.call_sid is not None:
                self._by_sid.pop(old.call_sid, None)

    def _expire(self, call: OutboundCall) -> None:
        """No answer and no final status within the reservation's TTL: let the slot go."""
        call.expiry = None
        if call.status not in FINAL and not call.answered:
            log.warning("outbound call %s: no answer and no final status; slot released", call.call_sid)
            self._release(call)

    async def answer(self, key: str, params: Mapping[str, str], received_at: float) -> CallPlan | Declined:
        """Twilio fetches the answered call's TwiML: the plan on the reserved slot."""
        runtime = self.runtime
        call_sid = params.get("CallSid", "")
        call = self._by_key.get(key)
        if call is None or (call.call_sid is not None and call.call_sid != call_sid):
            log.warning("outbound answer for %s (%s): no such outbound call here; hanging up", call_sid, key[:40])
            return Declined(call_sid, None, hangup(), "unknown outbound call")
        existing = runtime.plan_of(call_sid)
        if existing is not None:  # Twilio retried the fetch
            return existing
        call.call_sid = call_sid
        self._by_sid[call_sid] = call
        if call.expiry is not None:
            call.expiry.cancel()
            call.expiry = None
        ttl_s = runtime.config.server.stream_connect_timeout_s + 5.0
        if not await call.lease.move_to(call.provider, ttl_s):  # renews the reservation for the handoff
            log.warning("outbound call %s: its slot was lost before the answer; hanging up", call_sid)
            return Declined(call_sid, call.route.name, hangup(), "slot lost")
        call.status = "in-progress"
        call.answered = True
        # The far end is the person this call is about (memory, logs): it is the plan's caller.
        plan = runtime.planner.new_plan({"CallSid": call_sid, "From": call.to, "To": call.from_}, call.route)
        if call.route.outbound.machine_detection:
            plan.before_session = lambda: self._await_verdict(call)
        runtime.planner.hold_plan(plan, call.lease, call.provider, received_at)
        return plan

    async def _await_verdict(self, call: OutboundCall) -> None:
        """Hold the provider session (and its greeting) until AMD says human, or the route's
        bound passes. On a machine it never returns: the REST update of the call ends the
        stream, and with it this wait (the bridge cancels the session opener)."""
        bound = call.route.outbound.amd_hold_s
        try:
            await asyncio.wait_for(call.verdict.wait(), bound)
        except TimeoutError:
            log.info("outbound call %s: no AMD verdict within %.1f s; the bot speaks", call.call_sid, bound)
        if call.machine:
            await asyncio.Event().wait()
        bridge = self.runtime.active.get(call.call_sid or "")
        if bridge is not None:
            bridge.drop_pre_session_audio()

    async def amd_result(self, key: str, params: Mapping[str, str]) -> bool:
        """Twilio's AMD verdict; False for a call we do not know."""
        call = self._by_key.get(key)
        if call is None or call.call_sid != params.get("CallSid"):
            return False
        if call.answered_by is not None:
            return True  # one verdict per call; a repeat changes nothing
        answered_by = params.get("AnsweredBy", "unknown")
        call.answered_by = answered_by
        record_outbound_amd(call.route.name, answered_by)
        log.info(
            "outbound call %s: answered by %s (detection took %s ms)",
            call.call_sid,
            answered_by,
            params.get("MachineDetectionDuration", "?"),
        )
        if call.machine:
            await self._on_machine(call)
        call.verdict.set()
        return True

    async def _on_machine(self, call: OutboundCall) -> None:
        settings = call.route.outbound
        message, recording = settings.voicemail_message, settings.voicemail_recording
        twiml = hangup()
        if settings.on_machine == "message" and call.answered_by != "fax":
            if recording:
                twiml = play_and_hangup(recording)
            elif message:
                twiml = say_and_hangup(message, call.route.language)
        runtime = self.runtime
        assert call.call_sid is not None
        delivered = await runtime.next_twiml.deliver(runtime.config.twilio, call.call_sid, twiml)
        bridge = runtime.active.get(call.call_sid)
        if not delivered and bridge is not None:
            # Twilio runs it once the stream ends (/twilio/stream-ended): end the stream now.
            await bridge.hang_up(CallOutcome.BOT_HANGUP)

    def status(self, key: str, params: Mapping[str, str]) -> bool:
        """A status callback; releases the slot of a call that was never answered."""
        call = self._by_key.get(key)
        if call is None or (call.call_sid is not None and call.call_sid != params.get("CallSid")):
            return False
        status = params.get("CallStatus", "")
        if call.status in FINAL:
            return True
        call.status = status
        if status in FINAL:
            duration = params.get("CallDuration", "")
            call.duration_s = int(duration) if duration.isdigit() else None
            if call.expiry is not None:
                call.expiry.cancel()
                call.expiry = None
            result = "machine" if call.machine and status == "completed" else status
            record_outbound_result(call.route.name, result)
            log.info("outbound call %s: %s", call.call_sid, status)
        if status in UNANSWERED or (status in FINAL and not call.answered):
            # never answered: no plan or stream holds the slot (otherwise they release it)
            self._release(call)
        return True
