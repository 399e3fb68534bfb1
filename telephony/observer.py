"""Hooks through which call tapes, metrics and traces watch a call without the bridge
knowing about them. Every method is a no-op here; implementations override what they need.
They run on the audio path, so they must not block or do I/O inline."""

from __future__ import annotations

import enum
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


class ToProvider(enum.StrEnum):
    """What the bridge sent the provider session; the payload's type follows from it."""

    AUDIO = "audio"  # bytes, in the session's input format
    TEXT = "text"  # str
    TRUNCATE = "truncate"  # (item_id, heard_ms)
    TOOL_RESULT = "tool_result"  # (call_id, output)


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

    def provider_out(self, kind: ToProvider, payload: object) -> None:
        """Something we sent to the provider (see :class:`ToProvider` for the payloads)."""

    def barge_in(self, item_id: str, heard_ms: float, sent_ms: float, latency_ms: float) -> None:
        """Twilio's buffer was cleared after the caller spoke over ``item_id``."""

    def call_ended(self, summary: CallSummary) -> None:
        """The call is over; ``summary`` has the outcome and the transcript."""
