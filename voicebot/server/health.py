"""Liveness and readiness, as load balancers and Kubernetes probe them.

``/healthz`` answers while the process can serve HTTP at all (liveness: restart me if not).
``/readyz`` answers 200 only when a new call would be served: config loaded, not draining
for shutdown, and every route has at least one provider whose circuit breaker lets calls
through (``runtime.circuits``, an :class:`s2s.circuit.CircuitBoard`, when the resilience
layer installed one; without it, no provider counts as circuit-open). Readiness failing
takes the pod out of the Service, so new calls go to instances that can take them, while
calls in progress continue."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voicebot.calls.runtime import Runtime


@dataclass(slots=True)
class Readiness:
    reasons: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.reasons


def readiness(runtime: Runtime) -> Readiness:
    result = Readiness()
    config = getattr(runtime, "config", None)
    if config is None or not config.routes:
        result.reasons.append("no configuration loaded")
        return result
    if runtime.draining:
        result.reasons.append("draining for shutdown")
    circuits: Any = getattr(runtime, "circuits", None)
    if circuits is not None:
        for route in config.routes:
            if not any(circuits[name].available() for name in route.providers):
                result.reasons.append(f"route {route.name!r}: every provider's circuit is open")
    return result
