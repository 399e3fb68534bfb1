"""What the bot does when the caller goes quiet: re-prompt, escalate, then say goodbye and
hang up (a route's ``[routes.silence]``).

:class:`SilencePolicy` is pure: it is told what happens on the call (caller speech starting
and stopping, bot audio produced and heard, tool calls, text turns) with the time, and
answers when the next step is due and what it is. :class:`SilenceWatch` is its thin asyncio
shell: a :class:`~telephony.observer.CallObserver` that feeds it the events the bridge already
reports, sleeps until the policy's deadline (woken by any event, never polling), and acts
through the call's :class:`~telephony.call_handle.CallHandle`.

Quiet is counted from the last moment anything happened: the caller's speech ending, or the
last mark Twilio echoed (a mark comes back once the bot audio before it has played:
https://www.twilio.com/docs/voice/media-streams/websocket-messages#mark-message), so a long
answer still queued at Twilio is not silence. While the caller speaks, the bot's turn is
open, or a tool call waits for its result, there is no deadline at all.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from s2s.events import AudioOut, ProviderEvent, SpeechStarted, SpeechStopped, ToolCall, Transcript, TurnDone
from s2s.provider import ProviderSession
from telephony.bridge import CallSummary
from telephony.call_handle import CallHandle, Heard
from telephony.call_state import CallOutcome
from telephony.media_stream import Mark, TwilioEvent
from telephony.observer import CallObserver, SentToProvider, TextSent, ToolResultSent
from voicebot.config import RouteConfig, SilenceSettings
from voicebot.telemetry.metrics import record_silence_step

log = logging.getLogger(__name__)

GOODBYE_TURN_WAIT_S = 10.0
"""How long the goodbye's answer may take to be spoken before the call is hung up anyway."""
GOODBYE_HEARD_QUIET_S = 0.3
"""After the goodbye turn is done and its audio played, this much quiet means it was heard."""


class Step(enum.StrEnum):
    PROMPT = "prompt"
    GOODBYE = "goodbye"


@dataclass(frozen=True, slots=True)
class Action:
    step: Step
    text: str
    number: int  # 1-based: which prompt of the list (the goodbye counts after the last one)


