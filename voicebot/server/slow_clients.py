"""Deadlines for clients that have not yet sent a whole request (slowloris).

uvicorn bounds a connection's idle time between requests (``timeout_keep_alive``) but not
the time a client takes to send one: a client that trickles a header byte every few
seconds holds a connection, a task and a file descriptor for as long as it likes, and a
few hundred of them exhaust the process's descriptors so that Twilio's next webhook
cannot connect. Nothing of such a connection is signed yet (Twilio's signature is checked
once the request is complete), so anyone can open them.

:func:`guarded_h11` returns uvicorn's h11 protocol with three bounds, from ``[server]``:

- ``header_timeout_s``: a request's headers must be complete this long after the
  connection opened (or the previous response was sent);
- ``body_timeout_s``: its body must be complete this long after its headers;
- ``max_unauthenticated_connections``: at most this many connections may be waiting for
  a complete request at once; a new one beyond it closes the oldest such connection
  (a real client, Twilio, sends its request within milliseconds of connecting, so the
  oldest waiting connection is the one most likely to be an attacker's).

A connection that upgrades to a WebSocket leaves these bounds at the upgrade (its
signature was checked; the media endpoint then waits at most ``START_TIMEOUT_S`` for
``start``). Closures are logged as one summary line per ``LOG_EVERY_S``, not one per
connection. Behind a reverse proxy, the proxy should hold these deadlines itself (see the
README's security section); these still bound what reaches the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class SlowClientLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_unauthenticated: int


class _Closures:
    """Connections closed for being slow, logged as a summary: the first at once, then at
    most one line per LOG_EVERY_S for all closed meanwhile."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.logged_at = float("-inf")
        self._flush: asyncio.TimerHandle | None = None

    def note(self, why: str, loop: asyncio.AbstractEventLoop) -> None:
        self.counts[why] += 1
        if self._flush is None:
            delay = max(0.0, self.logged_at + LOG_EVERY_S - time.monotonic())
            self._flush = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        self._flush = None
        self.logged_at = time.monotonic()
        summary = ", ".join(f"{n} {why}" for why, n in sorted(self.counts.items()))
        self.counts.clear()
        log.warning("closed slow HTTP connection(s) before a complete request (slowloris?): %s", summary)


def guarded_h11(limits: SlowClientLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with ``limits`` (pass as ``uvicorn.Config(http=...)``)."""
    # Connections of one server (keyed by uvicorn's per-server state) waiting for a complete
    # request, oldest first (dicts keep insertion order).
    waiting: weakref.WeakKeyDictionary[Any, dict[GuardedH11Protocol, None]] = weakref.WeakKeyDictionary()
    closures = _Closures()

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _phase = "headers"

        def _waiting(self) -> dict[GuardedH11Protocol, None]:
            return waiting.setdefault(self.server_state, {})

        def _arm(self, phase: str, timeout_s: float) -> None:
            self._disarm()
            self._phase = phase
            self._waiting()[self] = None
            self._deadline = self.loop.call_later(timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._waiting().pop(self, None)

        def _too_slow(self, why: str | None = None) -> None:
            self._deadline = None
            self._waiting().pop(self, None)
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return
            closures.note(why or f"too slow to send the request {self._phase}", self.loop)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            queue = self._waiting()
            while len(queue) >= limits.max_unauthenticated:
                oldest = next(iter(queue))
                oldest._disarm()
                oldest._too_slow("evicted (too many connections without a complete request)")
            self._arm("headers", limits.header_timeout_s)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.get_protocol() is not self:  # upgraded to a WebSocket
                self._disarm()
                return
            state = self.conn.their_state
            if state is h11.SEND_BODY and self._phase == "headers":
                self._arm("body", limits.body_timeout_s)
            elif state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED) and self._deadline is not None:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm("headers", limits.header_timeout_s)  # the next request on this connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol
