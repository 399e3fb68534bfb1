"""Circuit breakers: stop sending calls to a provider that keeps failing to connect.

After ``failures`` consecutive connect failures a provider's circuit *opens*: the webhook
skips it (the next provider of the chain takes the call, or the route's ``on_unavailable``
answers) and so does mid-call recovery, for ``cooldown_s``. Then it is *half-open*: the
next connect attempt is a probe, and only one probe runs at a time; success closes the
circuit, failure opens it for another cool-down. A probe that never reports back (its call
vanished) is forgotten after one cool-down so the provider cannot stay stuck half-open.

Counted per provider name, in process, on the event loop (no locking needed). Breakers
survive config reloads: a provider that was failing before a reload is still failing after.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(slots=True)
class CircuitBreaker:
    name: str
    failures: int = 3
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    state: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probe_started_at: float | None = field(default=None)
    on_open: Callable[[str], None] | None = None  # told the provider's name each time the circuit opens

    def _cooled_down(self, now: float) -> bool:
        return now - self.opened_at >= self.cooldown_s

    def _probe_pending(self, now: float) -> bool:
        return self.probe_started_at is not None and now - self.probe_started_at < self.cooldown_s

    def available(self) -> bool:
        """Could a call use this provider now? Does not take the half-open probe."""
        now = self.clock()
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            return self._cooled_down(now)
        return not self._probe_pending(now)

    def allow_attempt(self) -> bool:
        """Take permission for one connect attempt (the probe, when half-open)."""
        now = self.clock()
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            if not self._cooled_down(now):
                return False
            self.state = CircuitState.HALF_OPEN
            log.info("provider %s: circuit half-open after %.0f s; probing", self.name, self.cooldown_s)
        if self._probe_pending(now):
            return False
        self.probe_started_at = now
        return True

    def record_success(self) -> None:
        if self.state is not CircuitState.CLOSED:
            log.info("provider %s: circuit closed (connect succeeded)", self.name)
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self.probe_started_at = None

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        self.probe_started_at = None
        if self.state is CircuitState.HALF_OPEN or (
            self.state is CircuitState.CLOSED and self.consecutive_failures >= self.failures
        ):
            self.state = CircuitState.OPEN
            self.opened_at = self.clock()
            if self.on_open is not None:
                self.on_open(self.name)
            log.warning(
                "provider %s: circuit open after %d consecutive connect failure(s); skipped for %.0f s",
                self.name,
                self.consecutive_failures,
                self.cooldown_s,
            )


class CircuitBoard:
    """One breaker per provider name; thresholds follow the current config."""

    def __init__(
        self,
        failures: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_open: Callable[[str], None] | None = None,
    ):
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_open = on_open
        self._breakers: dict[str, CircuitBreaker] = {}

    def configure(self, failures: int, cooldown_s: float) -> None:
        self.failures, self.cooldown_s = failures, cooldown_s
        for breaker in self._breakers.values():
            breaker.failures, breaker.cooldown_s = failures, cooldown_s

    def __getitem__(self, provider: str) -> CircuitBreaker:
        breaker = self._breakers.get(provider)
        if breaker is None:
            breaker = self._breakers[provider] = CircuitBreaker(
                provider, self.failures, self.cooldown_s, self.clock, on_open=self.on_open
            )
        return breaker
