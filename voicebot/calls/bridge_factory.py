"""How a call's bridge is put together from its plan: the observers that watch it (cost,
telemetry, the tape recorder, the silence watch, the greeting guard), the local barge-in
detector, the tools, and the session it opens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from s2s.call_context import call_redactor_var
from s2s.provider import ProviderSession, Turn
from telephony.bridge import CallBridge, CallInfo, CallSummary, TwilioSocket
from telephony.media_stream import MediaStreamProtocol, Start
from telephony.observer import CallObserver
from voicebot.calls.barge_in import local_barge_in
from voicebot.calls.cost import CallCost
from voicebot.calls.greeting_guard import greeting_guard
from voicebot.calls.plan import CallPlan
from voicebot.calls.silence import silence_watch
from voicebot.devtools.tape.recorder import recorder_for_call, wants_recording

OpenSession = Callable[[CallPlan, Sequence[Turn]], Awaitable[ProviderSession]]
BeforeClose = Callable[[CallPlan, CallSummary], Awaitable[None]]


class BridgeFactory:
    """``open_session``: the call's provider session, given the call's transcript (a live
    list the bridge keeps, which a recovered session is opened with); ``over_budget``: called
    once the call's cost reaches the route's ``max_cost_usd``; ``before_close``: awaited
    before the stream closes (last TwiML)."""

    def __init__(
        self,
        open_session: OpenSession,
        over_budget: Callable[[CallPlan, float], None],
        before_close: BeforeClose,
    ) -> None:
        self._open_session = open_session
        self._over_budget = over_budget
        self._before_close = before_close
        # one observer per call from each factory (voicebot.telemetry registers CallTelemetry)
        self.observer_factories: list[Callable[[CallPlan], CallObserver]] = []
        # handed each tape once it is closed (voicebot.recordings uploads it); on the writer thread
        self.on_tape_closed: Callable[[Path], None] | None = None

    def build(
        self, plan: CallPlan, start: Start, socket: TwilioSocket, protocol: MediaStreamProtocol, base_url: str = ""
    ) -> CallBridge:
        info = CallInfo(
            start.call_sid, start.stream_sid, plan.route.name, plan.caller, plan.called, plan.direction, base_url
        )
        server = plan.config.server
        guards = greeting_guard(plan.route, lambda: bridge.handle.bot_audio_pending)
        bridge = CallBridge(
            socket,
            protocol,
            info,
            lambda history: self._open_session(plan, history),
            outbound_chunk_ms=server.outbound_chunk_ms,
            local_barge_in=local_barge_in(plan.route, server),
            observers=[*self.observers(plan), *silence_watch(plan.route, lambda: bridge.handle), *guards],
            before_close=lambda summary: self._before_close(plan, summary),
            tool_handler=plan.tools,
            dtmf_handler=plan.tools.dtmf,
            barge_in_held=guards[0].holds if guards else None,
            hold_audio=plan.route.waiting.hold_clip(plan.route.call_control.warm_transfer),
        )
        # The media endpoint runs this bridge next, in this task: the call's tasks and log
        # lines inherit what its route masks (s2s.call_context.redact_log_records).
        call_redactor_var.set(plan.route.redactor if plan.route.redactor else None)
        return bridge

    def observers(self, plan: CallPlan) -> list[CallObserver]:
        """The call's cost (kept on the plan), one observer from each factory, and its tape
        recorder when the route records."""
        plan.cost = CallCost(plan.config, plan.route.max_cost_usd, lambda cost: self._over_budget(plan, cost))
        observers: list[CallObserver] = [plan.cost]
        observers += [factory(plan) for factory in self.observer_factories]
        if wants_recording(plan.config, plan.route):
            providers = tuple(plan.route.providers)
            recorder = recorder_for_call(plan.config, plan.route, plan.call_sid, providers, plan.direction)
            recorder.usage = plan.cost.summary
            recorder.on_closed = self.on_tape_closed
            observers.append(recorder)
            if plan.on_tape is not None:
                plan.on_tape(recorder.path)
        return observers
