"""A call's lifecycle as the bridge sees it, as an explicit state machine (h11-style:
illegal moves raise). The machine also decides how the call ends: the first
:meth:`CallStateMachine.end` fixes the :class:`CallOutcome` and moves the call to
``closing``; later ones (the caller's hang-up racing our own) change nothing.

There is no "recovering" state here on purpose: recovery and renewal happen below the
bridge, inside ``s2s.resilience.ResilientSession``, which keeps presenting one session;
the call stays ``streaming`` (the caller hears a pause) while a new provider session opens."""

from __future__ import annotations

import enum
from typing import Literal

from s2s.errors import VoicebotError

# Who placed the call: the caller (inbound), or we did through the REST API (outbound). A
# label on the end-of-call metric, a span attribute, a tape header field, a log word.
Direction = Literal["inbound", "outbound"]


class CallOutcome(enum.StrEnum):
    """How a call ended (a metric label, a tape field, a log word; ``IN_PROGRESS`` until then)."""

    IN_PROGRESS = "in-progress"
    CALLER_HANGUP = "caller-hangup"
    BOT_HANGUP = "bot-hangup"  # the model's end_call tool
    TRANSFERRED = "transferred"
    MAX_DURATION = "max-duration"  # the route's max_call_seconds
    CALLER_SILENT = "caller-silent"  # the route's silence prompts went unanswered
    MAX_COST = "max-cost"  # the route's max_cost_usd
    SERVER_SHUTDOWN = "server-shutdown"  # drained past its deadline
    PROVIDER_UNAVAILABLE = "provider-unavailable"  # no provider session could be opened
    PROVIDER_LOST = "provider-lost"  # the session failed mid-call and could not be recovered
    PROVIDER_CLOSED = "provider-closed"  # the provider ended the session cleanly
    PROTOCOL_ERROR = "protocol-error"  # Twilio's side sent too many bad frames
    CALL_CONTROL_FAILED = "call-control-failed"

    @property
    def failed(self) -> bool:
        """Ended by a fault rather than by someone hanging up (a span error, an apology)."""
        return self in _FAILED


_FAILED = frozenset(
    {
        CallOutcome.PROVIDER_UNAVAILABLE,
        CallOutcome.PROVIDER_LOST,
        CallOutcome.PROTOCOL_ERROR,
        CallOutcome.CALL_CONTROL_FAILED,
    }
)


class CallState(enum.Enum):
    CONNECTING = "connecting"  # media stream up, provider session opening
    STREAMING = "streaming"  # audio flowing both ways
    INTERRUPTED = "interrupted"  # caller barged in; stale bot audio is being dropped
    CLOSING = "closing"  # the outcome is decided; the bridge is tearing down
    CLOSED = "closed"


_ALLOWED: dict[CallState, frozenset[CallState]] = {
    CallState.CONNECTING: frozenset({CallState.STREAMING, CallState.CLOSING}),
    CallState.STREAMING: frozenset({CallState.INTERRUPTED, CallState.CLOSING}),
    CallState.INTERRUPTED: frozenset({CallState.STREAMING, CallState.CLOSING}),
    CallState.CLOSING: frozenset({CallState.CLOSED}),
    CallState.CLOSED: frozenset(),
}


class IllegalTransition(VoicebotError, RuntimeError):
    def __init__(self, call_sid: str, current: CallState, wanted: CallState) -> None:
        super().__init__(f"call {call_sid}: cannot go from {current.value} to {wanted.value}")
        self.current = current
        self.wanted = wanted


class CallStateMachine:
    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self.state = CallState.CONNECTING
        self.outcome = CallOutcome.IN_PROGRESS

    @property
    def ended(self) -> bool:
        return self.outcome is not CallOutcome.IN_PROGRESS

    def end(self, outcome: CallOutcome) -> bool:
        """Decide that the call ends with ``outcome``; True if this call decided it, False if
        an earlier one already had (the outcome stays the first one)."""
        if outcome is CallOutcome.IN_PROGRESS:
            raise ValueError("a call cannot end 'in progress'")
        if self.ended:
            return False
        self.outcome = outcome
        if self.state is not CallState.CLOSED:
            self.to(CallState.CLOSING)
        return True

    def to(self, wanted: CallState) -> None:
        if wanted is self.state:
            return
        if wanted not in _ALLOWED[self.state]:
            raise IllegalTransition(self.call_sid, self.state, wanted)
        self.state = wanted

    def close(self) -> None:
        """Move to CLOSED from wherever the call is (teardown); closing is always allowed."""
        if self.state is not CallState.CLOSED:
            if self.state is not CallState.CLOSING:
                self.state = CallState.CLOSING
            self.state = CallState.CLOSED
