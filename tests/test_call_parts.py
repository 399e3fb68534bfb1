"""The parts :class:`voicebot.calls.runtime.Runtime` is put together from, each on its own:
no server, no sockets; a bridge is stood in for by the little the part uses of it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast

from s2s.circuit import CircuitBoard
from telephony.application import Declined
from telephony.bridge import CallBridge, CallSummary
from telephony.call_state import CallOutcome
from voicebot.calls.admission_redis import slot_store
from voicebot.calls.changes import CallChanges
from voicebot.calls.farewell import deliver_farewell
from voicebot.calls.handoff import StreamHandoff
from voicebot.calls.limits import CallLimits
from voicebot.calls.live import LiveCalls
from voicebot.calls.loaded import LoadedConfig
from voicebot.calls.next_twiml import NextTwiml
from voicebot.calls.plan import CallPlan
from voicebot.calls.planner import CallPlanner
from voicebot.calls.tasks import BackgroundTasks
from voicebot.config import AppConfig, load_config_text

CONFIG = """
[twilio]
validate_signatures = false

[providers.parrot]
type = "echo"
max_sessions = 1

[[routes]]
name = "main"
to = ["+15550001"]
providers = ["parrot"]
apology = "Sorry, we lost the line."
max_cost_goodbye = "That is all we can do today."
time_warning = "One minute left."
[routes.on_unavailable]
say = "All our lines are busy."
"""


def app_config(**route: float) -> AppConfig:
    extra = "".join(f"{key} = {value}\n" for key, value in route.items())
    return load_config_text(CONFIG.replace('name = "main"\n', f'name = "main"\n{extra}'))


def planner_for(config: AppConfig, live: LiveCalls | None = None) -> tuple[CallPlanner, StreamHandoff]:
    loaded = LoadedConfig(config)
    slots = slot_store(config.admission)
    handoff = StreamHandoff(lambda plan: None, lambda: 10.0, lambda: False)
    live = live or LiveCalls()

    def plan_of(call_sid: str) -> CallPlan | None:
        pending = next((p for p in handoff.pending.values() if p.call_sid == call_sid), None)
        return pending or live.plan_of(call_sid)

    return CallPlanner(loaded, slots, CircuitBoard(), handoff, NextTwiml(), plan_of), handoff


def webhook(call_sid: str, to: str = "+15550001") -> dict[str, str]:
    return {"CallSid": call_sid, "From": "+15559999", "To": to}


@dataclass
class StandInHandle:
    said: list[str] = field(default_factory=list)

    async def say(self, text: str) -> None:
        self.said.append(text)


@dataclass
class StandInInfo:
    call_sid: str


class StandInBridge:
    """What the parts use of a bridge: its CallSid, its handle, and hang_up."""

    def __init__(self, call_sid: str) -> None:
        self.info = StandInInfo(call_sid)
        self.handle = StandInHandle()
        self.hung_up = asyncio.Event()
        self.outcome: CallOutcome | None = None

    async def hang_up(self, outcome: CallOutcome) -> None:
        self.outcome = outcome
        self.hung_up.set()


def as_bridge(bridge: StandInBridge) -> CallBridge:
    return cast(CallBridge, bridge)


# -- planner -----------------------------------------------------------------------------


async def test_concurrent_webhooks_for_one_call_share_one_plan_and_one_slot() -> None:
    planner, handoff = planner_for(app_config())
    first, second = await asyncio.gather(planner.plan_call(webhook("CA1")), planner.plan_call(webhook("CA1")))
    assert isinstance(first, CallPlan) and first is second
    assert list(handoff.pending) == [first.token] and first.token
    # A later retry gets the same plan back; a second call finds the one slot taken.
    assert await planner.plan_call(webhook("CA1")) is first
    declined = await planner.plan_call(webhook("CA2"))
    assert isinstance(declined, Declined) and declined.route == "main"
    assert "All our lines are busy." in declined.twiml


async def test_a_number_no_route_matches_is_declined_without_a_slot() -> None:
    planner, handoff = planner_for(app_config())
    declined = await planner.plan_call(webhook("CA1", to="+15550002"))
    assert isinstance(declined, Declined) and declined.route is None and not handoff.pending
    assert isinstance(await planner.plan_call(webhook("CA2")), CallPlan)  # the slot is still free


# -- live calls ---------------------------------------------------------------------------


async def test_one_media_stream_per_call_sid() -> None:
    config = app_config()
    planner, _ = planner_for(config)
    live = LiveCalls()
    assert live.reserve("CA1") and not live.reserve("CA1")
    live.unreserve("CA1")  # refused: free again
    assert live.reserve("CA1")
    plan = planner.new_plan(webhook("CA1"), config.routes[0])
    bridge = as_bridge(StandInBridge("CA1"))
    live.add(bridge, plan)
    live.unreserve("CA1")  # a no-op once live
    assert not live.reserve("CA1")
    assert live.plan_of("CA1") is plan and live.bridge_of(plan) is bridge
    assert live.end(bridge) is plan
    assert live.bridges == {} and live.plan_of("CA1") is None and live.reserve("CA1")


# -- limits -------------------------------------------------------------------------------


async def test_max_call_seconds_warns_the_model_then_hangs_up() -> None:
    config = app_config(max_call_seconds=0.3, time_warning_s=0.2)
    planner, _ = planner_for(config)
    plan = planner.new_plan(webhook("CA1"), config.routes[0])
    bridge = StandInBridge("CA1")
    tasks = BackgroundTasks()
    limits = CallLimits(lambda p: as_bridge(bridge) if p is plan else None, tasks.spawn)
    limits.arm(plan)
    await asyncio.wait_for(bridge.hung_up.wait(), 10)
    assert bridge.handle.said == ["One minute left."] and bridge.outcome is CallOutcome.MAX_DURATION


async def test_a_disarmed_or_stale_plan_never_reaches_the_call() -> None:
    config = app_config(max_call_seconds=30, time_warning_s=10, max_cost_usd=0.5)
    planner, _ = planner_for(config)
    old, new = (planner.new_plan(webhook("CA1"), config.routes[0]) for _ in range(2))
    bridge = StandInBridge("CA1")
    tasks = BackgroundTasks()
    limits = CallLimits(lambda p: as_bridge(bridge) if p is new else None, tasks.spawn)
    limits.arm(old)
    timers = (old.time_limit, old.time_warning)
    limits.disarm(old)
    assert old.time_limit is None and all(t is not None and t.cancelled() for t in timers)
    limits.over_budget(old, 1.0)  # the CallSid's live bridge belongs to another plan
    assert len(tasks) == 0
    limits.over_budget(new, 1.0)
    await asyncio.wait_for(bridge.hung_up.wait(), 10)
    assert bridge.outcome is CallOutcome.MAX_COST


# -- farewell -----------------------------------------------------------------------------


async def farewell_after(outcome: CallOutcome, already: str | None = None) -> str | None:
    config = app_config()
    planner, _ = planner_for(config)
    plan = planner.new_plan(webhook("CA1"), config.routes[0])
    summary = CallSummary("CA1", "main", outcome)
    next_twiml = NextTwiml()
    if already is not None:
        next_twiml.set("CA1", already)
    await deliver_farewell(plan, summary, next_twiml, config.twilio)  # no REST credentials: kept here
    return next_twiml.take("CA1")


async def test_the_last_words_follow_how_the_call_ended() -> None:
    lost = await farewell_after(CallOutcome.PROVIDER_LOST)
    assert lost is not None and "Sorry, we lost the line." in lost
    unavailable = await farewell_after(CallOutcome.PROVIDER_UNAVAILABLE)
    assert unavailable is not None and "All our lines are busy." in unavailable
    over = await farewell_after(CallOutcome.MAX_COST)
    assert over is not None and "That is all we can do today." in over and "Hangup" in over
    assert await farewell_after(CallOutcome.CALLER_HANGUP) is None
    # A transfer (or a drain) decided first: it stands.
    assert await farewell_after(CallOutcome.PROVIDER_LOST, already="<Response><Dial/></Response>") == (
        "<Response><Dial/></Response>"
    )


# -- changes ------------------------------------------------------------------------------


async def test_a_waiter_wakes_on_the_change_it_waits_for_and_gives_up_at_its_deadline() -> None:
    changes = CallChanges()
    calls = {"CA1"}
    waiter = asyncio.ensure_future(changes.wait_until(lambda: not calls, 30))
    await asyncio.sleep(0)
    changes.notify()  # a change that does not satisfy it: it waits on
    await asyncio.sleep(0)
    assert not waiter.done()
    calls.clear()
    changes.notify()
    assert await asyncio.wait_for(waiter, 10) is True
    assert await changes.wait_until(lambda: False, 0.05) is False
