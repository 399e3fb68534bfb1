"""``transfer_call(to, mode="warm")``: brief a person, then hand the caller over.

Cold transfer replaces the call's TwiML with ``<Dial>`` (voicebot.agent.call_control). A warm
one keeps the caller with the bot until someone has actually answered and been told what the
call is about:

1. The caller hears hold audio (telephony.hold) while the bot stays on the line.
2. The person is called through the REST API (``calls.create``,
   https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource) with inline
   TwiML: ``<Say>`` the whisper, then ``<Dial><Conference>`` into a room named for the call.
   The whisper is a summary made from the call's transcript; being the first verb of the
   person's own leg, only they hear it, before anyone else is in the room. ``Timeout`` bounds
   the ringing; the call's ``StatusCallback`` reports a leg that never answered (``busy``,
   ``no-answer``, ``failed``, ``canceled``) or hung up during the whisper (``completed``).
3. The room's ``statusCallback`` with ``statusCallbackEvent="join"`` says when the person
   entered it, i.e. after the whisper (``participant-join``,
   https://www.twilio.com/docs/voice/twiml/conference#attributes-statusCallbackEvent).
4. The caller's call is moved into the room (``calls(sid).update(twiml=<Dial><Conference>)``),
   which ends its media stream: the bot closes its side, the provider session ends and the
   call's provider slot is released. Both legs end the room when they hang up.

If nobody has joined within ``warm_answer_timeout_s`` (or the dial fails), the person's leg is
ended, the hold stops and the model is told, so the bot tells the caller and the call goes on.
If the caller hangs up meanwhile, the person's leg is ended too.

Twilio's callbacks come to ``/twilio/transfer?transfer=<id>`` (signed like every webhook) on
the instance that placed the call: the URL is built from the base the call's media stream
reached (or ``[server] public_url``). :class:`TransferCallbacks` routes them to the waiting
transfer by its unguessable id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from s2s.provider import Turn
from telephony.call_handle import CallHandle
from telephony.call_state import CallOutcome
from telephony.twilio_rest import create_call, update_call
from telephony.twiml import join_conference
from voicebot.agent.config import CallControl

if TYPE_CHECKING:
    from voicebot.config import TwilioConfig

log = logging.getLogger(__name__)

TRANSFER_PATH = "/twilio/transfer"
WHISPER_MAX_CHARS = 600  # spoken at ~15 chars/s: about 40 s at most, and well inside TwiML's 4000 characters
# A leg's final statuses short of joining the room (Call resource, *Call Status values*).
NOT_JOINED = frozenset({"busy", "no-answer", "failed", "canceled", "completed"})


@dataclass(eq=False)
class TransferWait:
    """One warm transfer's callbacks, in arrival order."""

    id: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    events: asyncio.Queue[dict[str, str]] = field(default_factory=asyncio.Queue)

    async def outcome(self, agent_sid: str) -> str | None:
        """None once the person's leg has joined the room; else the status it ended with."""
        while True:
            params = await self.events.get()
            if params.get("CallSid") != agent_sid:
                continue
            if params.get("StatusCallbackEvent") == "participant-join":
                return None
            status = params.get("CallStatus", "")
            if status in NOT_JOINED:
                return status


class TransferCallbacks:
    """Warm transfers waiting for Twilio's callbacks, by id (the ``/twilio/transfer`` endpoint
    delivers, the transfer awaits)."""

    def __init__(self) -> None:
        self._waiting: dict[str, TransferWait] = {}

    def open(self) -> TransferWait:
        wait = TransferWait()
        self._waiting[wait.id] = wait
        return wait

    def close(self, wait: TransferWait) -> None:
        self._waiting.pop(wait.id, None)

    def deliver(self, transfer_id: str, params: dict[str, str]) -> bool:
        """False when no transfer here waits for ``transfer_id`` (over, or another instance's)."""
        wait = self._waiting.get(transfer_id)
        if wait is None:
            return False
        wait.events.put_nowait(params)
        return True


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 3)].rstrip() + "..."


