"""Hooks through which call tapes, metrics and traces watch a call without the bridge
knowing about them. Every method is a no-op here; implementations override what they need.
They run on the audio path, so they must not block or do I/O inline."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s2s.events import ProviderEvent

if TYPE_CHECKING:
    from s2s.provider import ProviderSession
    from telephony.bridge import CallSummary
    from telephony.media_stream import TwilioEvent


class ToTwilio(enum.StrEnum):
    """What a frame sent to Twilio is (Media Streams messages we send)."""

    MEDIA = "media"  # bot audio
    HOLD = "hold"  # a media message of hold audio (telephony.hold), not the bot's
    MARK = "mark"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class AudioSent:
    """Caller audio the bridge sent the provider session, in the session's input format."""

    audio: bytes


@dataclass(frozen=True, slots=True)
class TextSent:
    """A note the bridge sent as text (a keypad digit, a tool's ``say``, a silence prompt)."""

    text: str


@dataclass(frozen=True, slots=True)
class TruncateSent:
    """The provider was told the caller heard only ``heard_ms`` of ``item_id`` (barge-in)."""

    item_id: str
    heard_ms: int


@dataclass(frozen=True, slots=True)
class ToolResultSent:
    """A tool's answer to the provider's call ``call_id``."""

    call_id: str
    output: str


SentToProvider = AudioSent | TextSent | TruncateSent | ToolResultSent


class CallObserver:
    def twilio_in(self, frame: str | bytes, event: TwilioEvent | None) -> None:
        """A frame from Twilio; ``event`` is None when it failed to parse."""

    def twilio_out(self, kind: ToTwilio, frame: str) -> None:
        """A frame we sent to Twilio, already serialized; ``kind`` says which message it is."""

    def session_opened(self, session: ProviderSession) -> None:
        """A provider session now serves the call (again after a reconnect); tapes note its
        audio formats so a replay can declare the same ones."""

    def provider_in(self, event: ProviderEvent) -> None:
        """An event from the provider session."""

    def provider_out(self, sent: SentToProvider) -> None:
        """Something we sent to the provider session; its type says what."""

    def barge_in(self, item_id: str, heard_ms: float, sent_ms: float, latency_ms: float) -> None:
        """Twilio's buffer was cleared after the caller spoke over ``item_id``."""

    def call_ended(self, summary: CallSummary) -> None:
        """The call is over; ``summary`` has the outcome and the transcript."""
