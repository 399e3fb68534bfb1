"""The calls whose media stream runs on this instance: each one's bridge and the plan it was
built from, and the rule of one media stream per CallSid."""

from __future__ import annotations

from telephony.bridge import CallBridge
from voicebot.calls.plan import CallPlan


class LiveCalls:
    def __init__(self) -> None:
        self.bridges: dict[str, CallBridge] = {}  # by CallSid
        self._plans: dict[CallBridge, CallPlan] = {}  # the plan of each bridge in ``bridges``
        # CallSids whose stream is being set up or running here
        self._streams: set[str] = set()

    def reserve(self, call_sid: str) -> bool:
        """Claim ``call_sid`` for a media stream being set up; False if it already has one (a
        replayed or duplicated stream must not open a second provider session for one call,
        nor take over its bookkeeping). Call before any await, so a concurrent duplicate sees
        it; :meth:`unreserve` if the stream is refused."""
        if call_sid in self._streams:
            return False
        self._streams.add(call_sid)
        return True

    def unreserve(self, call_sid: str) -> None:
        """The stream set up for ``call_sid`` was refused (or failed): the CallSid is free again.
        A no-op once the call is live."""
        if call_sid not in self.bridges:
            self._streams.discard(call_sid)

    def add(self, bridge: CallBridge, plan: CallPlan) -> None:
        self.bridges[bridge.info.call_sid] = bridge
        self._plans[bridge] = plan

    def end(self, bridge: CallBridge) -> CallPlan:
        """``bridge`` has finished; its plan."""
        call_sid = bridge.info.call_sid
        if self.bridges.get(call_sid) is bridge:
            del self.bridges[call_sid]
            self._streams.discard(call_sid)
        return self._plans.pop(bridge)

    def plan_of(self, call_sid: str) -> CallPlan | None:
        bridge = self.bridges.get(call_sid)
        return None if bridge is None else self._plans.get(bridge)

    def bridge_of(self, plan: CallPlan) -> CallBridge | None:
        """The live bridge built from ``plan``; None once it ended, or when the CallSid's live
        bridge comes from another plan (nothing done for an old plan reaches a newer call)."""
        bridge = self.bridges.get(plan.call_sid)
        return bridge if bridge is not None and self._plans.get(bridge) is plan else None
