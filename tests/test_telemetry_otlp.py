"""OTLP export, end to end: spans and metrics of a real call reach a loopback collector
over OTLP/HTTP (protobuf), decoded with the OTLP protobuf definitions."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from telephony.bridge import CallSummary
from telephony.call_state import CallOutcome
from tests.test_telemetry import fake_plan
from voicebot.telemetry.observer import CallTelemetry
from voicebot.telemetry.setup import build_telemetry


class Collector:
    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []  # (path, content type, body)
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.received.append((self.path, self.headers["Content-Type"], body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str) -> list[bytes]:
        return [body for p, ctype, body in self.received if p == path and ctype == "application/x-protobuf"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    c = Collector()
    # The OTLP exporters read their endpoint from the process environment themselves.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", c.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    yield c
    c.close()


def test_spans_and_metrics_reach_an_otlp_http_collector(collector: Collector) -> None:
    tel = build_telemetry({**os.environ, "OTEL_SERVICE_NAME": "voicebot-otlp-test"})
    assert tel.exporters == ("prometheus", "otlp-metrics", "otlp-traces")
    observer = CallTelemetry(fake_plan("otlp-route", call_sid="CAotlp"), tel)  # type: ignore[arg-type]
    observer.call_ended(CallSummary("CAotlp", "otlp-route", outcome=CallOutcome.CALLER_HANGUP))
    assert tel.tracer_provider.force_flush(5000)
    assert tel.meter_provider.force_flush(5000)
    tel.shutdown()

    spans = [
        (span, resource)
        for body in collector.bodies("/v1/traces")
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    call = next(span for span, _ in spans if span.name == "call")
    attributes = {a.key: a.value.string_value for a in call.attributes}
    assert attributes["twilio.call_sid"] == "CAotlp"
    assert attributes["voicebot.outcome"] == "caller-hangup"
    service = {a.key: a.value.string_value for a in spans[0][1].resource.attributes}["service.name"]
    assert service == "voicebot-otlp-test"
    assert {span.name for span, _ in spans} >= {"call", "webhook.admission"}

    metric_names = {
        metric.name
        for body in collector.bodies("/v1/metrics")
        for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {"voicebot.calls", "voicebot.calls.active"} <= metric_names
