"""The TwiML a call gets when it ends on our side for a reason the caller should hear about:
its budget ran out, or no provider could take (or keep) it."""

from __future__ import annotations

from telephony.bridge import CallSummary
from telephony.call_state import CallOutcome
from telephony.twiml import say_and_hangup
from voicebot.calls.next_twiml import NextTwiml
from voicebot.calls.plan import CallPlan, unavailable_twiml
from voicebot.config import TwilioConfig


async def deliver_farewell(plan: CallPlan, summary: CallSummary, next_twiml: NextTwiml, twilio: TwilioConfig) -> None:
    """Hand Twilio the call's last words before its stream closes, unless something (a
    transfer, a drain) already decided what Twilio runs next.

    Over budget: the route's ``max_cost_goodbye``. No provider at stream start: the route's
    ``on_unavailable``, as the webhook would have answered; lost mid-call: the apology. Then
    a human, if the route names one."""
    if plan.call_sid in next_twiml:
        return
    route = plan.route
    if summary.outcome is CallOutcome.MAX_COST:
        goodbye = say_and_hangup(route.max_cost_goodbye, route.on_unavailable.language)
        await next_twiml.deliver(twilio, plan.call_sid, goodbye)
        return
    lost = summary.outcome is CallOutcome.PROVIDER_LOST
    if not (lost or summary.outcome is CallOutcome.PROVIDER_UNAVAILABLE):
        return
    apology = route.apology if lost else None
    await next_twiml.deliver(twilio, plan.call_sid, unavailable_twiml(route.on_unavailable, apology))