class SilencePolicy:
    """When the caller has been silent for ``idle_after_s``: the next prompt of ``prompts``;
    after the last one, the goodbye. Caller speech starts the list over."""

    def __init__(self, idle_after_s: float, prompts: tuple[str, ...], goodbye: str, now: float) -> None:
        self.idle_after_s = idle_after_s
        self.prompts = prompts
        self.goodbye = goodbye
        self.steps_taken = 0  # prompts said since the caller last spoke
        self.finished = False  # the goodbye is due or said
        self._quiet_since = now
        self._caller_speaking = False
        self._bot_turn_open = False
        self._tools_pending: set[str] = set()

    # -- what happened ---------------------------------------------------------------------

    def caller_started(self, now: float) -> None:
        self._caller_speaking = True
        self.steps_taken = 0
        self.finished = False
        self._quiet_since = now

    def caller_stopped(self, now: float) -> None:
        self._caller_speaking = False
        self._quiet_since = now

    def bot_audio(self, now: float) -> None:
        """The bot's turn produces audio: the caller's turn is over (some providers never say
        speech-stopped when they answer)."""
        self._bot_turn_open = True
        self._caller_speaking = False
        self._quiet_since = now

    def bot_turn_done(self, now: float) -> None:
        self._bot_turn_open = False
        self._quiet_since = now

    def bot_heard(self, now: float) -> None:
        """Twilio played bot audio up to now (a mark echo)."""
        self._quiet_since = now

    def text_sent(self, now: float) -> None:
        """A text turn went to the model (a note, a keypad digit): its answer is coming."""
        self._quiet_since = now

    def tool_called(self, call_id: str, now: float) -> None:
        self._tools_pending.add(call_id)
        self._quiet_since = now

    def tool_answered(self, call_id: str, now: float) -> None:
        self._tools_pending.discard(call_id)
        self._quiet_since = now

    # -- what to do ------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When the next step is due, or None while someone speaks or something is pending."""
        if self.finished or self._caller_speaking or self._bot_turn_open or self._tools_pending:
            return None
        return self._quiet_since + self.idle_after_s

    def due(self, now: float) -> Action | None:
        """The step to take at ``now``, if its deadline has come (and then it counts as taken)."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        self._quiet_since = now
        if self.steps_taken < len(self.prompts):
            self.steps_taken += 1
            return Action(Step.PROMPT, self.prompts[self.steps_taken - 1], self.steps_taken)
        self.finished = True
        return Action(Step.GOODBYE, self.goodbye, self.steps_taken + 1)


def prompt_note(text: str) -> str:
    """The text turn that makes the model re-prompt (it speaks; we never synthesize)."""
    return f'The caller has been silent for a while. Say to the caller, in your own voice: "{text}"'


def goodbye_note(text: str) -> str:
    return f'The caller is still silent, so the call ends now. Say to the caller: "{text}"'


class SilenceWatch(CallObserver):
    """Runs a :class:`SilencePolicy` on one call (see the module docstring)."""

    def __init__(
        self,
        settings: SilenceSettings,
        route: str,
        handle: Callable[[], CallHandle],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._route = route
        self._handle = handle
        self._clock = clock
        self._policy: SilencePolicy | None = None
        self._changed = asyncio.Event()
        self._goodbye_done = asyncio.Event()
        self._goodbye_sent = False
        self._task: asyncio.Task[None] | None = None

    # -- observer hooks (the audio path: update the policy, wake the task, nothing more) ---

    def session_opened(self, session: ProviderSession) -> None:
        if self._task is None:  # again after a reconnect: the call and its silence go on
            s = self._settings
            self._policy = SilencePolicy(s.idle_after_s, tuple(s.prompts), s.goodbye, self._clock())
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"silence-{self._route}")

    def provider_in(self, event: ProviderEvent) -> None:
        policy = self._policy
        if policy is None:
            return
        now = self._clock()
        if isinstance(event, AudioOut):
            policy.bot_audio(now)
        elif isinstance(event, TurnDone):
            policy.bot_turn_done(now)
            if self._goodbye_sent:
                self._goodbye_done.set()
        elif isinstance(event, SpeechStarted):
            policy.caller_started(now)
        elif isinstance(event, SpeechStopped) or (isinstance(event, Transcript) and event.role == "caller"):
            policy.caller_stopped(now)
        elif isinstance(event, ToolCall):
            policy.tool_called(event.call_id, now)
        else:
            return
        self._changed.set()

    def provider_out(self, sent: SentToProvider) -> None:
        policy = self._policy
        if policy is None:
            return
        if isinstance(sent, ToolResultSent):
            policy.tool_answered(sent.call_id, self._clock())
        elif isinstance(sent, TextSent):
            policy.text_sent(self._clock())
        else:
            return
        self._changed.set()

    def twilio_in(self, frame: str | bytes, event: TwilioEvent | None) -> None:
        if self._policy is not None and isinstance(event, Mark):
            self._policy.bot_heard(self._clock())
            self._changed.set()

    def call_ended(self, summary: CallSummary) -> None:
        if self._task is not None:
            self._task.cancel()

    # -- the shell -------------------------------------------------------------------------

    async def _run(self) -> None:
        policy = self._policy
        assert policy is not None
        while True:
            self._changed.clear()
            deadline = policy.deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
                continue  # something happened: the deadline may have moved
            except TimeoutError:
                pass
            action = policy.due(self._clock())
            if action is None:
                continue
            record_silence_step(self._route, action.step.value)
            handle = self._handle()
            log.info("call %s: caller silent; %s %d", handle.call_sid, action.step.value, action.number)
            if action.step is Step.PROMPT:
                await handle.say(prompt_note(action.text))
                continue
            if await self._say_goodbye(handle):
                log.info("call %s: goodbye heard after caller silence; hanging up", handle.call_sid)
                await handle.hang_up(CallOutcome.CALLER_SILENT)
                return
            log.info("call %s: the caller spoke over the goodbye; the call goes on", handle.call_sid)

    async def _say_goodbye(self, handle: CallHandle) -> bool:
        """Say the goodbye and wait until it has been heard; False if the caller talked over it."""
        since = self._clock()
        self._goodbye_done.clear()
        self._goodbye_sent = True
        await handle.say(goodbye_note(self._settings.goodbye))
        try:
            async with asyncio.timeout(GOODBYE_TURN_WAIT_S):
                await self._goodbye_done.wait()
        except TimeoutError:
            log.warning("call %s: the goodbye turn did not finish in time; hanging up", handle.call_sid)
        self._goodbye_sent = False
        heard = await handle.heard(GOODBYE_HEARD_QUIET_S, max_wait_s=GOODBYE_TURN_WAIT_S, barge_ins_since=since)
        return heard is not Heard.INTERRUPTED


def silence_watch(route: RouteConfig, handle: Callable[[], CallHandle]) -> list[CallObserver]:
    """The route's silence watch as a call observer, if it has ``[routes.silence]``."""
    if route.silence is None:
        return []
    return [SilenceWatch(route.silence, route.name, handle)]
