"""What the recovery layer is told (policy), asks (session slots) and reports (hooks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from s2s.closing import CLOSE_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    budget_s: float = 1.5
    attempts: int = 3
    backoff_s: float = 0.1
    watchdog_s: float = 8.0
    buffer_ms: int = 3000
    close_timeout_s: float = CLOSE_TIMEOUT_S


class SessionSlots(Protocol):
    """Admission control as the recovery layer sees it (``voicebot.calls.admission.SlotLease``)."""

    async def move_to(self, provider: str) -> bool:
        """Hold this call's slot on ``provider``; False when it has no room."""


def _ignore(*args: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ResilienceHooks:
    """Where this layer reports what it did, as it happens (voicebot.telemetry wires its
    metrics and span events here; the defaults report nothing). ``retry(provider, kind,
    attempt)``: an attempt failed and will be retried (kind: timeout, refused, error);
    ``fallback(from_provider, to_provider, why)``: a session opened further down the chain
    (why: connect, recovery); ``recovered(lost_provider, new_provider, kind, ok,
    duration_s)``: a mid-call recovery finished (kind: session-lost, watchdog, expired)."""

    retry: Callable[[str, str, int], None] = _ignore
    fallback: Callable[[str, str, str], None] = _ignore
    recovered: Callable[[str, str | None, str, bool, float], None] = _ignore


NO_HOOKS = ResilienceHooks()
