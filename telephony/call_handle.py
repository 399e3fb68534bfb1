"""What a tool or keypad hook may do to its call, without reaching into the bridge.

The bridge gives each of its hooks a :class:`CallHandle`: speak to the model, put a caller
turn into the transcript, hang up, read the transcript, and wait, as an event, until the
caller has heard everything sent so far. Transfers are a hang-up with a next TwiML chosen
above telephony (``voicebot.agent.call_control``).

"Heard" comes from Twilio's mark echoes (:class:`~telephony.playout.PlayoutTracker`): a mark
comes back once the audio before it has played (Twilio Media Streams, *mark* message:
https://www.twilio.com/docs/voice/media-streams/websocket-messages#mark-message). The
tracker reports each change between "bot audio queued at Twilio" and "nothing queued", and
a barge-in clears it, so a waiter wakes on exactly the moments that can change its answer.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING

from s2s.provider import Turn
from telephony.call_state import CallOutcome

if TYPE_CHECKING:
    from telephony.bridge import CallBridge


class Heard(enum.Enum):
    HEARD = "heard"  # everything sent has played, and nothing new came for the quiet time
    INTERRUPTED = "interrupted"  # the caller talked over the bot meanwhile (a barge-in)
    TIMEOUT = "timeout"


class PlayoutSignal:
    """An edge-triggered wake-up: set on every playout change (queued <-> idle, cleared) and
    consumed by whoever waits. Used as the tracker's listener."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def __call__(self) -> None:
        self._changed.set()

    async def wait(self, timeout_s: float | None) -> bool:
        """True when something changed within ``timeout_s`` (None: no limit)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        except TimeoutError:
            return False
        finally:
            self._changed.clear()
        return True


class CallHandle:
    def __init__(self, bridge: CallBridge, signal: PlayoutSignal) -> None:
        self._bridge = bridge
        self._signal = signal

    @property
    def call_sid(self) -> str:
        return self._bridge.info.call_sid

    @property
    def route(self) -> str:
        return self._bridge.info.route

    @property
    def caller(self) -> str:
        return self._bridge.info.caller

    @property
    def called(self) -> str:
        return self._bridge.info.called

    @property
    def our_number(self) -> str:
        """The call's Twilio number: the one called (inbound), or the one we called from (outbound)."""
        info = self._bridge.info
        return info.caller if info.direction == "outbound" else info.called

    @property
    def base_url(self) -> str:
        """Our external base URL, as the call's media stream reached it."""
        return self._bridge.info.base_url

    @property
    def transcript(self) -> Sequence[Turn]:
        """The conversation as the caller heard it so far."""
        return tuple(self._bridge.summary.transcript)

    @property
    def bot_audio_pending(self) -> bool:
        """Bot audio is queued at Twilio or playing."""
        return self._bridge.playout.pending

    @property
    def full_duplex(self) -> bool:
        """The session paces its own audio and owns turn-taking (``playout_lead_ms``)."""
        session = self._bridge.session
        return session is not None and session.playout_lead_ms is not None

    def now(self) -> float:
        """The bridge's clock (``tool_call_at`` and waits are on it)."""
        return self._bridge.clock()

    @property
    def tool_call_at(self) -> float:
        """When the latest tool call reached the bridge (its clock; now if none did): a
        handler may start later, on a busy loop."""
        at = self._bridge.last_tool_call_at
        return self._bridge.clock() if at is None else at

    @property
    def can_hold(self) -> bool:
        """The call has hold audio (the route's ``[routes.waiting]`` mode is hold)."""
        return self._bridge.hold is not None

    def start_hold(self) -> None:
        """The caller hears hold audio whenever the bot is silent, until :meth:`stop_hold`
        (telephony.hold); their speech silences it for the rest of the wait."""
        if self._bridge.hold is not None:
            self._bridge.hold.start()

    async def stop_hold(self) -> None:
        """The wait is over (the answer is in): hold audio stops at once."""
        if self._bridge.hold is not None:
            await self._bridge.hold.stop()

    async def say(self, text: str) -> None:
        """A text turn to the model (an instruction or a note), which answers it aloud."""
        await self._bridge.send_text(text)

    async def add_caller_turn(self, text: str) -> None:
        """Something the caller said other than by voice (keypad): it goes into the call's
        transcript, which providers only fill from audio, and to the model."""
        self._bridge.transcript.add_turn(Turn("caller", text))
        await self._bridge.send_text(text)

    async def hang_up(self, outcome: CallOutcome) -> None:
        await self._bridge.hang_up(outcome)

    async def heard(
        self,
        quiet_s: float,
        max_wait_s: float | None = None,
        barge_ins_since: float | None = None,
    ) -> Heard:
        """Wait until the caller has heard everything sent and nothing new came for ``quiet_s``.

        With ``barge_ins_since`` (the bridge's clock), a barge-in from then on ends the wait
        as ``INTERRUPTED``: the caller did not hear the bot out and has something to say.
        ``TIMEOUT`` after ``max_wait_s``."""
        bridge = self._bridge
        now = bridge.clock
        started = now()
        since_ms = None if barge_ins_since is None else (barge_ins_since - bridge.summary.started_at) * 1000.0
        while True:
            if since_ms is not None and any(b.at_ms >= since_ms for b in bridge.summary.barge_ins):
                return Heard.INTERRUPTED
            left = None if max_wait_s is None else max_wait_s - (now() - started)
            if left is not None and left <= 0:
                return Heard.TIMEOUT
            if bridge.playout.pending:
                await self._signal.wait(left)
                continue
            quiet = quiet_s if left is None else min(quiet_s, left)
            if not await self._signal.wait(quiet) and quiet == quiet_s:
                return Heard.HEARD
