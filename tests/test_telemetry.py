"""Metrics and traces of real calls, read back the way operators read them: the Prometheus
text of ``GET /metrics`` and the spans the OTel SDK hands to its exporters."""

from __future__ import annotations

import importlib
import logging
import secrets
import types
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from s2s.events import AudioOut, ProviderError, SpeechStarted, SpeechStopped, TurnDone, Usage
from telephony.bridge import CallSummary
from telephony.call_state import CallOutcome
from telephony.media_stream import Media, media_message
from telephony.observer import AudioSent, ToTwilio
from tests.support.audio import active_segments, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, echo_line_config, running_server
from voicebot.telemetry import metrics as api
from voicebot.telemetry import setup as telemetry_setup
from voicebot.telemetry.observer import SAMPLE_EVERY, CallTelemetry
from voicebot.telemetry.setup import Telemetry, TelemetryConfigError, build_telemetry, get_telemetry

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over every series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= lbls)


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    get_telemetry().tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # the processor stays attached but exports nowhere


def echo_config(route: str, speed: float = 50) -> str:
    return echo_line_config(route, parrot=f"speed = {speed}")


def call_spans(exporter: InMemorySpanExporter, call_sid: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    finished = exporter.get_finished_spans()
    roots = [s for s in finished if s.name == "call" and (s.attributes or {}).get("twilio.call_sid") == call_sid]
    assert len(roots) == 1, [s.name for s in finished]
    root = roots[0]
    assert root.context is not None
    children = [
        s for s in finished if s.parent is not None and s.parent.span_id == root.context.span_id and s is not root
    ]
    return root, children


async def test_a_call_with_barge_in_is_measured_at_the_phone_edge(spans: InMemorySpanExporter) -> None:
    route = "tel-" + secrets.token_hex(4)  # this test's own series in the process-wide metrics
    async with running_server(echo_config(route)) as server:
        async with server.twilio().call() as call:
            await call.pause(200)
            await call.say(to_mulaw(tone(600, 2000)))
            await call.wait_for(lambda: call.received_media_ms() >= 1900, timeout=8)
            during = await scrape(server.url)
            await call.pause(600)
            await call.say(to_mulaw(tone(400, 600)))
            await call.wait_for(lambda: bool(call.clear_times), timeout=3)
            barge = server.runtime.active[call.call_sid].summary.barge_ins[0]
            await call.wait_for(lambda: call.received_media_ms() >= 1900 + 500, timeout=5)
        await call.wait_for(lambda: not server.runtime.active, timeout=5)
        after = await scrape(server.url)

    mine = {"route": route, "provider": "parrot"}
    assert value(during, "voicebot_calls_active", **mine) == 1
    assert value(after, "voicebot_calls_active", **mine) == 0
    assert value(after, "voicebot_calls_total", outcome="caller-hangup", direction="inbound", **mine) == 1
    assert value(after, "voicebot_provider_connect_duration_seconds_count", provider="parrot", outcome="ok") >= 1

    # First audio: the stream clock of the simulated Twilio saw the first bot frame at
    # about the same moment the server measured (both count from the stream start).
    first_media_ms = next(e.t_ms for e in call.log if e.event == "media")
    first_audio_s = value(after, "voicebot_first_audio_latency_seconds_sum", **mine)
    assert value(after, "voicebot_first_audio_latency_seconds_count", **mine) == 1
    assert first_audio_s * 1000 == pytest.approx(first_media_ms, abs=150)

    # Two answers (the 600 Hz tone, then the 400 Hz one), each after the echo line's VAD
    # noticed the pause: SpeechStopped -> first frame is its 150 ms reply delay plus a little.
    turns = value(after, "voicebot_turn_latency_seconds_count", **mine)
    assert turns == 2
    mean_turn = value(after, "voicebot_turn_latency_seconds_sum", **mine) / turns
    assert 0.14 <= mean_turn <= 0.5

    # Barge-in: one, the clear went out within tens of ms; unheard = sent - heard.
    assert value(after, "voicebot_barge_in_latency_seconds_count", **mine) == 1
    assert value(after, "voicebot_barge_in_latency_seconds_sum", **mine) < 0.05
    unheard = value(after, "voicebot_barge_in_unheard_audio_seconds_sum", **mine)
    assert unheard * 1000 == pytest.approx(barge.sent_ms - barge.heard_ms, abs=1)
    heard_segments = [s for s in active_segments(call.heard_pcm(), 8000, -35) if s[0] >= first_media_ms - 20]
    heard_ms = heard_segments[0][1] - heard_segments[0][0]
    assert unheard * 1000 == pytest.approx(2000 - heard_ms, abs=80)  # measured on the audio itself

    # Sampled bridge forwarding: inbound 1 frame in SAMPLE_EVERY (~4 s of 20 ms frames here).
    inbound = value(after, "voicebot_bridge_forward_duration_seconds_count", direction="inbound")
    assert inbound >= 2
    assert value(after, "voicebot_bridge_forward_duration_seconds_count", direction="outbound") >= 2

    # Traces: one call span with its children.
    root, children = call_spans(spans, call.call_sid)
    attrs = dict(root.attributes or {})
    assert attrs["voicebot.route"] == route
    assert attrs["voicebot.direction"] == "inbound"
    assert attrs["voicebot.provider"] == "parrot"
    assert attrs["voicebot.model"] == "default"
    assert attrs["voicebot.outcome"] == "caller-hangup"
    assert attrs["voicebot.barge_ins"] == 1
    opened = next(e for e in root.events if e.name == "session_opened")
    assert dict(opened.attributes or {}) == {"input_format": "mulaw@8000", "output_format": "mulaw@8000"}
    names = [c.name for c in children]
    assert names.count("webhook.admission") == 1
    assert names.count("provider.connect") == 1
    assert names.count("barge_in") == 1
    assert names.count("turn") >= 2
    admission = next(c for c in children if c.name == "webhook.admission")
    assert root.start_time is not None and admission.start_time is not None and admission.end_time is not None
    assert root.start_time <= admission.start_time <= admission.end_time
    barge_span = next(c for c in children if c.name == "barge_in")
    assert (barge_span.attributes or {})["voicebot.heard_ms"] == pytest.approx(barge.heard_ms, abs=1)
    interrupted = [c for c in children if c.name == "turn" and (c.attributes or {}).get("voicebot.turn.interrupted")]
    assert interrupted, "the turn the caller talked over is marked interrupted"


class _Plan(types.SimpleNamespace):
    pass


def fake_plan(route: str, call_sid: str = "CAtest") -> _Plan:
    import time

    provider = types.SimpleNamespace(name="primary", config=types.SimpleNamespace(model="gpt-x"))
    now = time.monotonic()
    return _Plan(
        call_sid=call_sid,
        route=types.SimpleNamespace(name=route, model=None),
        providers=[provider],
        created_at=now,
        received_at=now - 0.01,
        direction="inbound",
    )


@pytest.fixture
def tel() -> Iterator[Telemetry]:
    telemetry = build_telemetry({})
    yield telemetry
    telemetry.shutdown()


def test_observer_hooks_record_errors_turns_and_sampling(tel: Telemetry) -> None:
    exporter = InMemorySpanExporter()
    tel.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = CallTelemetry(fake_plan("r1"), tel)  # type: ignore[arg-type]
    frame = media_message("MZ1", b"\xff" * 160)
    observer.provider_in(SpeechStopped())
    observer.provider_in(AudioOut(b"\x00" * 320, "item1"))
    observer.twilio_out(ToTwilio.MARK, '{"event": "mark"}')  # not audio: no latency sample
    observer.twilio_out(ToTwilio.MEDIA, frame)
    observer.twilio_out(ToTwilio.MEDIA, frame)  # only the first frame after speech ends is the turn's latency
    observer.provider_in(ProviderError("rate_limit_exceeded", "slow down"))
    observer.provider_in(ProviderError("rate_limit_exceeded", "again"))
    observer.provider_in(SpeechStarted())
    observer.barge_in("item1", 300.0, 1000.0, 0.4)
    observer.provider_in(TurnDone("item1", interrupted=True))
    summary = CallSummary("CAtest", "r1", outcome=CallOutcome.PROVIDER_LOST, bad_frames=3)
    observer.call_ended(summary)
    observer.call_ended(summary)  # idempotent

    samples = parse(tel.prometheus_text().decode())
    assert value(samples, "voicebot_errors_total", code="rate_limit_exceeded", provider="primary") == 2
    assert value(samples, "voicebot_errors_total", code="twilio-bad-frame") == 3
    assert value(samples, "voicebot_turn_latency_seconds_count", route="r1") == 1
    assert value(samples, "voicebot_barge_in_unheard_audio_seconds_sum", route="r1") == pytest.approx(0.7)
    assert value(samples, "voicebot_calls_total", route="r1", outcome="provider-lost") == 1
    assert value(samples, "voicebot_calls_active", route="r1") == 0
    root = next(s for s in exporter.get_finished_spans() if s.name == "call")
    assert root.status.status_code.name == "ERROR"
    assert (root.attributes or {})["voicebot.model"] == "gpt-x"
    assert [e.name for e in root.events].count("provider_error") == 2


def test_inbound_forwarding_is_sampled_not_timed_per_frame(tel: Telemetry) -> None:
    observer = CallTelemetry(fake_plan("r2"), tel)  # type: ignore[arg-type]
    frame = Media(b"\xff" * 160, 0, 0, "inbound")
    for _ in range(SAMPLE_EVERY * 4):
        observer.twilio_in("{}", frame)
        observer.provider_out(AudioSent(b"\x00" * 320))
    # Frames held while no session is open (no provider_out): their samples are not timed
    # across the wait when the held audio is finally sent.
    for _ in range(SAMPLE_EVERY * 2):
        observer.twilio_in("{}", frame)
    observer.session_opened(types.SimpleNamespace(input_format="mulaw@8000", output_format="mulaw@8000"))  # type: ignore[arg-type]
    for _ in range(SAMPLE_EVERY * 2):
        observer.provider_out(AudioSent(b"\x00" * 320))
    observer.call_ended(CallSummary("CAtest", "r2", outcome=CallOutcome.CALLER_HANGUP))
    samples = parse(tel.prometheus_text().decode())
    assert value(samples, "voicebot_bridge_forward_duration_seconds_count", direction="inbound") == 4


def test_resilience_api_counts_and_annotates_the_current_span() -> None:
    exporter = InMemorySpanExporter()
    tel = get_telemetry()
    tel.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider = "api-" + secrets.token_hex(3)
    with tel.tracer.start_as_current_span("call"):
        with pytest.raises(TimeoutError), api.provider_connect(provider):
            api.record_retry(provider, "timeout", attempt=1)
            raise TimeoutError
        with api.provider_connect(provider):
            pass
        api.record_fallback(provider, "backup", "connect failed")
        api.record_circuit_open(provider)
        api.record_recovery(provider, "backup", "watchdog", False, 0.25)
        api.record_error("session_expired", provider)
        api.record_webhook_rejected("capacity")
    exporter.shutdown()
    samples = parse(tel.prometheus_text().decode())
    assert value(samples, "voicebot_provider_connect_duration_seconds_count", provider=provider, outcome="timeout") == 1
    assert value(samples, "voicebot_provider_connect_duration_seconds_count", provider=provider, outcome="ok") == 1
    assert value(samples, "voicebot_provider_retries_total", provider=provider, reason="timeout") == 1
    assert value(samples, "voicebot_provider_fallbacks_total", from_provider=provider, to_provider="backup") == 1
    assert value(samples, "voicebot_provider_circuit_opened_total", provider=provider) == 1
    assert value(samples, "voicebot_recoveries_total", provider=provider, reason="watchdog", outcome="failed") == 1
    assert value(samples, "voicebot_recovery_duration_seconds_sum", provider=provider) == pytest.approx(0.25)
    assert value(samples, "voicebot_errors_total", provider=provider, code="session_expired") == 1
    assert value(samples, "voicebot_webhook_rejected_total", reason="capacity") >= 1
    finished = {s.name: s for s in exporter.get_finished_spans()}
    call = finished["call"]
    assert [e.name for e in call.events] == ["fallback", "circuit_open"]
    connects = [s for s in exporter.get_finished_spans() if s.name == "provider.connect"]
    assert [e.name for e in connects[0].events] == ["retry", "exception"]
    assert all(s.parent is not None and call.context and s.parent.span_id == call.context.span_id for s in connects)


def test_otel_environment_variables_choose_exporters() -> None:
    env = {"OTEL_SERVICE_NAME": "voicebot-eu", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=t"}
    named = build_telemetry(env)
    assert named.resource.attributes["service.name"] == "voicebot-eu"
    assert named.resource.attributes["deployment.environment"] == "t"
    assert named.exporters == ("prometheus",)  # no endpoint: nothing exported, no error spam
    assert build_telemetry({}).resource.attributes["service.name"] == "voicebot"

    console = build_telemetry({"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"})
    assert console.exporters == ("prometheus", "console-traces")
    console.shutdown()

    with pytest.raises(TelemetryConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        build_telemetry({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "x"})
    with pytest.raises(TelemetryConfigError, match="OTEL_TRACES_EXPORTER"):
        build_telemetry({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_otlp_without_the_optional_extra_warns_and_keeps_prometheus(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The extra is a dev dependency, so its absence is simulated at the one import that needs it.
    real_import = importlib.import_module

    def no_otlp(name: str, package: str | None = None) -> types.ModuleType:
        if name.startswith("opentelemetry.exporter.otlp"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, package)

    monkeypatch.setattr(telemetry_setup.importlib, "import_module", no_otlp)
    with caplog.at_level(logging.WARNING, logger="voicebot.telemetry.setup"):
        tel = build_telemetry({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tel.exporters == ("prometheus",)
    assert "voicebot[otlp]" in caplog.text


async def test_admission_past_an_open_circuit_is_a_fallback_on_the_call_span(spans: InMemorySpanExporter) -> None:
    route = "fb-" + secrets.token_hex(3)
    config = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.main{route[3:]}]
type = "echo"

[providers.spare{route[3:]}]
type = "echo"

[[routes]]
name = "{route}"
providers = ["main{route[3:]}", "spare{route[3:]}"]
"""
    main, spare = f"main{route[3:]}", f"spare{route[3:]}"
    async with running_server(config) as server:

        async def open_main() -> None:
            for _ in range(server.runtime.circuits[main].failures):
                server.runtime.circuits[main].record_failure()

        await server.run_on_server(open_main())
        async with server.twilio().call() as call:
            await call.say(to_mulaw(tone(500, 300)))
        await call.wait_for(lambda: not server.runtime.active, timeout=5)
        after = await scrape(server.url)
    assert value(after, "voicebot_provider_fallbacks_total", from_provider=main, to_provider=spare) == 1
    assert value(after, "voicebot_calls_total", route=route, provider=spare) == 1
    root, _ = call_spans(spans, call.call_sid)
    attrs = dict(root.attributes or {})
    assert attrs["voicebot.provider"] == spare
    assert attrs["voicebot.provider.served"] == spare
    assert attrs["voicebot.sessions_opened"] == 1
    assert [e.name for e in root.events if e.name == "fallback"] == ["fallback"]


def test_provider_usage_is_summed_over_sessions_on_the_call_span(tel: Telemetry) -> None:
    exporter = InMemorySpanExporter()
    tel.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = CallTelemetry(fake_plan("r1"), tel)  # type: ignore[arg-type]
    observer.provider_in(Usage("live_sess_1", 60.0))
    observer.provider_in(Usage("live_sess_1", 120.0, final=True))  # cumulative: replaces the 60
    observer.provider_in(Usage("live_sess_2", 30.0))  # the renewed session
    observer.call_ended(CallSummary("CAtest", "r1", outcome=CallOutcome.CALLER_HANGUP))
    root = next(s for s in exporter.get_finished_spans() if s.name == "call")
    assert (root.attributes or {})["voicebot.provider_billable_s"] == 150.0
