"""The connect walk: down a route's provider chain, with retries and circuit breakers.

Each provider gets up to ``attempts`` tries with jittered exponential backoff, all within
``budget_s`` (the route's ``retry_budget_s``): an attempt's timeout is the provider's
``connect_timeout_s`` cut to what is left of the budget, so a refused or dead port moves on
in a few hundred ms and a provider that accepts TCP but never finishes its handshake costs
at most the budget. The last provider of the chain is the exception: with nothing to fall
back to, its attempts get the full ``connect_timeout_s``. Providers whose circuit is open
(:mod:`s2s.circuit`) or that have no free slot (``SessionSlots``) are skipped.

:class:`AttemptBudget` holds those decisions and is pure; :class:`ChainWalk` runs them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from s2s.circuit import CircuitBoard
from s2s.provider import Provider, ProviderConnectError, ProviderSession, SessionContext, Turn
from s2s.resilience.policy import RecoveryPolicy, ResilienceHooks, SessionSlots

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AttemptBudget:
    """One provider's attempts within the route's budget."""

    policy: RecoveryPolicy
    connect_timeout_s: float
    last_in_chain: bool
    deadline: float

    @classmethod
    def starting(
        cls, policy: RecoveryPolicy, connect_timeout_s: float, last_in_chain: bool, now: float
    ) -> AttemptBudget:
        return cls(policy, connect_timeout_s, last_in_chain, now + policy.budget_s)

    def timeout(self, now: float) -> float:
        """The next attempt's timeout; <= 0 when the budget is spent."""
        return self.connect_timeout_s if self.last_in_chain else min(self.connect_timeout_s, self.deadline - now)

    def retry_delay(self, attempt: int, retryable: bool, now: float, jitter: float) -> tuple[float, bool]:
        """The backoff after failed ``attempt`` (1-based; ``jitter`` in [0, 1)) and whether to retry."""
        delay = self.policy.backoff_s * 2 ** (attempt - 1) * (0.5 + 0.5 * jitter)
        return delay, retryable and attempt < self.policy.attempts and now + delay < self.deadline


def reopen_context(ctx: SessionContext, history: Sequence[Turn], resume_handle: str | None) -> SessionContext:
    """A later session's context: the route's instructions, the conversation so far, no
    greeting, and the previous session's resume handle when it is the same provider's."""
    return dataclasses.replace(ctx, greeting=None, history=tuple(history), resume_handle=resume_handle)


@dataclass(slots=True)
class ChainWalk:
    """Opens sessions for one call; ``opened`` lists every (provider, context) that opened."""

    call_sid: str
    policy: RecoveryPolicy
    circuits: CircuitBoard
    slots: SessionSlots | None
    attempt_context: Callable[[str], AbstractContextManager[Any]]
    hooks: ResilienceHooks
    rng: Callable[[], float]
    clock: Callable[[], float]
    opened: list[tuple[str, SessionContext]] = dataclasses.field(default_factory=list)

    async def open(
        self, order: Sequence[Provider], context_for: Callable[[Provider], SessionContext], why: str
    ) -> tuple[Provider, ProviderSession]:
        """The first provider of ``order`` that opens; raises :class:`ProviderConnectError`."""
        problems: list[str] = []
        for index, provider in enumerate(order):
            if not self.circuits[provider.name].available():
                problems.append(f"{provider.name}: circuit open")
                continue
            if self.slots is not None and not await self.slots.move_to(provider.name):
                problems.append(f"{provider.name}: no free session slot")
                continue
            session = await self._attempts(provider, index == len(order) - 1, context_for, problems)
            if session is not None:
                if index > 0:
                    self.hooks.fallback(order[0].name, provider.name, why)
                return provider, session
        raise ProviderConnectError(
            "/".join(p.name for p in order), "no provider could be opened: " + "; ".join(problems), retryable=False
        )

    async def _attempts(
        self,
        provider: Provider,
        last: bool,
        context_for: Callable[[Provider], SessionContext],
        problems: list[str],
    ) -> ProviderSession | None:
        breaker = self.circuits[provider.name]
        budget = AttemptBudget.starting(self.policy, provider.config.connect_timeout_s, last, self.clock())
        for attempt in range(1, self.policy.attempts + 1):
            timeout = budget.timeout(self.clock())
            if timeout <= 0 or not breaker.allow_attempt():
                break
            ctx = context_for(provider)
            try:
                with self.attempt_context(provider.name):
                    session = await asyncio.wait_for(provider.open_session(ctx), timeout)
            except TimeoutError:
                problem, retryable, kind = f"connect timed out after {timeout:.2f} s", True, "timeout"
            except ProviderConnectError as exc:
                problem, retryable, kind = str(exc), exc.retryable, "refused"
            except Exception as exc:  # an SDK error type we do not know: treat as a failed connect
                problem, retryable, kind = f"{type(exc).__name__}: {exc}", True, "error"
            else:
                breaker.record_success()
                self.opened.append((provider.name, ctx))
                return session
            breaker.record_failure()
            problems.append(f"{provider.name} attempt {attempt}: {problem}")
            delay, retry = budget.retry_delay(attempt, retryable, self.clock(), self.rng())
            log.warning(
                "call %s: %s connect attempt %d failed (%s); %s",
                self.call_sid,
                provider.name,
                attempt,
                problem,
                f"retrying in {delay * 1000:.0f} ms" if retry else "moving on",
            )
            if not retry:
                break
            self.hooks.retry(provider.name, kind, attempt)
            await asyncio.sleep(delay)
        return None
