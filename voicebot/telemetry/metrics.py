"""The metric instruments, and the small API other layers call to report what they did.

Everything is measured at the phone edge (what a caller experiences), with low-cardinality
attributes only: route, provider, outcome, direction, error code. Never a CallSid: that
belongs on spans and log lines, where one call's story is told.

The resilience layer (retries, fallback chain, circuit breaker, recovery) reports through
:func:`record_retry`, :func:`record_fallback`, :func:`record_circuit_open`,
:func:`record_error`, :func:`provider_connect` and :func:`record_recovery` (wired into
``s2s.resilience`` by :func:`resilience_hooks` and ``CircuitBoard(on_open=...)``). They are cheap, safe to
call before :func:`~voicebot.telemetry.setup.setup_telemetry` (telemetry then starts with
its defaults) and add events to the current span (the call's, or its connect/recovery span).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from s2s.resilience import ResilienceHooks

CircuitView = Callable[[], dict[str, bool] | None]
# (tapes waiting for upload, uploads so far by (kind, outcome)), read at collection time
TapeUploads = tuple[int, Mapping[tuple[str, str], int]]
TapeUploadView = Callable[[], TapeUploads | None]

# Latencies a caller notices: tens of ms to a few seconds.
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Work inside the bridge per frame: microseconds to a few ms.
FRAME_BUCKETS_S = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025)
# Audio the caller was sent but never heard when they talked over the bot.
COST_BUCKETS_USD = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNHEARD_BUCKETS_S = (0.0, 0.02, 0.04, 0.08, 0.12, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# How long callers wait on hold for a slow tool or agent (bounded by its timeout, at most 60 s).
HOLD_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)


class Instruments:
    """One set of instruments per process (see :func:`~voicebot.telemetry.setup.get_telemetry`)."""

    def __init__(self, meter: Meter) -> None:
        self.calls_active = meter.create_up_down_counter(
            "voicebot.calls.active", unit="{call}", description="calls in progress, by route and provider"
        )
        self.calls = meter.create_counter(
            "voicebot.calls", unit="{call}", description="finished calls by route, provider, outcome and direction"
        )
        self.webhook_rejected = meter.create_counter(
            "voicebot.webhook.rejected", unit="{call}", description="voice webhooks refused (draining, capacity)"
        )
        self.provider_connect = meter.create_histogram(
            "voicebot.provider.connect.duration",
            unit="s",
            description="opening a provider session (connect + handshake), one attempt",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.turn_latency = meter.create_histogram(
            "voicebot.turn.latency",
            unit="s",
            description="caller stopped speaking -> first bot audio frame sent to Twilio",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.first_audio = meter.create_histogram(
            "voicebot.first_audio.latency",
            unit="s",
            description="media stream started -> first bot audio frame sent to Twilio",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.barge_in_latency = meter.create_histogram(
            "voicebot.barge_in.latency",
            unit="s",
            description="provider reported caller speech over the bot -> Twilio clear sent",
            explicit_bucket_boundaries_advisory=FRAME_BUCKETS_S + LATENCY_BUCKETS_S[3:],
        )
        self.barge_in_unheard = meter.create_histogram(
            "voicebot.barge_in.unheard_audio",
            unit="s",
            description="bot audio sent to Twilio but not heard when the caller talked over it "
            "(sent minus heard: what truncation removed from the provider's context)",
            explicit_bucket_boundaries_advisory=UNHEARD_BUCKETS_S,
        )
        self.forward = meter.create_histogram(
            "voicebot.bridge.forward.duration",
            unit="s",
            description="sampled time a frame spends in the bridge (transcoding + framing), per direction",
            explicit_bucket_boundaries_advisory=FRAME_BUCKETS_S,
        )
        self.retries = meter.create_counter(
            "voicebot.provider.retries", unit="{attempt}", description="provider connect/reconnect retries"
        )
        self.fallbacks = meter.create_counter(
            "voicebot.provider.fallbacks", unit="{call}", description="moves down a route's fallback chain"
        )
        self.circuit_opened = meter.create_counter(
            "voicebot.provider.circuit_opened", unit="{event}", description="provider circuit breaker opened"
        )
        self.recoveries = meter.create_counter(
            "voicebot.recoveries", unit="{event}", description="mid-call provider recoveries, by outcome"
        )
        self.recovery_duration = meter.create_histogram(
            "voicebot.recovery.duration",
            unit="s",
            description="a mid-call recovery: provider lost -> replacement session serving (the caller's pause)",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.outbound_calls = meter.create_counter(
            "voicebot.outbound.calls",
            unit="{call}",
            description="outbound calls by route and result (completed, busy, no-answer, failed, canceled, "
            "machine, provider-full, rejected)",
        )
        self.outbound_amd = meter.create_counter(
            "voicebot.outbound.amd", unit="{call}", description="answering-machine detection verdicts (AnsweredBy)"
        )
        self.silence_steps = meter.create_counter(
            "voicebot.silence.steps",
            unit="{event}",
            description="what the bot did about a silent caller, by route and step (prompt, goodbye)",
        )
        self.hold = meter.create_histogram(
            "voicebot.hold.duration",
            unit="s",
            description="a caller on hold: a tool or the agent outlasted the route's hold_after_s -> its answer",
            explicit_bucket_boundaries_advisory=HOLD_BUCKETS_S,
        )
        self.call_cost = meter.create_histogram(
            "voicebot.call.cost",
            unit="usd",
            description="what a call's provider use cost, priced by [pricing] (voicebot.calls.cost), by route",
            explicit_bucket_boundaries_advisory=COST_BUCKETS_USD,
        )
        self.usage = meter.create_counter(
            "voicebot.usage",
            unit="1",
            description="provider use by provider type and kind: seconds (audio_in_s, audio_out_s, session_s, "
            "billable_s) or tokens (text_in_tokens, audio_out_tokens, ...)",
        )
        self.errors = meter.create_counter(
            "voicebot.errors", unit="{error}", description="errors by code (provider errors, bad Twilio frames)"
        )
        # Read at collection time, never on the call path (see watch_circuits).
        self._circuit_views: list[CircuitView] = []
        self._upload_views: list[TapeUploadView] = []
        meter.create_observable_gauge(
            "voicebot.tape.upload_backlog",
            callbacks=[self._observe_backlog],
            unit="{file}",
            description="finished tapes on local disk waiting for their upload to the recording store",
        )
        meter.create_observable_counter(
            "voicebot.tape.uploads",
            callbacks=[self._observe_uploads],
            unit="{file}",
            description="tape files (kind: tape, wav) sent to the recording store, by outcome: ok, or failed "
            "(that attempt failed; the file stays on disk and is tried again)",
        )
        meter.create_observable_gauge(
            "voicebot.provider.circuit_open",
            callbacks=[self._observe_circuits],
            description="1 while a provider's circuit breaker keeps new calls away from it",
        )

    def watch_circuits(self, view: CircuitView) -> None:
        """Report the circuit state ``view()`` returns ({provider: is_open}) on every
        collection; ``view()`` returning None unregisters it (its runtime is gone)."""
        self._circuit_views.append(view)

    def watch_tape_uploads(self, view: TapeUploadView) -> None:
        """Report what ``view()`` returns (the tapes waiting for upload, and the uploads so
        far by (kind, outcome)) on every collection; None unregisters it."""
        self._upload_views.append(view)

    def _upload_states(self) -> list[TapeUploads]:
        states = []
        for view in list(self._upload_views):
            state = view()
            if state is None:
                self._upload_views.remove(view)
            else:
                states.append(state)
        return states

    def _observe_backlog(self, options: CallbackOptions) -> Iterable[Observation]:
        states = self._upload_states()
        if states:
            yield Observation(sum(backlog for backlog, _ in states))

    def _observe_uploads(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[str, str], int] = {}
        for _, counts in self._upload_states():
            for key, n in counts.items():
                totals[key] = totals.get(key, 0) + n
        for (kind, outcome), n in totals.items():
            yield Observation(n, {"kind": kind, "outcome": outcome})

    def _observe_circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        for view in list(self._circuit_views):
            states = view()
            if states is None:
                self._circuit_views.remove(view)
                continue
            for provider, is_open in states.items():
                yield Observation(1 if is_open else 0, {"provider": provider})


def _instruments() -> Instruments:
    from voicebot.telemetry.setup import get_telemetry

    return get_telemetry().instruments


def _event(name: str, attributes: dict[str, str | int | float]) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, attributes)


def record_retry(provider: str, reason: str, attempt: int = 1) -> None:
    """A connect or reconnect attempt to ``provider`` failed and will be tried again."""
    _instruments().retries.add(1, {"provider": provider, "reason": reason})
    _event("retry", {"provider": provider, "reason": reason, "attempt": attempt})


def record_fallback(from_provider: str, to_provider: str, reason: str) -> None:
    """The call moves from ``from_provider`` to the next provider of its route."""
    _instruments().fallbacks.add(1, {"from_provider": from_provider, "to_provider": to_provider})
    _event("fallback", {"from_provider": from_provider, "to_provider": to_provider, "reason": reason})


def record_circuit_open(provider: str) -> None:
    """``provider``'s circuit breaker opened: new calls skip it until it half-opens."""
    _instruments().circuit_opened.add(1, {"provider": provider})
    _event("circuit_open", {"provider": provider})


