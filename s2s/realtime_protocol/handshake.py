"""Opening an OpenAI-family WebSocket session (Realtime, Grok, GPT-Live): the handshake loop
over a Sans-I/O protocol object, and one name for each way a connect can fail.

The protocols differ in what they wait for (``session.updated`` after ``session.update``;
``session.started`` after ``session.start``), not in how: send what the protocol queued, stop
when it is ready or refused, otherwise feed it the next frame. A refusal with a credentials or
model error, or an HTTP status that will not change on retry, is not retryable, so the recovery
layer moves straight on to the next provider instead of burning the retry budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from websockets.exceptions import ConnectionClosed, InvalidStatus

from s2s.closing import ABANDON_TIMEOUT_S
from s2s.events import ProviderError, ProviderEvent
from s2s.provider import ProviderConnectError

log = logging.getLogger(__name__)

# Refusals that retrying cannot cure: bad request, bad key, no permission, unknown model/path.
PERMANENT_STATUSES = frozenset({400, 401, 403, 404})
PERMANENT_CODES = frozenset({"invalid_api_key", "model_not_found"})


class HandshakeProtocol(Protocol):
    """What the loop needs of a Sans-I/O session protocol."""

    failure: ProviderError | None

    @property
    def ready(self) -> bool: ...

    def data_to_send(self) -> Sequence[str]: ...

    def receive(self, data: str | bytes) -> None: ...

    def events_received(self) -> list[ProviderEvent]: ...


async def run_handshake(
    provider: str,
    protocol: HandshakeProtocol,
    send: Callable[[str], Awaitable[None]],
    recv: Callable[[], Awaitable[str | bytes]],
    request: str,
) -> None:
    """Drive ``protocol`` until it is ready; raise :class:`ProviderConnectError` if the provider
    refuses ``request`` (the event that opens the session, named in the error)."""
    while True:
        for frame in protocol.data_to_send():
            await send(frame)
        if protocol.ready:
            return
        if protocol.failure is not None:
            raise ProviderConnectError(
                provider,
                f"{request} rejected: {protocol.failure.code}: {protocol.failure.message}",
                retryable=protocol.failure.code not in PERMANENT_CODES,
            )
        protocol.receive(await recv())
        protocol.events_received()  # nothing before the session is ready concerns the bridge


def connect_error(provider: str, call_sid: str, exc: Exception, timeout_s: float, awaited: str) -> ProviderConnectError:
    """Name what failed for which call (``awaited``: the event a ready session sends); the
    recovery layer decides what to do next."""
    if isinstance(exc, ProviderConnectError):
        error = exc
    elif isinstance(exc, TimeoutError):
        error = ProviderConnectError(provider, f"no {awaited} within {timeout_s:g}s")
    elif isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        error = ProviderConnectError(
            provider, f"handshake refused: HTTP {status}", retryable=status not in PERMANENT_STATUSES
        )
    elif isinstance(exc, ConnectionClosed):
        error = ProviderConnectError(provider, f"connection closed before {awaited}: {exc}")
    else:
        error = ProviderConnectError(provider, f"connect failed: {type(exc).__name__}: {exc}")
    log.warning("call %s: %s", call_sid, error)
    return error


async def close_quietly(close: Callable[[], Awaitable[None]], timeout_s: float = ABANDON_TIMEOUT_S) -> None:
    """Close a connection whose handshake failed; its own failure to close is of no interest."""
    try:
        await asyncio.wait_for(close(), timeout=timeout_s)
    except Exception as exc:
        log.debug("closing a failed connection: %r", exc)
