"""The call's span tree and its phone-edge metrics, taken from the bridge's observer hooks.

Hot-path budget: ``twilio_in``/``twilio_out``/``provider_in``/``provider_out`` run for every
frame, inside the bridge's audio loop. They do an identity type check, an integer
increment and, only when a measurement is waiting for its end point, one string-prefix
test; clock reads happen on the few events that matter (speech start/stop, the first audio
of an answer, one frame in :data:`SAMPLE_EVERY`). Spans are opened per call, per turn and
per barge-in, never per frame.

What is measured, at the phone edge:

- turn latency: provider ``SpeechStopped`` -> the next bot media frame handed to Twilio;
- first-audio latency: media stream start -> the first bot media frame handed to Twilio;
- barge-in latency: provider ``SpeechStarted`` -> ``clear`` sent (the bridge's ``barge_in``
  hook fires after the clear frame was written);
- bridge forwarding, sampled: inbound ``twilio_in`` -> ``provider_out(AudioSent)`` (the
  bridge does nothing between those two but transcode, so this is the inbound transcoding
  time per frame), outbound ``AudioOut`` -> its first media frame to Twilio (transcoding +
  Twilio framing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import Token
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode

from s2s.events import (
    AudioOut,
    Closed,
    ProviderError,
    ProviderEvent,
    SessionExpiring,
    SpeechStarted,
    SpeechStopped,
    TurnDone,
    Usage,
)
from telephony.media_stream import Media, TwilioEvent
from telephony.observer import AudioSent, CallObserver, SentToProvider, ToTwilio
from voicebot.privacy.redaction import NO_REDACTION
from voicebot.telemetry.setup import Telemetry, get_telemetry

if TYPE_CHECKING:
    from s2s.provider import ProviderSession
    from telephony.bridge import CallSummary
    from voicebot.calls.plan import CallPlan

# One inbound frame (20 ms) in 50 and one provider audio chunk in 20 are timed: about one
# sample per second per direction per call, plenty for a histogram over a fleet.
SAMPLE_EVERY = 50
SAMPLE_EVERY_OUT = 20

INBOUND = {"direction": "inbound"}
OUTBOUND = {"direction": "outbound"}


def epoch_ns(monotonic_s: float) -> int:
    """A ``time.monotonic()`` reading as the wall-clock nanoseconds spans use."""
    return time.time_ns() - int((time.monotonic() - monotonic_s) * 1e9)


def call_attributes(plan: CallPlan) -> tuple[dict[str, str], str, str]:
    """(metric attributes, provider, model) for a call. ``plan.providers[0]`` is the provider
    admission gave the call a slot on; moves down the chain are reported as fallbacks."""
    provider = plan.providers[0] if plan.providers else None
    name = provider.name if provider is not None else "none"
    model = plan.route.model or (getattr(provider.config, "model", None) if provider is not None else None)
    return {"route": plan.route.name, "provider": name}, name, str(model or "default")


class CallTelemetry(CallObserver):
    """One per call; created when the media stream is claimed, right before the bridge runs,
    in the same task, so the call span becomes the current span of everything the bridge
    does for the call (provider connects, recoveries, tool calls)."""

    def __init__(self, plan: CallPlan, telemetry: Telemetry | None = None) -> None:
        tel = telemetry or get_telemetry()
        self._m = tel.instruments
        self._tracer = tel.tracer
        self._plan = plan
        # provider messages may quote what was said: masked as the route says
        self._redact: Callable[[str], str] = getattr(plan.route, "redactor", NO_REDACTION)
        self._attrs, self._provider, model = call_attributes(plan)
        self._started = time.perf_counter()
        received = getattr(plan, "received_at", None) or plan.created_at
        self.span: Span = self._tracer.start_span(
            "call",
            start_time=epoch_ns(received),
            attributes={
                "twilio.call_sid": plan.call_sid,
                "voicebot.route": plan.route.name,
                "voicebot.direction": plan.direction,
                "voicebot.provider": self._provider,
                "voicebot.model": model,
            },
        )
        self._ctx = trace.set_span_in_context(self.span)
        # The webhook ran before this object existed; its span is recorded after the fact
        # from the times the webhook left on the plan.
        self._tracer.start_span(
            "webhook.admission", context=self._ctx, start_time=epoch_ns(received), attributes={"http.route": "voice"}
        ).end(end_time=epoch_ns(plan.created_at))
        self._token: Token[Context] | None = otel_context.attach(self._ctx)
        self._m.calls_active.add(1, self._attrs)
        self._ended = False
        # measurements waiting for their end point (perf_counter seconds; 0.0 = none)
        self._want_media = True  # first audio of the call
        self._first_audio = True
        self._speech_stopped = 0.0
        self._speech_started = 0.0
        self._speech_started_ns = 0
        self._in_frames = 0
        self._in_sample = 0.0
        self._out_chunks = 0
        self._out_sample = 0.0
        self._turn: Span | None = None
        self._turn_started_ns = 0
        self._session: ProviderSession | None = None
        self._turn_item: str | None = None
        self._turns = 0
        # Billable provider time per provider session (Usage is cumulative per session).
        self._billable_s: dict[str, float] = {}

    # -- hot path ------------------------------------------------------------------------

    def twilio_in(self, frame: str | bytes, event: TwilioEvent | None) -> None:
        if type(event) is Media:
            self._in_frames += 1
            # A sample not consumed by now never reached the provider (audio held while the
            # session opens): it is dropped rather than timed across the wait.
            self._in_sample = time.perf_counter() if self._in_frames % SAMPLE_EVERY == 0 else 0.0

    def provider_out(self, sent: SentToProvider) -> None:
        if self._in_sample and type(sent) is AudioSent:
            self._m.forward.record(time.perf_counter() - self._in_sample, INBOUND)
            self._in_sample = 0.0

    def twilio_out(self, kind: ToTwilio, frame: str) -> None:
        if not self._want_media or kind is not ToTwilio.MEDIA:
            return
        now = time.perf_counter()
        self._want_media = False
        if self._out_sample:
            self._m.forward.record(now - self._out_sample, OUTBOUND)
            self._out_sample = 0.0
        if self._first_audio:
            self._first_audio = False
            self._m.first_audio.record(now - self._started, self._attrs)
            self.span.add_event("first_audio_sent")
        if self._speech_stopped:
            latency = now - self._speech_stopped
            self._speech_stopped = 0.0
            self._m.turn_latency.record(latency, self._attrs)
            if self._turn is not None:
                self._turn.set_attribute("voicebot.turn.latency_ms", round(latency * 1000.0, 1))
                self._turn.add_event("first_audio_sent")

    def provider_in(self, event: ProviderEvent) -> None:
        # The bridge sends a chunk's first media frame before it takes the next event, so a
        # sample still pending here was a chunk it dropped (barge-in): not a forwarding time.
        self._out_sample = 0.0
        if isinstance(event, AudioOut):
            self._out_chunks += 1
            if self._out_chunks % SAMPLE_EVERY_OUT == 1:
                self._out_sample = time.perf_counter()
                self._want_media = True
            if event.item_id != self._turn_item:
                self._start_turn(event.item_id)
        elif isinstance(event, SpeechStopped):
            self._speech_stopped = time.perf_counter()
            self._want_media = True
            # The previous answer lasted until the caller started speaking again.
            self._end_turn(end_ns=self._speech_started_ns)
            self._open_turn()
        elif isinstance(event, SpeechStarted):
            self._speech_started = time.perf_counter()
            self._speech_started_ns = time.time_ns()
            self._speech_stopped = 0.0  # the caller went on talking: the turn is not over yet
        elif isinstance(event, TurnDone):
            # The provider finished generating; the caller may hear it for a while yet, so
            # the turn span stays open until the caller speaks again or barges in.
            if self._turn is not None:
                self._turn.add_event("bot_done", {"interrupted": event.interrupted})
        else:
            self._rare_event(event)

    # -- rare events ---------------------------------------------------------------------

    def session_opened(self, session: ProviderSession) -> None:
        self._session = session
        self._in_sample = 0.0  # held caller audio is flushed next: not a per-frame time
        self.span.add_event(
            "session_opened",
            {"input_format": str(session.input_format), "output_format": str(session.output_format)},
        )

    def _rare_event(self, event: ProviderEvent) -> None:
        if isinstance(event, ProviderError):
            # The provider serving now (a ResilientSession names it), which after a fallback
            # is not the one the call was admitted on.
            provider = str(getattr(self._session, "provider_name", None) or self._provider)
            self._m.errors.add(1, {"code": event.code, "provider": provider})
            self.span.add_event(
                "provider_error",
                {"code": event.code, "fatal": event.fatal, "message": self._redact(event.message)[:200]},
            )
        elif isinstance(event, SessionExpiring):
            self.span.add_event("session_expiring", {"reason": event.reason})
        elif isinstance(event, Closed):
            self.span.add_event("provider_closed", {"reason": self._redact(event.reason)[:200], "error": event.error})
        elif isinstance(event, Usage):
            self._billable_s[event.session_id] = event.billable_s

    def _start_turn(self, item_id: str) -> None:
        """Bot audio of a new item: the turn opened at SpeechStopped now has its item, or
        the bot speaks unprompted (greeting, tool result) and a turn opens here."""
        self._turn_item = item_id
        turn = self._turn or self._open_turn()
        turn.set_attribute("voicebot.item_id", item_id)

    def _open_turn(self) -> Span:
        self._turn_started_ns = time.time_ns()
        self._turn = self._tracer.start_span(
            "turn", context=self._ctx, start_time=self._turn_started_ns, attributes={"voicebot.turn": self._turns}
        )
        return self._turn

    def _end_turn(self, interrupted: bool = False, end_ns: int = 0) -> None:
        if self._turn is not None:
            self._turn.set_attribute("voicebot.turn.interrupted", interrupted)
            self._turn.end(end_time=end_ns if end_ns > self._turn_started_ns else None)
            self._turn = None
            self._turns += 1

    def barge_in(self, item_id: str, heard_ms: float, sent_ms: float, latency_ms: float) -> None:
        now = time.perf_counter()
        if self._speech_started:
            latency_s = now - self._speech_started
            start_ns = self._speech_started_ns
            self._speech_started = 0.0
        else:  # several items cut by one barge-in: the first one carries the latency
            latency_s = latency_ms / 1000.0
            start_ns = time.time_ns() - int(latency_s * 1e9)
        unheard_ms = max(0.0, sent_ms - heard_ms)
        self._m.barge_in_latency.record(latency_s, self._attrs)
        self._m.barge_in_unheard.record(unheard_ms / 1000.0, self._attrs)
        self._tracer.start_span(
            "barge_in",
            context=self._ctx,
            start_time=start_ns,
            attributes={
                "voicebot.item_id": item_id,
                "voicebot.heard_ms": round(heard_ms, 1),
                "voicebot.sent_ms": round(sent_ms, 1),
                "voicebot.unheard_ms": round(unheard_ms, 1),
                "voicebot.clear_latency_ms": round(latency_ms, 2),
            },
        ).end()
        self._end_turn(interrupted=True)

    def _resilience_story(self) -> None:
        """Admission's fallback (decided at the webhook, before any session existed) and the
        call's resilience summary from its ResilientSession, once at the end of the call."""
        plan = self._plan
        route_first = plan.route.providers[0] if getattr(plan.route, "providers", None) else self._provider
        if route_first != self._provider:  # admission skipped full / circuit-open providers
            self._m.fallbacks.add(1, {"from_provider": route_first, "to_provider": self._provider})
            self.span.add_event(
                "fallback", {"from_provider": route_first, "to_provider": self._provider, "reason": "admission"}
            )
        # Retries, fallbacks and recoveries inside the call were reported live (resilience
        # hooks, voicebot.telemetry.metrics); the span keeps the summary.
        session = getattr(plan, "session", None)
        opened: list[tuple[str, object]] = list(getattr(session, "opened", ()))
        recoveries = int(getattr(session, "recoveries", 0))
        if opened:
            self.span.set_attributes(
                {
                    "voicebot.provider.served": opened[-1][0],
                    "voicebot.sessions_opened": len(opened),
                    "voicebot.recoveries": recoveries,
                    "voicebot.renewals": len(getattr(session, "renewed_at", ())),
                }
            )

    def _cost(self) -> None:
        """The call's usage and cost (voicebot.calls.cost) on the span and the metrics."""
        cost = getattr(self._plan, "cost", None)
        if cost is None:
            return
        by_type = cost.by_provider()
        total = cost.total()
        self._m.call_cost.record(total.cost_usd, {"route": self._plan.route.name})
        for provider_type, record in by_type.items():
            for kind, value in record.row().items():
                if kind != "cost_usd":
                    self._m.usage.add(value, {"provider": provider_type, "kind": kind})
        self.span.set_attribute("voicebot.cost_usd", round(total.cost_usd, 6))
        self.span.set_attributes({f"voicebot.usage.{kind}": value for kind, value in total.row().items()})

    def call_ended(self, summary: CallSummary) -> None:
        if self._ended:
            return
        self._ended = True
        self._end_turn()
        self._m.calls_active.add(-1, self._attrs)
        self._m.calls.add(1, {**self._attrs, "outcome": summary.outcome.value, "direction": self._plan.direction})
        if summary.bad_frames:
            self._m.errors.add(summary.bad_frames, {"code": "twilio-bad-frame", "provider": "twilio"})
        self.span.set_attributes(
            {
                "voicebot.outcome": summary.outcome.value,
                "voicebot.barge_ins": len(summary.barge_ins),
                "voicebot.turns": self._turns,
                "voicebot.bad_frames": summary.bad_frames,
            }
        )
        if self._billable_s:
            self.span.set_attribute("voicebot.provider_billable_s", sum(self._billable_s.values()))
        self._cost()
        self._resilience_story()
        if summary.outcome.failed:
            self.span.set_status(Status(StatusCode.ERROR, summary.outcome.value))
        self.span.end()
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None