def record_error(code: str, provider: str = "none", count: int = 1) -> None:
    _instruments().errors.add(count, {"code": code, "provider": provider})


def record_webhook_rejected(reason: str) -> None:
    """The voice webhook refused a call (``draining``, ``capacity``, ...)."""
    _instruments().webhook_rejected.add(1, {"reason": reason})


def record_outbound_result(route: str, result: str) -> None:
    """An outbound call ended, or was never placed (``provider-full``, ``rejected``)."""
    _instruments().outbound_calls.add(1, {"route": route, "result": result})


def record_silence_step(route: str, step: str) -> None:
    """The caller was silent for the route's ``idle_after_s``: the bot re-prompts or says goodbye."""
    _instruments().silence_steps.add(1, {"route": route, "step": step})
    _event("silence", {"step": step})


def record_hold(route: str, duration_s: float) -> None:
    """A wait that put the caller on hold (hold audio) is over."""
    _instruments().hold.record(duration_s, {"route": route})
    _event("hold", {"duration_s": round(duration_s, 3)})


def record_outbound_amd(route: str, answered_by: str) -> None:
    _instruments().outbound_amd.add(1, {"route": route, "answered_by": answered_by})


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if not isinstance(exc, Exception):
        return "cancelled"
    return "error"


@contextlib.contextmanager
def provider_connect(provider: str) -> Iterator[trace.Span]:
    """Wrap ONE attempt to open a session with ``provider``: a child span of the call and a
    latency sample labelled with the attempt's outcome (ok, error, timeout, cancelled)."""
    from voicebot.telemetry.setup import get_telemetry

    tel = get_telemetry()
    started = time.perf_counter()
    error: BaseException | None = None
    with tel.tracer.start_as_current_span("provider.connect", attributes={"voicebot.provider": provider}) as span:
        try:
            yield span
        except BaseException as exc:
            error = exc
            raise
        finally:
            outcome = _outcome(error)
            span.set_attribute("voicebot.outcome", outcome)
            tel.instruments.provider_connect.record(
                time.perf_counter() - started, {"provider": provider, "outcome": outcome}
            )


