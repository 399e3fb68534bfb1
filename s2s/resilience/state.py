"""The recovery layer's own lifecycle, one explicit state (h11-style: an illegal move raises).

``LIVE`` serves the call from one provider session. ``EXPIRING``: that session announced its
end (``SessionExpiring``) and a replacement is wanted at the next gap between turns;
``RENEWING``: the replacement is opening (or open, waiting for a gap). ``RECOVERING``: the
session was lost (or the watchdog gave up on it) and a new one is being opened while caller
audio is kept aside. ``CLOSING``/``CLOSED``: the call is over, on our initiative or because
no provider could be reached. The bridge above never sees any of this: it keeps one session.
"""

from __future__ import annotations

import enum

from s2s.errors import VoicebotError


class SessionState(enum.Enum):
    OPENING = "opening"
    LIVE = "live"
    EXPIRING = "expiring"
    RENEWING = "renewing"
    RECOVERING = "recovering"
    CLOSING = "closing"
    CLOSED = "closed"


_ENDS = frozenset({SessionState.CLOSING, SessionState.CLOSED})
_ALLOWED: dict[SessionState, frozenset[SessionState]] = {
    SessionState.OPENING: frozenset({SessionState.LIVE, *_ENDS}),
    SessionState.LIVE: frozenset({SessionState.EXPIRING, SessionState.RECOVERING, *_ENDS}),
    SessionState.EXPIRING: frozenset({SessionState.RENEWING, SessionState.RECOVERING, *_ENDS}),
    # A renewal that fails or turns stale goes back to waiting for a gap.
    SessionState.RENEWING: frozenset({SessionState.LIVE, SessionState.EXPIRING, SessionState.RECOVERING, *_ENDS}),
    SessionState.RECOVERING: frozenset({SessionState.LIVE, *_ENDS}),
    SessionState.CLOSING: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


class IllegalSessionMove(VoicebotError, RuntimeError):
    """A move the recovery layer's lifecycle does not allow; names the call and both states."""

    def __init__(self, call_sid: str, current: SessionState, wanted: SessionState) -> None:
        super().__init__(f"call {call_sid}: provider session cannot go from {current.value} to {wanted.value}")
        self.current = current
        self.wanted = wanted


class SessionStateMachine:
    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self.state = SessionState.OPENING

    @property
    def ending(self) -> bool:
        return self.state in _ENDS

    def to(self, wanted: SessionState) -> None:
        if wanted is self.state:
            return
        if wanted not in _ALLOWED[self.state]:
            raise IllegalSessionMove(self.call_sid, self.state, wanted)
        self.state = wanted
