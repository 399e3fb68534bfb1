"""How long closing a provider session may take: one bound, nested by layer.

A session's transport (a WebSocket close handshake, an SDK stream's end) gets
:data:`CLOSE_TIMEOUT_S`; the recovery layer closes the sessions it holds concurrently,
each within that bound; the bridge, which closes the whole stack a call holds, waits
:data:`CALL_CLOSE_TIMEOUT_S`, a little longer, so the inner bound fires (and says which
session hung) before the outer one. A connection whose opening failed has nothing to flush
and nobody waiting on it: it is dropped within :data:`ABANDON_TIMEOUT_S`."""

from __future__ import annotations

CLOSE_TIMEOUT_S = 2.0
CALL_CLOSE_TIMEOUT_S = CLOSE_TIMEOUT_S + 1.0
ABANDON_TIMEOUT_S = 1.0
