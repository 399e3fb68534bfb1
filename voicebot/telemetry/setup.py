"""OpenTelemetry for the whole process, configured from the standard ``OTEL_*`` variables.

Metrics always feed the built-in Prometheus endpoint (``GET /metrics``), so a single
instance is observable with nothing else deployed. OTLP export of traces and metrics is
added when asked for, through the standard variables:

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the ``_TRACES_``/``_METRICS_`` variants) set: spans
  and metrics go to that collector. ``OTEL_TRACES_EXPORTER``/``OTEL_METRICS_EXPORTER``
  (``otlp``, ``console``, ``none``) override the choice; unlike the spec's default of
  ``otlp`` we export nothing when no endpoint is set, rather than retry a collector on
  localhost that is not there and log errors every few seconds.
- ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf`` (default, the spec's) or ``grpc``.
- ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``(``_ARG``),
  ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_BSP_*``: read by the SDK itself.

The OTLP exporters are the optional extra ``voicebot[otlp]`` and are imported only when
used; without them the server logs one warning and keeps serving ``/metrics``.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import exposition as prometheus_exposition

from s2s.errors import VoicebotError
from voicebot.telemetry.metrics import Instruments

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "voicebot"
# The classic text format (0.0.4): every Prometheus 2.x/3.x and agent scrapes it; metric
# names here are plain [a-z_] so nothing needs the 1.0.0 format's escaping.
PROMETHEUS_CONTENT_TYPE: str = prometheus_exposition.CONTENT_TYPE_PLAIN_0_0_4

# signal -> (module for http/protobuf, module for grpc, class name)
_OTLP: dict[str, tuple[str, str, str]] = {
    "traces": (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "OTLPSpanExporter",
    ),
    "metrics": (
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "OTLPMetricExporter",
    ),
}


class TelemetryConfigError(VoicebotError, ValueError):
    pass


@dataclass(slots=True)
class Telemetry:
    resource: Resource
    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    registry: CollectorRegistry
    instruments: Instruments
    exporters: tuple[str, ...]

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer("voicebot")

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        """Flush spans and metrics still buffered for a collector (on process exit)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _exporter_names(signal: str, env: Mapping[str, str]) -> list[str]:
    explicit = env.get(f"OTEL_{signal.upper()}_EXPORTER")
    if explicit:
        names = [n.strip().lower() for n in explicit.split(",") if n.strip()]
    else:
        endpoint = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        names = ["otlp"] if endpoint else []
    # "prometheus" is always on for metrics (the /metrics endpoint); naming it is harmless.
    return [n for n in names if n not in ("none", "prometheus")]


def _otlp_exporter(signal: str, env: Mapping[str, str]) -> Any | None:
    protocol = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    ) or "http/protobuf"
    http_module, grpc_module, cls = _OTLP[signal]
    if protocol == "grpc":
        module_name = grpc_module
    elif protocol == "http/protobuf":
        module_name = http_module
    else:
        raise TelemetryConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use 'http/protobuf' or 'grpc'")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        log.warning(
            "OTLP %s export requested but %s is not installed (pip install 'voicebot[otlp]'); "
            "%s are not exported, /metrics still works",
            signal,
            module_name,
            signal,
        )
        return None
    # The exporter reads OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout, TLS) itself.
    return getattr(module, cls)()


def _span_exporters(env: Mapping[str, str]) -> list[tuple[str, SpanExporter]]:
    exporters: list[tuple[str, SpanExporter]] = []
    for name in _exporter_names("traces", env):
        if name == "console":
            exporters.append(("console-traces", ConsoleSpanExporter()))
        elif name == "otlp":
            exporter = _otlp_exporter("traces", env)
            if exporter is not None:
                exporters.append(("otlp-traces", exporter))
        else:
            raise TelemetryConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console, none)")
    return exporters


def _metric_readers(env: Mapping[str, str]) -> list[tuple[str, MetricReader]]:
    readers: list[tuple[str, MetricReader]] = []
    for name in _exporter_names("metrics", env):
        if name == "console":
            readers.append(("console-metrics", PeriodicExportingMetricReader(ConsoleMetricExporter())))
        elif name == "otlp":
            exporter = _otlp_exporter("metrics", env)
            if exporter is not None:
                readers.append(("otlp-metrics", PeriodicExportingMetricReader(exporter)))
        else:
            raise TelemetryConfigError(
                f"OTEL_METRICS_EXPORTER: unknown exporter {name!r} (otlp, prometheus, console, none)"
            )
    return readers


def _resource_attributes(env: Mapping[str, str]) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``k=v,k=v``, values percent-encoded) and
    ``OTEL_SERVICE_NAME`` (which wins), read from ``env`` rather than only ``os.environ``
    so what is configured is what is tested; service.name defaults to ``voicebot``."""
    attributes: dict[str, str] = {SERVICE_NAME: DEFAULT_SERVICE_NAME}
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, val = pair.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(val.strip())
    if env.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = env["OTEL_SERVICE_NAME"]
    return attributes


def build_telemetry(env: Mapping[str, str] | None = None) -> Telemetry:
    """A fresh, independent telemetry stack (tests use this; the server uses
    :func:`setup_telemetry`, which builds one per process)."""
    env = os.environ if env is None else env
    resource = Resource.create(_resource_attributes(env))
    registry = CollectorRegistry(auto_describe=True)
    readers = _metric_readers(env)
    prometheus = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
    meter_provider = MeterProvider(resource=resource, metric_readers=[prometheus, *(r for _, r in readers)])
    tracer_provider = TracerProvider(resource=resource)
    spans = _span_exporters(env)
    for _, exporter in spans:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    instruments = Instruments(meter_provider.get_meter("voicebot"))
    names = ("prometheus", *(n for n, _ in readers), *(n for n, _ in spans))
    return Telemetry(resource, meter_provider, tracer_provider, registry, instruments, names)


_lock = threading.Lock()
_current: Telemetry | None = None


def setup_telemetry(env: Mapping[str, str] | None = None) -> Telemetry:
    """The process's telemetry, built on first call (later calls return the same one).
    Also installed as the OpenTelemetry global providers, so libraries that instrument
    themselves through the API report into the same pipeline."""
    global _current
    with _lock:
        if _current is None:
            _current = build_telemetry(env)
            trace.set_tracer_provider(_current.tracer_provider)
            otel_metrics.set_meter_provider(_current.meter_provider)
            log.info("telemetry: exporting via %s", ", ".join(_current.exporters))
        return _current


def get_telemetry() -> Telemetry:
    return _current if _current is not None else setup_telemetry()
