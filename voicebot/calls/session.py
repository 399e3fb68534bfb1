"""Opening a call's provider session from its plan."""

from __future__ import annotations

from collections.abc import Sequence

from s2s.circuit import CircuitBoard
from s2s.provider import Turn
from s2s.resilience import ResilientSession
from voicebot.calls.plan import CallPlan, recovery_policy
from voicebot.telemetry.metrics import provider_connect, resilience_hooks


async def open_session(plan: CallPlan, circuits: CircuitBoard, history: Sequence[Turn] = ()) -> ResilientSession:
    """The call's session: a :class:`ResilientSession` over the route's chain, starting with
    the provider the webhook admitted; it raises ProviderConnectError if none connects.
    ``history``: the call's transcript (the bridge's live list), which a recovered session is given.

    The tools load what the instructions add (caller memory) first, and an outbound call
    holds its greeting for the answering-machine verdict (``plan.before_session``)."""
    await plan.tools.prepare()
    if plan.before_session is not None:
        await plan.before_session()
    session = ResilientSession(
        plan.providers,
        plan.session_context(),
        recovery_policy(plan.config, plan.route),
        circuits,
        slots=plan.lease,
        history=history,
        attempt_context=provider_connect,
        hooks=resilience_hooks(),
    )
    plan.session = session
    await session.open()
    return session
