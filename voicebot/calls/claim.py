"""Which plan a media stream gets for the stream token in its ``start`` frame: the plan this
instance's webhook left in the handoff, or one rebuilt from the signed token when another
instance answered the webhook. A token is taken once per instance."""

from __future__ import annotations

import logging
from collections.abc import Callable

from voicebot.calls.admission import HELD_TTL_S, SlotStore
from voicebot.calls.adoption import Tailor, adopt_plan
from voicebot.calls.handoff import StreamHandoff
from voicebot.calls.loaded import LoadedConfig
from voicebot.calls.next_twiml import NextTwiml
from voicebot.calls.plan import CallPlan
from voicebot.calls.stream_token import CLOCK_SKEW_S, BadStreamToken

log = logging.getLogger(__name__)


class StreamClaims:
    """``release``: let a withdrawn plan's slot go (and its timers)."""

    def __init__(
        self,
        loaded: LoadedConfig,
        slots: SlotStore,
        handoff: StreamHandoff,
        next_twiml: NextTwiml,
        release: Callable[[CallPlan], None],
    ) -> None:
        self._loaded = loaded
        self._slots = slots
        self._handoff = handoff
        self._next_twiml = next_twiml
        self._release = release
        # what a plan adopted from another instance gets for an outbound call (voicebot.calls.outbound)
        self.tailor: Tailor | None = None

    async def claim(self, token: str, call_sid: str) -> CallPlan | None:
        """The plan for the media stream of ``call_sid`` (the ``start`` frame's callSid) that
        presents ``token``, or None (logged) when the stream must be refused.

        Fast path: this instance answered the webhook, the plan and its lease are in the
        handoff. Otherwise another instance did: the signed token
        (:mod:`voicebot.calls.stream_token`) is checked and the plan rebuilt here
        (:func:`voicebot.calls.adoption.adopt_plan`).
        A token is accepted once per instance; a replay to *another* instance within the
        expiry can only open a stream for the signed CallSid, whose upgrade Twilio signed,
        so it cannot start a call Twilio did not place."""
        handoff = self._handoff
        handoff.expire()
        if token in handoff.pending:
            plan = handoff.take(token, call_sid)
            if plan is None:
                return None
            self._remember(token)
            if plan.lease is not None:
                plan.lease.hold(HELD_TTL_S)
            return plan
        if handoff.used(token):
            log.warning("call %s: stream token already used on this instance (replay); refused", call_sid)
            return None
        config = self._loaded.config
        try:
            ticket = self._loaded.stream_tokens.verify(token, call_sid, config.server.stream_connect_timeout_s)
        except BadStreamToken as exc:
            log.warning("call %s: stream token refused: %s", call_sid, exc)
            return None
        self._remember(token)  # before any await: a concurrent replay sees it
        deliver = self._next_twiml.deliverer(config.twilio)
        return await adopt_plan(token, ticket, config, self._loaded.providers, self._slots, deliver, self.tailor)

    def withdraw_pending(self) -> list[CallPlan]:
        """Take back every reservation still waiting for its stream (the drain deadline): its
        slot is released, and its token counts as used, so a stream that still comes is
        refused and Twilio goes on to ``/twilio/stream-ended``."""
        plans = list(self._handoff.pending.values())
        self._handoff.pending.clear()
        for plan in plans:
            self._remember(plan.token)
            if self._slots.shared:
                plan.lease = None  # its stream may be live on another instance (StreamHandoff.expire)
            self._release(plan)
        return plans

    def _remember(self, token: str) -> None:
        self._handoff.remember(token, self._loaded.config.server.stream_connect_timeout_s + 2 * CLOCK_SKEW_S)
