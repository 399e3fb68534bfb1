"""Fallback, silent retry, mid-call recovery and session renewal — once, above every provider.

The bridge talks to one :class:`ResilientSession`; behind it, real provider sessions come
and go. No provider module knows about any of this: a provider only opens sessions, speaks
the neutral events, reports ``Closed(error=True)`` when its connection dies, emits
``SessionExpiring`` before a limit and may expose ``resume_handle``.

The package is small parts around one asyncio shell (:mod:`.session`); every part but the
shell is pure and tested without an event loop:

- :mod:`.state` — the session's lifecycle as one enum; an illegal move raises.
- :mod:`.connect` — the walk down the route's provider chain (retries within a budget,
  jittered backoff, circuit breakers, admission slots) and the context a reopened session gets.
- :mod:`.turns` — who is speaking (for renewal's gap between turns) and the watchdog.
- :mod:`.kept_audio` — caller audio kept during recovery and replayed afterwards.
- :mod:`.item_ids` — item ids that never collide across the sessions of one call.

Mid-call loss: an inner ``Closed(error=True)``, or the watchdog — the caller spoke (at least
``WATCHDOG_MIN_SPEECH_MS`` of voiced audio) and the session sent nothing at all for
``watchdog_s`` after the end of the caller's first unanswered turn. A provider that is
healthy but hears only noise it rightly ignores looks the same, hence the generous default
(8 s) and the minimum speech; a false alarm costs a silent reconnect with history, not the
call. Then a new session opens: the same provider first (with its ``resume_handle``), then
the rest of the chain, each with the route's instructions and the conversation so far as
``SessionContext.history`` and no greeting. The history is read from the bridge's
transcript (the one copy, ``CallSummary.transcript``), which the bridge hands its session opener
as ``history``: a live list the bridge appends to, read at each reopen. The
caller's stream stays open: they hear a pause, not a drop.

Caller audio during recovery is kept, up to ``buffer_ms`` (default 3 s), and replayed to
the new session in order, transcoded if the new provider takes another format; audio older
than ``buffer_ms`` when the session comes up is dropped. If recovery fails the stream ends
with ``Closed(error=True)``; the bridge ends as ``provider-lost`` and the runtime serves the
route's apology.

Renewal (the rotation policy for Gemini ``goAway``, Nova's stream limit, session caps): on
``SessionExpiring`` the replacement opens *in the background*, at the next gap between
turns, while the old session keeps serving the call. It gets instructions, history and, for
the same provider, the old session's ``resume_handle``. Once it is up and the call is still
between turns with no new turn since it was opened, the swap is one assignment (no audible
gap); the old session is closed in the background within ``close_timeout_s``. If a turn
happened meanwhile the replacement's history is stale: it is discarded and reopened at the
next gap (a provider whose transcript arrives after its ``TurnDone`` therefore costs one
extra open, never a stale history). If the old session dies first, the ordinary recovery
path takes over. During the overlap the call holds one admission slot although two sessions
of the same provider are briefly open: limits count calls, and the overlap lasts one
handshake.
"""

from s2s.resilience.policy import RecoveryPolicy, ResilienceHooks, SessionSlots
from s2s.resilience.session import ResilientSession
from s2s.resilience.state import IllegalSessionMove, SessionState

__all__ = [
    "IllegalSessionMove",
    "RecoveryPolicy",
    "ResilienceHooks",
    "ResilientSession",
    "SessionSlots",
    "SessionState",
]
