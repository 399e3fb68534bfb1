"""External reasoning: the S2S model is the voice, a business's own agent does the thinking.

In ``reasoning = { agent_url = … }`` / ``{ agent = "package.module:callable" }`` mode the model
gets one tool, ``ask_agent(question)``, and instructions to use it for every substantive
answer and to speak the reply faithfully. The agent contract, HTTP or callable alike:

    request  {"call_sid": str, "caller": str, "question": str,
              "transcript": [{"role": "caller" | "bot", "text": str}, ...]}
    response {"answer": str}          (a callable may also return the answer as a str)

No dead air while the agent (or a route's tool) works; the route's ``[routes.waiting]`` picks
how (:func:`while_waiting`). The model is told to say a short filler ("Let me check.") before
it calls the tool. In mode ``filler``, if it did not, or the agent is slow,
:class:`SilenceFiller` watches what the caller actually hears (the playout tracker, i.e.
Twilio's marks) and, after ``filler_after_s`` of silence, asks the model for one short filler
via ``send_text`` — the only way to get speech in the bot's own voice on every provider (the
echo line records it). At most ``MAX_FILLERS`` such requests go out per question,
``FILLER_SPACING_S`` apart. In mode ``hold``, once the work has taken ``hold_after_s`` the
caller hears hold audio at the phone edge until the answer is in (:func:`with_hold`,
telephony.hold).

Failures (timeout, HTTP error, connection refused, malformed answer, a callable that raises)
never leave the model without a result: it gets ``{"error": …, "say": <fallback>}`` and is
instructed to say the ``say`` text, so the caller hears a graceful apology and the call goes on.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from s2s.call_context import logged_text
from s2s.errors import VoicebotError
from s2s.events import ToolCall
from s2s.tools import ToolSpec
from voicebot.agent.config import AgentReasoning, WaitingSettings
from voicebot.telemetry.metrics import record_hold

if TYPE_CHECKING:
    from telephony.call_handle import CallHandle

log = logging.getLogger(__name__)

ASK_AGENT = ToolSpec(
    name="ask_agent",
    description=(
        "Ask the business's assistant. Use it for every question or request from the caller, "
        "including keypad entries. Returns {answer} to speak faithfully, or {say} to say as is."
    ),
    parameters={
        "type": "object",
        "properties": {
            "question": {"type": "string", "description": "the caller's question or request, in their words"}
        },
        "required": ["question"],
    },
)

AGENT_INSTRUCTIONS = (
    "You are the voice of this phone line; another assistant does the thinking. Do not answer "
    "questions from your own knowledge. For every question or request from the caller (anything "
    "beyond greetings and asking them to repeat), first say a very short filler such as "
    '"Let me check.", then call the ask_agent tool with the request in the caller\'s words, '
    "including anything they entered on the keypad. Speak the tool's answer to the caller "
    "faithfully: the same facts, numbers and names, nothing added. If the tool result has a "
    '"say" field, say exactly that text.'
)

FILLER_PROMPT = (
    "(Note from the system, not from the caller: the answer is still being looked up. Say only a "
    'very short filler such as "One moment, please." Do not answer the question yet.)'
)
MAX_FILLERS = 3
FILLER_SPACING_S = 3.0


class EndpointFailure(VoicebotError):
    """An agent or tool endpoint gave no usable reply; the message says why (for the log)."""


def load_callable(ref: str) -> Callable[..., Any]:
    """``package.module:callable`` -> the callable (EndpointFailure when it is not there)."""
    module_name, _, attr = ref.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EndpointFailure(f"cannot load {ref}: {exc}") from exc
    if not callable(target):
        raise EndpointFailure(f"{ref} is not callable")
    return target


@dataclass
class JsonEndpoint:
    """Where a JSON request goes: an HTTP URL (POST) or an async Python callable. Shared by the
    agent and by routes' own tools, so both behave the same on errors and timeouts."""

    url: str | None = None
    ref: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    _client: httpx.AsyncClient | None = field(default=None, init=False)
    _target: Callable[..., Any] | None = field(default=None, init=False)

    @property
    def name(self) -> str:
        return self.url or self.ref or "?"

    async def call(self, payload: dict[str, Any], timeout_s: float) -> Any:
        """The decoded JSON reply (or the callable's return value). Raises EndpointFailure."""
        try:
            async with asyncio.timeout(timeout_s):
                return await (self._post(payload) if self.url else self._invoke(payload))
        except TimeoutError:
            raise EndpointFailure(f"no answer within {timeout_s:g} s") from None

    async def _post(self, payload: dict[str, Any]) -> Any:
        assert self.url is not None
        if self._client is None:
            # One client per call: connections (and TLS sessions) are reused across the call's
            # questions; the deadline is asyncio.timeout above, so httpx's own is a backstop.
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0), headers=dict(self.headers))
        try:
            response = await self._client.post(self.url, json=payload)
        except httpx.HTTPError as exc:
            raise EndpointFailure(f"POST {self.url} failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise EndpointFailure(f"POST {self.url} answered HTTP {response.status_code}: {response.text[:200]!r}")
        try:
            return response.json()
        except ValueError as exc:
            raise EndpointFailure(f"POST {self.url} answered non-JSON: {response.text[:200]!r}") from exc

    async def _invoke(self, payload: dict[str, Any]) -> Any:
        assert self.ref is not None
        if self._target is None:
            self._target = load_callable(self.ref)
        try:
            result = self._target(payload)
            return await result if inspect.isawaitable(result) else result
        except EndpointFailure:
            raise
        except Exception as exc:
            raise EndpointFailure(f"{self.ref} raised {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def answer_of(reply: Any) -> str:
    """The answer text from an agent reply; EndpointFailure when the reply is malformed."""
    if isinstance(reply, str):
        answer: Any = reply
    elif isinstance(reply, dict):
        answer = reply.get("answer")
    else:
        answer = None
    if not isinstance(answer, str) or not answer.strip():
        raise EndpointFailure(f"malformed answer (want {{'answer': non-empty string}}): {str(reply)[:200]!r}")
    return answer.strip()


class SilenceFiller:
    """Asks the model for a short filler whenever the caller has heard nothing for
    ``after_s`` while a slow tool runs. Silence is judged from playout (marks), not from what
    was sent: audio queued at Twilio counts as sound until it has played."""

    def __init__(self, call: CallHandle, after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.call = call
        self.after_s = after_s
        self.clock = clock
        self.fillers = 0

    async def run(self) -> None:
        last_filler = -FILLER_SPACING_S
        while self.fillers < MAX_FILLERS:
            await self.call.heard(self.after_s)
            spacing_left = last_filler + FILLER_SPACING_S - self.clock()
            if spacing_left > 0:
                await asyncio.sleep(spacing_left)  # fillers at least FILLER_SPACING_S apart
                if self.call.bot_audio_pending:
                    continue
            self.fillers += 1
            last_filler = self.clock()
            log.info("call %s: agent still working; asking the model for a filler", self.call.call_sid)
            await self.call.say(FILLER_PROMPT)


async def while_waiting[T](call: CallHandle, waiting: WaitingSettings, filler_after_s: float, work: Awaitable[T]) -> T:
    """``work`` (a tool or the agent) with the route's way of filling the wait."""
    if call.full_duplex:
        # A full-duplex model fills the wait itself (its acknowledgement delay); a prompted
        # filler would only be appended to its context as another thing to say, and hold
        # audio would sit in the lead its pacer keeps for the model's speech.
        return await work
    if waiting.mode == "hold" and call.can_hold:
        return await with_hold(call, waiting.hold_after_s, work)
    return await with_filler(call, filler_after_s, work)


async def with_hold[T](call: CallHandle, after_s: float, work: Awaitable[T]) -> T:
    """Hold audio for the caller once ``work`` has taken ``after_s``, counted from when the
    tool call reached the bridge, until it is done (or cancelled with the call)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task}, timeout=max(0.0, call.tool_call_at + after_s - call.now()))
        if task.done():
            return task.result()
        log.info("call %s: still waiting after %.1f s; the caller hears hold audio", call.call_sid, after_s)
        held_at = call.now()
        call.start_hold()
        try:
            return await task
        finally:
            await call.stop_hold()
            record_hold(call.route, call.now() - held_at)
    finally:
        task.cancel()  # the call ended meanwhile: the work has no one to answer


async def with_filler[T](call: CallHandle, after_s: float, work: Awaitable[T]) -> T:
    filler = asyncio.create_task(SilenceFiller(call, after_s).run())
    try:
        return await work
    finally:
        filler.cancel()
        await asyncio.gather(filler, return_exceptions=True)


class AgentTool:
    """``ask_agent``: one call's link to the external agent."""

    def __init__(
        self,
        settings: AgentReasoning,
        waiting: WaitingSettings,
        call_sid: str,
        caller: str,
        keypad: Callable[[], list[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.waiting = waiting
        self.call_sid = call_sid
        self.caller = caller
        self.keypad = keypad  # a sensitive keypad's entries (voicebot.agent.dtmf)
        self.endpoint = JsonEndpoint(url=settings.agent_url, ref=settings.agent, headers=settings.headers)

    def request(self, question: str, call: CallHandle) -> dict[str, Any]:
        request: dict[str, Any] = {
            "call_sid": self.call_sid,
            "caller": self.caller,
            "question": question,
            "transcript": [{"role": t.role, "text": t.text} for t in call.transcript],
        }
        if self.keypad is not None:
            request["keypad"] = self.keypad()
        return request

    async def __call__(self, tool_call: ToolCall, call: CallHandle) -> str:
        question = str(tool_call.arguments.get("question", "")).strip()
        started = time.monotonic()
        try:
            reply = await while_waiting(
                call,
                self.waiting,
                self.settings.filler_after_s,
                self.endpoint.call(self.request(question, call), self.settings.timeout_s),
            )
            answer = answer_of(reply)
        except EndpointFailure as exc:
            log.error(
                "call %s: agent %s failed for %r: %s; the caller hears the fallback",
                self.call_sid,
                self.endpoint.name,
                logged_text(question),
                exc,
            )
            return json.dumps({"error": "the assistant is unavailable", "say": self.settings.fallback})
        log.info("call %s: agent answered in %.0f ms", self.call_sid, (time.monotonic() - started) * 1000)
        return json.dumps({"answer": answer})
