"""Route keys for reasoning, tools, call control, DTMF and memory: validation with key paths,
and what a call's tool set (specs, instructions, dispatch) is made of in each mode."""

from __future__ import annotations

import json
from typing import Any

import pytest

from s2s.events import ToolCall
from voicebot.agent.agent import AGENT_INSTRUCTIONS, EndpointFailure, answer_of
from voicebot.agent.call_control import transfer_twiml
from voicebot.agent.registry import CallTools
from voicebot.config import AppConfig, ConfigError, load_config_text

BASE = """
[twilio]
validate_signatures = false

[providers.parrot]
type = "echo"

[[routes]]
name = "desk"
providers = ["parrot"]
instructions = "Be brief."
"""


def load(extra: str) -> AppConfig:
    return load_config_text(BASE + extra)


def issues(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(extra)
    return [str(issue) for issue in caught.value.issues]


async def never_delivered(call_sid: str, twiml: str, use_rest: bool) -> bool:
    raise AssertionError("no test here ends or transfers a call")


def tools_for(config: AppConfig, caller: str = "+15550001111") -> CallTools:
    return CallTools(config.routes[0], config, "CA123", caller, never_delivered)


def test_defaults_are_builtin_with_no_tools_and_no_memory() -> None:
    config = load("")
    route = config.routes[0]
    assert route.reasoning == "builtin" and route.tools == [] and route.memory is False
    tools = tools_for(config)
    assert tools.specs == ()
    assert tools.instructions() == "Be brief."
    assert route.dtmf.inter_digit_timeout_ms == 1500 and route.dtmf.finish_on == "#"
    assert config.memory.retention_days == 30


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('reasoning = { agent_url = "https://a.example/x", agent = "m:f" }', "set exactly one of agent_url or agent"),
        ("reasoning = {}", "set exactly one of agent_url or agent"),
        ('reasoning = { agent = "not a ref" }', "package.module:callable"),
        ('reasoning = { agent_url = "ftp://a.example" }', "http(s)://"),
        ('reasoning = "smart"', "routes[1].reasoning"),
        ('call_control = { transfer = { sales = "5551234" } }', "not an E.164 number"),
        ('tools = [{ name = "end_call", description = "x", handler = "m:f" }]', "built-in tool name"),
        ('tools = [{ name = "t", description = "x" }]', "set exactly one of url or handler"),
        ('tools = [{ name = "t", description = "x", handler = "m:f", parameters = { type = "string" } }]', "object"),
        ("dtmf = { inter_digit_timeout_ms = 10 }", "routes[1].dtmf.inter_digit_timeout_ms"),
    ],
)
def test_bad_route_keys_are_reported_with_their_path(extra: str, expected: str) -> None:
    found = issues(extra)
    assert any(expected in issue for issue in found), found
    assert all(issue.startswith("routes[1]") for issue in found), found


def test_bad_memory_retention_is_reported() -> None:
    assert any(i.startswith("memory.retention_days") for i in issues("\n[memory]\nretention_days = 0\n"))


def test_agent_mode_offers_only_ask_agent_plus_call_control() -> None:
    config = load(
        """
reasoning = { agent_url = "https://agent.example/ask" }
tools = [{ name = "lookup", description = "x", handler = "m:f" }]
call_control = { end_call = true, transfer = { sales = "+15551230000" } }
"""
    )
    tools = tools_for(config)
    assert [s.name for s in tools.specs] == ["ask_agent", "transfer_call", "end_call"]
    transfer = tools.specs[1]
    assert transfer.parameters["properties"]["to"]["enum"] == ["sales"]
    text = tools.instructions()
    assert text.startswith(AGENT_INSTRUCTIONS)
    assert "Be brief." in text and "transfer_call" in text and "end_call" in text


def test_builtin_mode_offers_the_route_tools() -> None:
    params: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}}}
    config = load(
        'tools = [{ name = "lookup", description = "Find it.", url = "http://x.example/t", '
        'parameters = { type = "object", properties = { n = { type = "integer" } } } }]'
    )
    [spec] = tools_for(config).specs
    assert (spec.name, spec.description, spec.parameters) == ("lookup", "Find it.", params)


async def test_an_unknown_tool_gets_an_error_naming_the_available_ones() -> None:
    tools = tools_for(load("call_control = { end_call = true }"))
    output = json.loads(await tools(ToolCall("c1", "launch_rockets", {}), None))  # type: ignore[arg-type]
    assert output["error"] == "no tool named 'launch_rockets'; available: end_call"


async def test_transfer_to_a_destination_off_the_allow_list_is_refused() -> None:
    tools = tools_for(load('call_control = { transfer = { sales = "+15551230000" } }'))
    output = json.loads(await tools(ToolCall("c1", "transfer_call", {"to": "+15559999999"}), None))  # type: ignore[arg-type]
    assert output["error"] == "cannot transfer to '+15559999999'; allowed: sales"
    assert tools.call_control.destination("SALES") == "+15551230000"
    assert tools.call_control.destination("+15551230000") == "+15551230000"


def test_transfer_twiml_dials_numbers_and_sip_uris() -> None:
    assert "<Dial><Number>+15551230000</Number></Dial>" in transfer_twiml("+15551230000")
    assert "<Dial><Sip>sip:desk@pbx.example.com</Sip></Dial>" in transfer_twiml("sip:desk@pbx.example.com")


@pytest.mark.parametrize("reply", [{"answer": "  Yes.  "}, "Yes."])
def test_agent_answers_are_strings_or_answer_objects(reply: Any) -> None:
    assert answer_of(reply) == "Yes."


@pytest.mark.parametrize("reply", [{"answer": ""}, {"answer": 42}, {"text": "Yes."}, ["Yes."], None])
def test_malformed_agent_answers_are_failures(reply: Any) -> None:
    with pytest.raises(EndpointFailure, match="malformed answer"):
        answer_of(reply)
