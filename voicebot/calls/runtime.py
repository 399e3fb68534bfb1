"""The application behind telephony's endpoints (it implements
:class:`telephony.application.CallApplication`): the parts of a call's way from the voice
webhook to the end of its media stream, put together. Each part is its own module:

- :mod:`~voicebot.calls.loaded`: the config new calls start with, its providers, signature
  checker and stream-token signer (replaced on reload);
- :mod:`~voicebot.calls.planner`: the webhook's decision (route, admission on a provider slot);
- :mod:`~voicebot.calls.handoff`: admitted plans waiting for their media stream;
- :mod:`~voicebot.calls.claim`: which plan a stream's token gets (here, or adopted from
  another instance);
- :mod:`~voicebot.calls.bridge_factory`: the call's bridge, observers and guards;
- :mod:`~voicebot.calls.session`: the call's provider session;
- :mod:`~voicebot.calls.live`: the calls streaming here, one stream per CallSid;
- :mod:`~voicebot.calls.limits`: ``max_call_seconds`` and ``max_cost_usd``;
- :mod:`~voicebot.calls.farewell` and :mod:`~voicebot.calls.next_twiml`: what Twilio runs
  after the stream;
- :mod:`~voicebot.calls.changes`: the wake-up the drain awaits;
- :mod:`~voicebot.calls.tasks`: fire-and-forget work of timers and callbacks;
- :mod:`voicebot.recordings.upload`: where finished tapes go (``[recording] store``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from s2s.circuit import CircuitBoard
from s2s.provider import Provider, ProviderSession, Turn
from telephony.application import Declined, HttpLimits
from telephony.bridge import CallBridge, CallSummary, TwilioSocket
from telephony.media_stream import MediaStreamProtocol, Start
from telephony.observer import CallObserver
from telephony.signature import SignatureChecker
from voicebot.calls.admission import SlotStore
from voicebot.calls.admission_redis import slot_store
from voicebot.calls.bridge_factory import BridgeFactory
from voicebot.calls.changes import CallChanges
from voicebot.calls.claim import StreamClaims
from voicebot.calls.farewell import deliver_farewell
from voicebot.calls.handoff import StreamHandoff
from voicebot.calls.limits import CallLimits
from voicebot.calls.live import LiveCalls
from voicebot.calls.loaded import LoadedConfig
from voicebot.calls.next_twiml import NextTwiml
from voicebot.calls.plan import CallPlan
from voicebot.calls.planner import CallPlanner
from voicebot.calls.session import open_session
from voicebot.calls.stream_token import StreamTokens
from voicebot.calls.tasks import BackgroundTasks
from voicebot.config import AppConfig
from voicebot.recordings.upload import TapeUploader, tape_uploader
from voicebot.telemetry.metrics import record_circuit_open, record_error, record_webhook_rejected

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, config: AppConfig) -> None:
        self.draining = False
        # Admission and circuit state outlive config reloads (keyed by provider name).
        self.slots: SlotStore = slot_store(config.admission)
        self.circuits = CircuitBoard(on_open=record_circuit_open)
        self.loaded = LoadedConfig(config)
        self.tasks = BackgroundTasks()
        self.live = LiveCalls()
        self.changes = CallChanges()  # woken wherever live, handoff or next_twiml can empty
        self.next_twiml = NextTwiml()
        self.call_limits = CallLimits(self.live.bridge_of, self.tasks.spawn)
        self.handoff = StreamHandoff(
            self._release, lambda: self.config.server.stream_connect_timeout_s, lambda: self.slots.shared
        )
        self.planner = CallPlanner(self.loaded, self.slots, self.circuits, self.handoff, self.next_twiml, self.plan_of)
        self.claims = StreamClaims(self.loaded, self.slots, self.handoff, self.next_twiml, self._release)
        self.bridges = BridgeFactory(self.open_session, self.call_limits.over_budget, self._farewell)
        # Where finished tapes go is read once: uploads in flight and the leftovers of a
        # previous run belong to the store the process started with.
        self.tape_uploads: TapeUploader | None = tape_uploader(config.recording)
        if self.tape_uploads is not None:
            self.bridges.on_tape_closed = self.tape_uploads.submit
            self.tape_uploads.start()
        self.apply(config)

    def close(self, upload_drain_s: float = 0.0) -> None:
        """The process is stopping: tape uploads get ``upload_drain_s`` to finish."""
        if self.tape_uploads is not None:
            self.tape_uploads.close(upload_drain_s)

    def apply(self, config: AppConfig) -> None:
        """Use ``config`` for new calls; calls in progress keep the providers they hold."""
        if self.tape_uploads is not None and _store_of(config) != _store_of(self.config):
            log.warning("[recording] store settings changed: they apply at the next start, not on reload")
        self.loaded.apply(config)
        self.circuits.configure(config.resilience.circuit_failures, config.resilience.circuit_cooldown_s)

    # -- what the parts hold, by the names the server and tests use ---------------------

    @property
    def config(self) -> AppConfig:
        return self.loaded.config

    @property
    def providers(self) -> dict[str, Provider]:
        return self.loaded.providers

    @property
    def signatures(self) -> SignatureChecker:
        return self.loaded.signatures

    @property
    def stream_tokens(self) -> StreamTokens:
        return self.loaded.stream_tokens

    @property
    def active(self) -> dict[str, CallBridge]:
        """The bridges of the calls streaming here, by CallSid."""
        return self.live.bridges

    @property
    def observer_factories(self) -> list[Callable[[CallPlan], CallObserver]]:
        return self.bridges.observer_factories

    @property
    def limits(self) -> HttpLimits:
        server = self.config.server
        return HttpLimits(server.public_url, server.max_body_bytes, server.max_message_bytes)

    # -- telephony.application.CallApplication ------------------------------------------

    def webhook_rejected(self, reason: str) -> None:
        record_webhook_rejected(reason)

    def stream_error(self, call_sid: str, error: str) -> None:
        record_error("twilio-stream-error", "twilio")

    def bad_frames_before_start(self, count: int) -> None:
        record_error("twilio-bad-frame", "twilio", count)

    def plan_of(self, call_sid: str) -> CallPlan | None:
        """The plan of ``call_sid`` if it is waiting for its stream or live here."""
        plan = next((p for p in self.handoff.pending.values() if p.call_sid == call_sid), None)
        return plan if plan is not None else self.live.plan_of(call_sid)

    async def plan_call(self, params: Mapping[str, str], received_at: float | None = None) -> CallPlan | Declined:
        return await self.planner.plan_call(params, received_at)

    async def adopt_stream(
        self, token: str, start: Start, socket: TwilioSocket, protocol: MediaStreamProtocol, base_url: str = ""
    ) -> CallBridge | None:
        """The bridge for the media stream that presented ``token``, built from the call's
        plan, or None when the stream must be refused: also when the call already has a
        stream here."""
        call_sid = start.call_sid
        if not self.live.reserve(call_sid):
            log.warning("call %s: refused a second media stream while the call has one", call_sid)
            return None
        try:
            plan = await self.claims.claim(token, call_sid)
            if plan is None:
                return None
            bridge = self.bridges.build(plan, start, socket, protocol, base_url)
            self.live.add(bridge, plan)
            return bridge
        finally:
            self.live.unreserve(call_sid)
            self.changes.notify()  # its plan left the handoff

    async def open_session(self, plan: CallPlan, history: Sequence[Turn] = ()) -> ProviderSession:
        """The call's provider session (:func:`voicebot.calls.session.open_session`); the
        call's clock starts once it is open."""
        session = await open_session(plan, self.circuits, history)
        self.call_limits.arm(plan)
        return session

    def call_ended(self, bridge: CallBridge, summary: CallSummary) -> None:
        plan = self.live.end(bridge)
        self._release(plan)
        if plan.cost is not None:
            log.info("call %s cost $%.6f: %s", plan.call_sid, plan.cost.cost_usd, plan.cost.summary())
        plan.tools.call_ended(summary)

    def take_next_twiml(self, call_sid: str) -> str | None:
        twiml = self.next_twiml.take(call_sid)
        self.changes.notify()
        return twiml

    def withdraw_pending(self) -> list[CallPlan]:
        return self.claims.withdraw_pending()

    async def _farewell(self, plan: CallPlan, summary: CallSummary) -> None:
        await deliver_farewell(plan, summary, self.next_twiml, self.config.twilio)

    def _release(self, plan: CallPlan) -> None:
        """The plan's call is over (or never came): its timers stop and its slot goes."""
        self.call_limits.disarm(plan)
        if plan.lease is not None:
            self.tasks.spawn(plan.lease.release())
        self.changes.notify()  # a call ended, or a plan left the handoff (expired, withdrawn)


def _store_of(config: AppConfig) -> tuple[object, ...]:
    rec = config.recording
    return (rec.store, rec.s3, rec.dir, rec.upload_wav, rec.keep_local, rec.upload_workers)
