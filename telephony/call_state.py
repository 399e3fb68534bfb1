"""A call's lifecycle as the bridge sees it, as an explicit state machine (h11-style:
illegal moves raise).

There is no "recovering" state here on purpose: recovery and renewal happen below the
bridge, inside ``s2s.resilience.ResilientSession``, which keeps presenting one session;
the call stays ``streaming`` (the caller hears a pause) while a new provider session opens."""

from __future__ import annotations

import enum


class CallState(enum.Enum):
    CONNECTING = "connecting"  # media stream up, provider session opening
    STREAMING = "streaming"  # audio flowing both ways
    INTERRUPTED = "interrupted"  # caller barged in; stale bot audio is being dropped
    CLOSING = "closing"
    CLOSED = "closed"


_ALLOWED: dict[CallState, frozenset[CallState]] = {
    CallState.CONNECTING: frozenset({CallState.STREAMING, CallState.CLOSING}),
    CallState.STREAMING: frozenset({CallState.INTERRUPTED, CallState.CLOSING}),
    CallState.INTERRUPTED: frozenset({CallState.STREAMING, CallState.CLOSING}),
    CallState.CLOSING: frozenset({CallState.CLOSED}),
    CallState.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    def __init__(self, call_sid: str, current: CallState, wanted: CallState) -> None:
        super().__init__(f"call {call_sid}: cannot go from {current.value} to {wanted.value}")
        self.current = current
        self.wanted = wanted


class CallStateMachine:
    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self.state = CallState.CONNECTING

    def to(self, wanted: CallState) -> None:
        if wanted is self.state:
            return
        if wanted not in _ALLOWED[self.state]:
            raise IllegalTransition(self.call_sid, self.state, wanted)
        self.state = wanted

    def close(self) -> None:
        """Move towards CLOSED from wherever the call is; closing is always allowed."""
        if self.state is not CallState.CLOSED:
            if self.state is not CallState.CLOSING:
                self.state = CallState.CLOSING
            self.state = CallState.CLOSED
