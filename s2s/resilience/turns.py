"""Who is speaking, and whether the provider has answered: the two questions behind renewal
(wait for a gap between turns) and the watchdog (give up on a session that ignores the
caller). Pure: every method takes the time, so tests drive them with plain numbers."""

from __future__ import annotations

from dataclasses import dataclass

from s2s.events import AudioOut, ProviderEvent, SpeechStarted, SpeechStopped, TurnDone
from transcoding.formats import AudioFormat
from transcoding.levels import level_dbfs

# Caller audio above this level counts as speech for the watchdog and the renewal gap.
VOICED_DBFS = -40.0
# The watchdog arms only after this much voiced caller audio with no event in return: a
# cough or a click that a provider's VAD rightly ignores must not count as a lost session.
WATCHDOG_MIN_SPEECH_MS = 400.0
# The caller is "not speaking" once no voiced audio has been sent for this long; a pause this
# long also ends a caller turn for the watchdog.
QUIET_S = 0.4


def is_voiced(audio: bytes, fmt: AudioFormat) -> bool:
    return bool(audio) and level_dbfs(audio, fmt) > VOICED_DBFS


@dataclass(slots=True)
class TurnTracker:
    """Whether the call is between turns: bot not speaking (no ``AudioOut`` since the last
    ``TurnDone``), caller not speaking (no ``SpeechStarted`` without ``SpeechStopped``, no
    voiced caller audio in the last ``QUIET_S``)."""

    bot_speaking: bool = False
    caller_speaking: bool = False
    last_voiced_at: float = float("-inf")

    def provider_event(self, event: ProviderEvent) -> None:
        if isinstance(event, AudioOut):
            self.bot_speaking = True
        elif isinstance(event, TurnDone):
            self.bot_speaking = False
        elif isinstance(event, SpeechStarted):
            self.caller_speaking = True
        elif isinstance(event, SpeechStopped):
            self.caller_speaking = False

    def caller_voiced(self, now: float) -> None:
        self.last_voiced_at = now

    def new_session(self) -> None:
        """A fresh session knows nothing of a turn in progress on the old one."""
        self.bot_speaking = self.caller_speaking = False

    def between_turns(self, now: float) -> bool:
        return not self.bot_speaking and not self.caller_speaking and now - self.last_voiced_at >= QUIET_S


@dataclass(slots=True)
class Watchdog:
    """Fires when the session sent nothing at all for ``timeout_s`` after the caller's first
    unanswered turn.

    It arms once ``WATCHDOG_MIN_SPEECH_MS`` of voiced caller audio went unanswered (any
    provider event answers). It measures from the *end* of that turn, because some providers
    are silent during a long utterance; and from the *first* unanswered turn, so a caller who
    keeps saying "hello?" into a mute session does not push the deadline back with each try.
    A turn ends at a pause of ``QUIET_S``."""

    timeout_s: float
    last_event_at: float = 0.0
    unanswered_ms: float = 0.0
    last_voiced_at: float = float("-inf")
    first_turn_end: float | None = None

    def answered(self, now: float) -> None:
        """The session sent something (or a new one just opened): start over."""
        self.last_event_at = now
        self.unanswered_ms = 0.0
        self.first_turn_end = None

    def caller_voiced(self, now: float, duration_ms: float) -> None:
        if (
            self.first_turn_end is None
            and self.unanswered_ms >= WATCHDOG_MIN_SPEECH_MS
            and now - self.last_voiced_at >= QUIET_S
        ):
            self.first_turn_end = self.last_voiced_at  # a new turn begins; the first one stays the measure
        self.unanswered_ms += duration_ms
        self.last_voiced_at = now

    def deadline(self) -> float | None:
        """When the watchdog fires if nothing arrives first; None while it is not armed."""
        if self.unanswered_ms < WATCHDOG_MIN_SPEECH_MS:
            return None
        turn_end = self.last_voiced_at if self.first_turn_end is None else self.first_turn_end
        return max(turn_end, self.last_event_at) + self.timeout_s

    def fired(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline
