"""Metrics, traces and the Prometheus endpoint (OpenTelemetry SDK; see ``setup``).

``metrics`` holds the instruments and the reporting API other layers call; ``observer``
turns the bridge's hooks into a call's spans and phone-edge measurements."""

from voicebot.telemetry.setup import Telemetry, get_telemetry, setup_telemetry

__all__ = ["Telemetry", "get_telemetry", "setup_telemetry"]
