"""What Twilio runs once a call's media stream ends (a transfer, an apology, a goodbye).

Closing the stream makes Twilio run the TwiML after ``<Connect>``, which fetches
``/twilio/stream-ended``; the answer waits here until then. With REST credentials it is
pushed to Twilio instead (:meth:`NextTwiml.deliver`), which works whichever instance
Twilio's next request would reach."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable

from telephony.twilio_rest import update_call_twiml
from voicebot.agent.call_control import DeliverTwiml
from voicebot.config import TwilioConfig

log = logging.getLogger(__name__)

# Bound on answers waiting for a fetch that may never come (Twilio already hung up).
REMEMBERED = 10_000


class NextTwiml:
    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._by_call: OrderedDict[str, str] = OrderedDict()
        self._remembered = remembered

    def __contains__(self, call_sid: object) -> bool:
        return call_sid in self._by_call

    def set(self, call_sid: str, twiml: str) -> None:
        self._by_call[call_sid] = twiml
        while len(self._by_call) > self._remembered:
            self._by_call.popitem(last=False)

    def take(self, call_sid: str) -> str | None:
        return self._by_call.pop(call_sid, None)

    async def deliver(self, twilio: TwilioConfig, call_sid: str, twiml: str, use_rest: bool = True) -> bool:
        """Make ``twiml`` what Twilio runs once the stream ends; True if Twilio already has it.

        With REST credentials (``[twilio] account_sid`` + ``auth_token``) the call's TwiML is
        replaced through the REST API (on a fleet, ``/twilio/stream-ended`` may land on an
        instance that knows nothing of this call). Without credentials, or if the update
        fails, the TwiML waits here for ``/twilio/stream-ended``. Call before closing the stream."""
        if use_rest and twilio.account_sid and twilio.auth_token:
            try:
                await update_call_twiml(
                    twilio.account_sid,
                    twilio.auth_token.get_secret_value(),
                    call_sid,
                    twiml,
                    api_base_url=twilio.api_base_url,
                )
                return True
            except Exception as exc:
                log.error("call %s: REST update of the call failed (%r); Twilio will fetch it instead", call_sid, exc)
        self.set(call_sid, twiml)
        return False

    def deliverer(self, twilio: TwilioConfig) -> DeliverTwiml:
        """How a call's tools hand Twilio its next TwiML, with the Twilio settings the call
        started on (a reload does not move a call in progress to other credentials)."""

        def deliver(call_sid: str, twiml: str, use_rest: bool) -> Awaitable[bool]:
            return self.deliver(twilio, call_sid, twiml, use_rest)

        return deliver
