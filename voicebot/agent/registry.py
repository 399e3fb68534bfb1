"""One call's tools: what the model is offered, the instructions that go with them, and the
dispatcher the bridge calls (its ``ToolHandler``) plus its keypad hook (``DtmfHandler``).

Built per call from the route (``CallPlan.tools``), so a config reload never changes the
tools of a call in progress. Which tools a call gets:
- ``reasoning = "builtin"``: the route's own ``[[routes.tools]]`` plus call control;
- agent reasoning: ``ask_agent`` plus call control (the agent does the thinking, so the
  route's own tools are the agent's business, not the voice model's).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from s2s.events import ToolCall
from s2s.provider import Turn
from s2s.tools import ToolSpec
from telephony.call_handle import CallHandle
from voicebot.agent.agent import AGENT_INSTRUCTIONS, ASK_AGENT, AgentTool, EndpointFailure, JsonEndpoint, while_waiting
from voicebot.agent.call_control import CallControlTools, DeliverTwiml, call_control_instructions
from voicebot.agent.config import RouteTool, WaitingSettings
from voicebot.agent.dtmf import DigitCollector
from voicebot.agent.memory import CallerMemory

if TYPE_CHECKING:
    from telephony.bridge import CallSummary
    from voicebot.config import AppConfig, RouteConfig

log = logging.getLogger(__name__)

Handler = Callable[[ToolCall, CallHandle], Awaitable[str]]

# Post-call work (closing clients, writing memory) outlives the call's tasks; held here so
# it is not garbage-collected mid-write.
_after_call: set[asyncio.Task[None]] = set()


class RouteToolRunner:
    """A ``[[routes.tools]]`` entry: POST/call ``{call_sid, caller, tool, arguments}``; the JSON
    reply goes back to the model as the tool result."""

    def __init__(
        self,
        tool: RouteTool,
        waiting: WaitingSettings,
        call_sid: str,
        caller: str,
        keypad: Callable[[], list[str]] | None = None,
    ) -> None:
        self.tool = tool
        self.waiting = waiting
        self.call_sid = call_sid
        self.caller = caller
        self.keypad = keypad  # a sensitive keypad's entries, in the order typed (voicebot.agent.dtmf)
        self.endpoint = JsonEndpoint(url=tool.url, ref=tool.handler, headers=tool.headers)

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.tool.name, self.tool.description, self.tool.parameters)

    async def __call__(self, call: ToolCall, handle: CallHandle) -> str:
        payload = {"call_sid": self.call_sid, "caller": self.caller, "tool": call.name, "arguments": call.arguments}
        if self.keypad is not None:
            payload["keypad"] = self.keypad()
        try:
            result = await while_waiting(
                handle, self.waiting, self.tool.filler_after_s, self.endpoint.call(payload, self.tool.timeout_s)
            )
        except EndpointFailure as exc:
            log.error("call %s: tool %s failed: %s; the model is told so", self.call_sid, call.name, exc)
            return json.dumps({"error": f"{call.name} is unavailable right now"})
        return result if isinstance(result, str) else json.dumps(result)


class CallTools:
    def __init__(
        self,
        route: RouteConfig,
        config: AppConfig,
        call_sid: str,
        caller: str,
        deliver_twiml: DeliverTwiml,
    ) -> None:
        self.route = route
        self.call_sid = call_sid
        self.caller = caller
        self.call_control = CallControlTools(route.call_control, config.twilio, call_sid, deliver_twiml, route.redactor)
        self.memory = CallerMemory(config.memory) if route.memory else None
        self.memory_block: str | None = None
        # A sensitive keypad's entries: kept from the model, handed to the tools.
        self.keypad_entries: list[str] = []
        keypad = (lambda: list(self.keypad_entries)) if route.dtmf.sensitive else None
        self._prepared = False
        self._collector: DigitCollector | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._handlers: dict[str, Handler] = {}
        self._specs: list[ToolSpec] = []
        if route.reasoning == "builtin":
            for tool in route.tools:
                runner = RouteToolRunner(tool, route.waiting, call_sid, caller, keypad)
                self._add(runner.spec, runner)
                self._closers.append(runner.endpoint.aclose)
        else:
            agent = AgentTool(route.reasoning, route.waiting, call_sid, caller, keypad)
            self._add(ASK_AGENT, agent)
            self._closers.append(agent.endpoint.aclose)
        handlers = {"transfer_call": self.call_control.transfer_call, "end_call": self.call_control.end_call}
        for spec in self.call_control.specs():
            self._add(spec, handlers[spec.name])

    def _add(self, spec: ToolSpec, handler: Handler) -> None:
        self._specs.append(spec)
        self._handlers[spec.name] = handler

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(self._specs)

    async def prepare(self) -> None:
        """Call-start work that needs I/O (the caller's memory); once per call, so a reopened
        session (recovery, renewal) gets the same instructions without another read."""
        if self._prepared:
            return
        self._prepared = True
        if self.memory is not None:
            self.memory_block = await self.memory.recall(self.caller)

    def instructions(self) -> str:
        parts = [self.route.instructions]
        if self.route.reasoning != "builtin":
            parts.insert(0, AGENT_INSTRUCTIONS)
        parts.append(call_control_instructions(self.route.call_control))
        if self.memory_block:
            parts.append(self.memory_block)
        return "\n\n".join(p for p in parts if p)

    # -- the bridge's hooks --------------------------------------------------------------

    async def __call__(self, call: ToolCall, handle: CallHandle) -> str:
        handler = self._handlers.get(call.name)
        if handler is None:
            log.warning("call %s: model called unknown tool %r", self.call_sid, call.name)
            return json.dumps({"error": f"no tool named {call.name!r}; available: {', '.join(self._handlers)}"})
        return await handler(call, handle)

    async def dtmf(self, digit: str, handle: CallHandle) -> None:
        if self._collector is None:
            # A caller turn: providers transcribe audio, not text turns, so the handle puts the
            # keypad entry into the call's transcript, where the agent and caller memory see it.
            self._collector = DigitCollector(
                self.route.dtmf, handle.add_caller_turn, self.call_sid, self.keypad_entries.append
            )
        self._collector.press(digit)

    # -- after the call ------------------------------------------------------------------

    def call_ended(self, summary: CallSummary) -> asyncio.Task[None]:
        """Stop timers and pending actions; remember the call (in the background)."""
        if self._collector is not None:
            self._collector.close()
        self.call_control.cancel()
        task = asyncio.ensure_future(self._finish(summary))
        _after_call.add(task)
        task.add_done_callback(_after_call.discard)
        return task

    async def _finish(self, summary: CallSummary) -> None:
        for close in self._closers:
            try:
                await close()
            except Exception as exc:
                log.debug("call %s: closing a tool client: %r", self.call_sid, exc)
        if self.memory is not None:
            # Memory keeps what the route lets it: its redactor masks every turn first.
            redact = self.route.redactor
            turns = [Turn(t.role, redact(t.text)) for t in summary.transcript]
            await self.memory.remember(self.caller, self.call_sid, self.route.name, summary.outcome.value, turns)
