"""``transfer_call(to)`` and ``end_call(reason)``: acting on the phone call itself.

Both act only after the caller has *heard* the bot's last words. The model usually says
"Goodbye" / "I'll put you through" and calls the tool in the same turn, so the tool call
reaches us while that audio is still queued at Twilio (providers send faster than real
time). The tool result goes back at once (so a model that speaks *after* the result can
still say its sentence) and the action waits in the background until playout is quiet:
no bot audio pending — every mark echoed — and none for ``QUIET_S`` (awaited as an event:
:meth:`telephony.call_handle.CallHandle.heard`). A call whose audio never drains is acted on
after ``max_goodbye_wait_s`` anyway. If the caller talks
over those last words (a barge-in), the action is cancelled and the model told so: they
did not hear the goodbye and have something to say.

Transfers go through one of two paths (``transfer_method``):
- ``rest``: ``calls(sid).update(twiml=<Dial>…)`` with the ``twilio`` client (``[twilio]
  api_base_url`` points it elsewhere, e.g. a local fake). Twilio ends the stream itself.
- ``stream``: remember ``<Dial>`` as the call's next TwiML and close the stream; Twilio then
  fetches the TwiML after ``<Connect>`` (``/twilio/stream-ended``) and dials. Needs no REST
  credentials. A failed REST update (or one slower than ``telephony.twilio_rest.REST_TIMEOUT_S``)
  falls back to this path; both are :meth:`voicebot.calls.next_twiml.NextTwiml.deliver`.
Destinations come only from the route's allow-list (name -> number); the model names one.
With ``warm_transfer`` the model may ask for ``mode = "warm"``: the person is called and
briefed first, and the caller comes back to the bot if nobody answers
(voicebot.agent.warm_transfer).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from twilio.twiml.voice_response import Dial, VoiceResponse

from s2s.events import ToolCall
from s2s.tools import ToolSpec
from telephony.call_handle import CallHandle, Heard
from telephony.call_state import CallOutcome
from voicebot.agent.config import CallControl
from voicebot.agent.warm_transfer import TRANSFER_CALLBACKS, WarmTransfer

if TYPE_CHECKING:
    from voicebot.config import TwilioConfig

log = logging.getLogger(__name__)

# Silence after the last heard bot audio before acting: long enough for a model that answers
# the tool result with one more sentence to start sending it (providers take ~0.3-1 s).
QUIET_S = 1.0
INTERRUPTED_NOTE = (
    "(Note from the system: the caller spoke before the call could end or be transferred, so it "
    "stays open. Listen to them; call the tool again if it is still wanted.)"
)

END_CALL = ToolSpec(
    name="end_call",
    description="Hang up. First say a short goodbye; the line closes after it has played.",
    parameters={
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "why the call ends, for the log"}},
        "required": ["reason"],
    },
)


def transfer_spec(destinations: list[str], warm: bool = False) -> ToolSpec:
    properties: dict[str, Any] = {"to": {"type": "string", "enum": destinations, "description": "where to transfer"}}
    if warm:
        properties["mode"] = {
            "type": "string",
            "enum": ["cold", "warm"],
            "description": "cold: put the caller straight through; warm: the caller waits on hold while the "
            "person is told what the call is about, then joins them (default cold)",
        }
    return ToolSpec(
        name="transfer_call",
        description=(
            "Transfer the caller to a person or department. First tell the caller you are putting them "
            "through; the transfer happens after that sentence has played."
        ),
        parameters={"type": "object", "properties": properties, "required": ["to"]},
    )


def call_control_instructions(settings: CallControl) -> str:
    parts = []
    if settings.transfer:
        names = ", ".join(settings.transfer)
        parts.append(
            f"If the caller asks for a person or needs one of: {names}, say you are transferring them "
            "and call transfer_call with that name."
        )
        if settings.warm_transfer:
            parts.append(
                "When the person will need to know what the caller wants, transfer with mode warm: the caller "
                "waits on hold while they are briefed. If you are told they did not answer, tell the caller."
            )
    if settings.end_call:
        parts.append("When the conversation is finished, say a short goodbye, then call end_call.")
    return " ".join(parts)


def transfer_twiml(destination: str) -> str:
    response = VoiceResponse()
    dial = Dial()
    if destination.startswith(("sip:", "sips:")):
        dial.sip(destination)
    else:
        dial.number(destination)
    response.append(dial)
    return str(response)


# Makes TwiML what Twilio runs once the call's stream ends: (call_sid, twiml, use_rest) -> True
# when Twilio already has it through the REST API (voicebot.calls.next_twiml.NextTwiml.deliver).
DeliverTwiml = Callable[[str, str, bool], Awaitable[bool]]


class CallControlTools:
    def __init__(
        self,
        settings: CallControl,
        twilio: TwilioConfig,
        call_sid: str,
        deliver_twiml: DeliverTwiml,
        redact: Callable[[str], str] = str,
    ) -> None:
        self.settings = settings
        self.twilio = twilio
        self.call_sid = call_sid
        self.deliver_twiml = deliver_twiml
        self.warm = WarmTransfer(settings, twilio, TRANSFER_CALLBACKS, redact) if settings.warm_transfer else None
        self.pending: asyncio.Task[None] | None = None

    def specs(self) -> list[ToolSpec]:
        specs = []
        if self.settings.transfer:
            specs.append(transfer_spec(list(self.settings.transfer), warm=self.warm is not None))
        if self.settings.end_call:
            specs.append(END_CALL)
        return specs

    @property
    def uses_rest(self) -> bool:
        method = self.settings.transfer_method
        if method == "auto":
            return bool(self.twilio.account_sid and self.twilio.auth_token)
        return method == "rest"

    def destination(self, to: str) -> str | None:
        """The allow-listed number for what the model asked for (a name, or a listed number)."""
        wanted = to.strip()
        for name, number in self.settings.transfer.items():
            if wanted.lower() == name.lower() or wanted == number:
                return number
        return None

    def _schedule(self, call: CallHandle, action: Callable[[], Awaitable[None]]) -> bool:
        if self.pending is not None and not self.pending.done():
            return False
        # Barge-ins count from when the tool call reached the bridge, not from when this handler
        # got to run: on a busy loop the caller may already have cut into the goodbye meanwhile.
        since = call.tool_call_at
        self.pending = asyncio.ensure_future(self._after_heard(call, action, since))
        return True

    async def _after_heard(self, call: CallHandle, action: Callable[[], Awaitable[None]], since: float) -> None:
        heard = await call.heard(QUIET_S, self.settings.max_goodbye_wait_s, barge_ins_since=since)
        if heard is Heard.INTERRUPTED:
            log.info("call %s: the caller talked over the bot's last words; call control cancelled", self.call_sid)
            await call.say(INTERRUPTED_NOTE)
            return
        if heard is Heard.TIMEOUT:
            log.warning(
                "call %s: bot audio still playing after %.0f s; acting anyway",
                self.call_sid,
                self.settings.max_goodbye_wait_s,
            )
        try:
            await action()
        except Exception:
            log.exception("call %s: call-control action failed; hanging up", self.call_sid)
            await call.hang_up(CallOutcome.CALL_CONTROL_FAILED)

    async def end_call(self, tool_call: ToolCall, call: CallHandle) -> str:
        reason = str(tool_call.arguments.get("reason", "")).strip() or "unspecified"
        log.info("call %s: model ends the call (%s); hanging up once the goodbye has played", self.call_sid, reason)
        if not self._schedule(call, lambda: call.hang_up(CallOutcome.BOT_HANGUP)):
            return json.dumps({"error": "the call is already ending"})
        return json.dumps({"ok": True, "note": "The line closes after your goodbye has played. Say nothing more."})

    async def transfer_call(self, tool_call: ToolCall, call: CallHandle) -> str:
        to = str(tool_call.arguments.get("to", ""))
        number = self.destination(to)
        if number is None:
            log.warning("call %s: model asked to transfer to %r, which is not allowed", self.call_sid, to)
            allowed = ", ".join(self.settings.transfer)
            return json.dumps({"error": f"cannot transfer to {to!r}; allowed: {allowed}"})
        mode = str(tool_call.arguments.get("mode") or "cold")
        if mode not in ("cold", "warm") or (mode == "warm" and self.warm is None):
            return json.dumps({"error": f"mode {mode!r} is not available; use cold"})
        log.info("call %s: %s transfer to %s once the caller has heard the bot out", self.call_sid, mode, to)
        if mode == "warm":
            if not self._schedule(call, lambda: self._warm_transfer(number, call)):
                return json.dumps({"error": "the call is already ending or being transferred"})
            return json.dumps(
                {
                    "ok": True,
                    "note": f"After your sentence the caller waits on hold while {to} is briefed. Say nothing more.",
                }
            )
        if not self._schedule(call, lambda: self._transfer(number, call)):
            return json.dumps({"error": "the call is already ending"})
        return json.dumps({"ok": True, "note": f"Transferring to {to} after your sentence. Say nothing more."})

    async def _transfer(self, number: str, call: CallHandle) -> None:
        """The ``<Dial>`` goes to Twilio by REST when configured (a failed update falls back),
        else it waits for the fetch after ``<Connect>``; either way our end of the stream
        closes: the REST path has abandoned it, the other needs it closed."""
        via_rest = await self.deliver_twiml(self.call_sid, transfer_twiml(number), self.uses_rest)
        await call.hang_up(CallOutcome.TRANSFERRED)
        how = "the REST API" if via_rest else "the TwiML after <Connect>"
        log.info("call %s: transferred to %s via %s", self.call_sid, number, how)

    async def _warm_transfer(self, number: str, call: CallHandle) -> None:
        assert self.warm is not None
        if not await self.warm.run(call, number):
            await call.say(self.settings.warm_no_answer)

    def cancel(self) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.cancel()