def record_recovery(lost_provider: str, new_provider: str | None, kind: str, ok: bool, duration_s: float) -> None:
    """A mid-call recovery of ``lost_provider`` finished (``kind``: session-lost, watchdog, expired):
    a ``recovery`` child span of the call, back-dated to when it began, and the metrics."""
    from voicebot.telemetry.setup import get_telemetry

    tel = get_telemetry()
    outcome = "ok" if ok else "failed"
    tel.instruments.recoveries.add(1, {"provider": lost_provider, "reason": kind, "outcome": outcome})
    tel.instruments.recovery_duration.record(duration_s, {"provider": lost_provider, "outcome": outcome})
    attributes: dict[str, str | float] = {
        "voicebot.provider": lost_provider,
        "voicebot.recovery.reason": kind,
        "voicebot.outcome": outcome,
        "voicebot.recovery.duration_ms": round(duration_s * 1000.0, 1),
    }
    if new_provider is not None:
        attributes["voicebot.recovery.provider"] = new_provider
    start = time.time_ns() - int(duration_s * 1e9)
    tel.tracer.start_span("recovery", start_time=start, attributes=attributes).end()


def resilience_hooks() -> ResilienceHooks:
    """What :class:`s2s.resilience.ResilientSession` reports through, in production."""
    return ResilienceHooks(retry=record_retry, fallback=record_fallback, recovered=record_recovery)