def whisper_text(transcript: Sequence[Turn], caller: str, redact: Callable[[str], str]) -> str:
    """What the person hears before the caller joins: who calls and, extracted from the
    transcript (no model, so nothing invented), what the caller said and the bot's last
    answer. ``redact`` masks what the route keeps out of what a call leaves behind: the
    whisper travels in TwiML, which Twilio logs."""
    said = " ".join(t.text for t in transcript if t.role == "caller")
    last_bot = next((t.text for t in reversed(transcript) if t.role == "bot"), "")
    parts = [f"Transfer from the voice assistant. The caller's number is {caller or 'withheld'}."]
    if said:
        parts.append(f"They said: {_clip(redact(said), WHISPER_MAX_CHARS * 2 // 3)}")
    if last_bot:
        parts.append(f"The assistant last said: {_clip(redact(last_bot), WHISPER_MAX_CHARS // 4)}")
    parts.append("Connecting you now.")
    return _clip(" ".join(parts), WHISPER_MAX_CHARS)


# One per process: a callback names its transfer by an unguessable id, whichever call placed it.
TRANSFER_CALLBACKS = TransferCallbacks()


class WarmTransfer:
    """Runs warm transfers for one call (see the module docstring)."""

    def __init__(
        self,
        settings: CallControl,
        twilio: TwilioConfig,
        callbacks: TransferCallbacks,
        redact: Callable[[str], str],
    ) -> None:
        self.settings = settings
        self.twilio = twilio
        self.callbacks = callbacks
        self.redact = redact

    def _credentials(self) -> tuple[str, str]:
        account, token = self.twilio.account_sid, self.twilio.auth_token
        assert account and token, "warm transfer is config-checked to need REST credentials"
        return account, token.get_secret_value()

    async def run(self, call: CallHandle, number: str) -> bool:
        """True once the caller is in the room with the person (our stream is then closed);
        False when nobody joined in time, the caller being back with the bot."""
        account, token = self._credentials()
        room = f"voicebot-{call.call_sid}"
        wait = self.callbacks.open()
        callback = f"{call.base_url}{TRANSFER_PATH}?transfer={wait.id}"
        agent: str | None = None
        call.start_hold()
        try:
            try:
                async with asyncio.timeout(self.settings.warm_answer_timeout_s):
                    agent, _ = await create_call(
                        account,
                        token,
                        {
                            "to": number,
                            "from_": self.settings.warm_caller_id or call.our_number,
                            "twiml": join_conference(
                                room, whisper=whisper_text(call.transcript, call.caller, self.redact), on_join=callback
                            ),
                            "timeout": max(5, round(self.settings.warm_answer_timeout_s)),
                            "status_callback": callback,
                            "status_callback_event": ["completed"],
                            "status_callback_method": "POST",
                        },
                        api_base_url=self.twilio.api_base_url,
                    )
                    log.info("call %s: warm transfer: calling %s (%s)", call.call_sid, number, agent)
                    ended = await wait.outcome(agent)
            except TimeoutError:
                ended = "no join in time"
            except Exception as exc:  # the REST request was refused or failed
                ended = f"dialling failed: {exc!r}"
            if ended is None:
                try:
                    await update_call(
                        account,
                        token,
                        call.call_sid,
                        api_base_url=self.twilio.api_base_url,
                        twiml=join_conference(room),
                    )
                except Exception as exc:
                    ended = f"moving the caller failed: {exc!r}"
            if ended is None:
                log.info("call %s: warm transfer: %s briefed; the caller joins them in %s", call.call_sid, number, room)
                await call.hang_up(CallOutcome.TRANSFERRED)
                return True
            log.warning("call %s: warm transfer to %s failed (%s); back to the bot", call.call_sid, number, ended)
            if agent is not None and ended not in NOT_JOINED:
                await self._end_leg(agent, account, token)
            return False
        except asyncio.CancelledError:
            # The caller hung up: nobody must be left ringing, or waiting alone in the room.
            if agent is not None:
                await self._end_leg(agent, account, token)
            raise
        finally:
            self.callbacks.close(wait)
            await call.stop_hold()

    async def _end_leg(self, sid: str, account: str, token: str) -> None:
        """End the person's leg, ringing or answered: ``Status=completed`` hangs up a call even
        if it is in progress (``canceled`` would spare an answered one;
        https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource)."""
        try:
            await update_call(account, token, sid, api_base_url=self.twilio.api_base_url, status="completed")
        except Exception as exc:
            log.warning("ending the transfer leg %s failed: %r", sid, exc)
