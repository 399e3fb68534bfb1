"""Connecting telemetry to a :class:`~voicebot.calls.runtime.Runtime` (``create_app`` calls it)."""

from __future__ import annotations

import weakref

from voicebot.calls.runtime import Runtime
from voicebot.telemetry.metrics import TapeUploads
from voicebot.telemetry.observer import CallTelemetry
from voicebot.telemetry.setup import get_telemetry


def install(runtime: Runtime) -> None:
    """One :class:`CallTelemetry` per call, the per-route active-call gauges published at
    zero (an idle instance must still show ``voicebot_calls_active 0``: the autoscaler and
    dashboards need the series before the first call), the circuit breakers' state and the
    tape upload backlog read at each scrape, and a count of every tape upload."""
    if CallTelemetry not in runtime.observer_factories:
        runtime.observer_factories.append(CallTelemetry)
    instruments = get_telemetry().instruments
    for route in runtime.config.routes:
        for provider in route.providers:
            instruments.calls_active.add(0, {"route": route.name, "provider": provider})
    ref = weakref.ref(runtime)

    def circuits() -> dict[str, bool] | None:
        rt = ref()
        if rt is None:
            return None
        return {name: not rt.circuits[name].available() for name in rt.providers}

    instruments.watch_circuits(circuits)

    uploads = runtime.tape_uploads
    if uploads is not None:
        uploads_ref = weakref.ref(uploads)

        def upload_state() -> TapeUploads | None:
            uploader = uploads_ref()
            if uploader is None or uploader.closed:
                return None
            return uploader.backlog, uploader.counts()

        instruments.watch_tape_uploads(upload_state)
