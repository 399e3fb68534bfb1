"""External-agent reasoning through the running server: the echo line calls ``ask_agent`` on
cue, the bridge asks a real local HTTP agent (or a Python callable), and the caller is never
left in silence: slow agents get a spoken filler, failing ones a graceful fallback."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from s2s.echo import EchoSession
from tests.fakes.twilio_rest_fake import loopback_server
from tests.support.live_call import echo_of, last_heard_ms
from tests.support.server import echo_line_config, running_server
from voicebot.agent.agent import AGENT_INSTRUCTIONS, ASK_AGENT, FILLER_PROMPT
from voicebot.agent.config import DEFAULT_FALLBACK
from voicebot.devtools.twilio_sim import SimulatedCall

QUESTION = "When are you open on Sunday?"
ANSWER = "On Sunday we open at ten and close at four."


@dataclass
class LocalAgent:
    """A business agent on loopback. ``mode`` picks how it behaves."""

    mode: str = "ok"
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.requests.append(await request.json())
        await asyncio.sleep(self.delay_s)
        if self.mode == "error":
            return PlainTextResponse("upstream exploded", status_code=500)
        if self.mode == "malformed":
            return JSONResponse({"text": ANSWER})
        if self.mode == "not-json":
            return PlainTextResponse("<html>Bad gateway</html>")
        return JSONResponse({"answer": ANSWER})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/agent", self.handle, methods=["POST"])])


async def front_desk_agent(request: dict[str, Any]) -> dict[str, str]:
    """The callable form of the agent contract (``agent = "tests.test_agent:front_desk_agent"``)."""
    return {"answer": f"You asked: {request['question']} Caller {request['caller']}."}


async def broken_agent(request: dict[str, Any]) -> dict[str, str]:
    raise RuntimeError("database down")


def agent_config(reasoning: str) -> str:
    cue = f'{{ on_text = "entered 5", name = "ask_agent", arguments = {{ question = "{QUESTION}" }}, say_ms = 300 }}'
    route = f"""instructions = "You speak for Ada's Bakery."
reasoning = {reasoning}

[routes.dtmf]
inter_digit_timeout_ms = 200"""
    return echo_line_config("shop", parrot=f"speed = 20\ntool_cues = [{cue}]", route_extra=route)


async def ask(call: SimulatedCall, echo: EchoSession, timeout: float = 10.0) -> dict[str, Any]:
    """Press 5# (the cue), wait for the tool result the bridge sent back, decode it."""
    await call.press("5")
    await call.press("#")
    await call.wait_for(lambda: bool(echo.tool_results), timeout=timeout)
    call_id, output = echo.tool_results[0]
    assert call_id.startswith("echo-call-")
    return dict(json.loads(output))


async def test_agent_answer_goes_back_to_the_model_with_the_call_context() -> None:
    agent = LocalAgent()
    async with loopback_server(agent.app()) as url:
        config = agent_config(f'{{ agent_url = "{url}/agent" }}')
        async with running_server(config) as server, server.twilio().call(from_="+15551112222") as call:
            echo = await echo_of(server, call)
            # The model is the voice only: one tool, and instructions to use it.
            assert echo.ctx.tools == (ASK_AGENT,)
            assert echo.ctx.instructions.startswith(AGENT_INSTRUCTIONS)
            assert "You speak for Ada's Bakery." in echo.ctx.instructions
            result = await ask(call, echo)
    assert result == {"answer": ANSWER}
    [request] = agent.requests
    assert request["call_sid"] == call.call_sid
    assert request["caller"] == "+15551112222"
    assert request["question"] == QUESTION
    assert request["transcript"] == [{"role": "caller", "text": "The caller entered 5, then # on the phone keypad."}]
    assert FILLER_PROMPT not in echo.received_text  # a fast agent needs no filler


async def test_slow_agent_gets_a_filler_within_a_second_of_silence() -> None:
    agent = LocalAgent(delay_s=2.2)
    async with loopback_server(agent.app()) as url:
        config = agent_config(f'{{ agent_url = "{url}/agent", filler_after_s = 0.7, timeout_s = 6 }}')
        async with running_server(config) as server, server.twilio().call() as call:
            echo = await echo_of(server, call)
            await call.press("5")
            await call.press("#")
            await call.wait_for(lambda: FILLER_PROMPT in echo.received_text, timeout=5)
            filler_at = call.now_ms()
            # The "let me check" tone (300 ms) was sent at 20x real time, then silence: the
            # filler is asked for ~0.7 s after the caller last *heard* bot audio.
            silence_ms = filler_at - last_heard_ms(call)
            assert 650 <= silence_ms <= 1000
            await call.wait_for(lambda: bool(echo.tool_results), timeout=5)
            assert json.loads(echo.tool_results[0][1]) == {"answer": ANSWER}
            assert echo.received_text.count(FILLER_PROMPT) == 1


@pytest.mark.parametrize("mode", ["error", "malformed", "not-json"])
async def test_failing_agent_gives_a_spoken_fallback_and_the_call_goes_on(mode: str) -> None:
    agent = LocalAgent(mode=mode)
    async with loopback_server(agent.app()) as url:
        config = agent_config(f'{{ agent_url = "{url}/agent", fallback = "Sorry, the shop system is down." }}')
        async with running_server(config) as server, server.twilio().call() as call:
            echo = await echo_of(server, call)
            result = await ask(call, echo)
            assert result["say"] == "Sorry, the shop system is down."
            assert "error" in result
            await call.pause(300)
            assert not call.closed.is_set()
            assert server.runtime.active[call.call_sid].summary.outcome == "in-progress"


async def test_agent_timeout_gives_the_fallback_at_the_deadline() -> None:
    agent = LocalAgent(delay_s=10)
    async with loopback_server(agent.app()) as url:
        config = agent_config(f'{{ agent_url = "{url}/agent", timeout_s = 1.5, filler_after_s = 0.6 }}')
        async with running_server(config) as server, server.twilio().call() as call:
            echo = await echo_of(server, call)
            await call.press("5")
            await call.press("#")
            await call.wait_for(lambda: bool(echo.received_text), timeout=3)
            asked_at = call.now_ms()
            await call.wait_for(lambda: bool(echo.tool_results), timeout=5)
            waited = call.now_ms() - asked_at
            assert json.loads(echo.tool_results[0][1])["say"] == DEFAULT_FALLBACK
            assert 1400 <= waited <= 2100
            assert FILLER_PROMPT in echo.received_text


async def test_unreachable_agent_gives_the_fallback() -> None:
    async with loopback_server(LocalAgent().app()) as url:
        pass  # the port is closed again: connection refused
    config = agent_config(f'{{ agent_url = "{url}/agent" }}')
    async with running_server(config) as server, server.twilio().call() as call:
        result = await ask(call, await echo_of(server, call))
        assert result["say"] == DEFAULT_FALLBACK


async def test_python_callable_agent_has_the_same_contract() -> None:
    config = agent_config('{ agent = "tests.test_agent:front_desk_agent" }')
    async with running_server(config) as server, server.twilio().call(from_="+15553334444") as call:
        result = await ask(call, await echo_of(server, call))
    assert result == {"answer": f"You asked: {QUESTION} Caller +15553334444."}


@pytest.mark.parametrize("ref", ["tests.test_agent:broken_agent", "tests.test_agent:no_such_agent"])
async def test_a_failing_or_missing_callable_gives_the_fallback(ref: str) -> None:
    async with running_server(agent_config(f'{{ agent = "{ref}" }}')) as server, server.twilio().call() as call:
        result = await ask(call, await echo_of(server, call))
    assert result["say"] == DEFAULT_FALLBACK
