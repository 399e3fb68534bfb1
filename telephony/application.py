"""What telephony needs from the application above it, as an interface it owns.

The webhook and media-stream endpoints know how to speak to Twilio; deciding what a call
does (which route, which provider, tools, recordings) is the application's business. They
reach it through :class:`CallApplication`, which the ASGI app puts on ``app.state.calls``,
so telephony never imports the application (dependencies run one way: transcoding <- s2s <-
telephony <- voicebot)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from telephony.bridge import CallBridge, CallSummary, TwilioSocket
    from telephony.media_stream import MediaStreamProtocol, Start
    from telephony.signature import SignatureChecker


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Current request limits and the URL Twilio addresses us by (they follow config reloads)."""

    public_url: str | None
    max_body_bytes: int
    max_message_bytes: int


@dataclass(frozen=True, slots=True)
class Declined:
    """The webhook cannot start a stream for this call: answer with ``twiml`` instead.
    ``route`` is the matched route's name, None when no route matched."""

    call_sid: str
    route: str | None
    twiml: str
    reason: str


class PlannedCall(Protocol):
    """A call the application accepted: its media stream presents ``token``."""

    @property
    def token(self) -> str: ...


class CallApplication(Protocol):
    @property
    def limits(self) -> HttpLimits: ...

    @property
    def signatures(self) -> SignatureChecker: ...

    @property
    def draining(self) -> bool:
        """Shutting down: new calls are refused so Twilio tries the number's fallback URL."""

    async def plan_call(self, params: Mapping[str, str], received_at: float) -> PlannedCall | Declined:
        """Decide what the call to the voice webhook (form ``params``) gets."""

    async def adopt_stream(
        self, token: str, start: Start, socket: TwilioSocket, protocol: MediaStreamProtocol, base_url: str = ""
    ) -> CallBridge | None:
        """The bridge for a media stream that presented ``token`` in its ``start`` frame, or
        None (logged) when the stream must be refused. ``base_url``: our external base URL as
        the stream reached it, where Twilio's callbacks about this call go."""

    def call_ended(self, bridge: CallBridge, summary: CallSummary) -> None:
        """The bridge returned by :meth:`adopt_stream` has finished."""

    def take_next_twiml(self, call_sid: str) -> str | None:
        """What Twilio runs once the call's stream ended, if the application decided it."""

    def webhook_rejected(self, reason: str) -> None:
        """Count a request refused at the door (``signature``, ``malformed``, ``draining``,
        ``no-route``, ``unavailable``, ``stream-signature``); metrics are the application's."""

    def stream_error(self, call_sid: str, error: str) -> None:
        """Count a ``stream-error`` Twilio reported on the stream's ``statusCallback``."""

    def bad_frames_before_start(self, count: int) -> None:
        """Count malformed frames a media stream sent before its ``start`` (a call counts its
        own when it ends)."""
