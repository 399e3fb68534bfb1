"""A route's tools on every provider, through the running server and each provider's fake:
the route declares a tool once (neutral ToolSpec); each provider must put it on the wire in
its own format; the fake calls it on cue; the route's handler runs and its output reaches
the fake, which answers with speech the caller hears. And a route greeting is the first
thing a silent caller hears, on the echo line and on each provider.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from s2s.echo import GREETING_TONES
from s2s.nova_sonic.transport import register_stream_factory, unregister_stream_factory
from tests.fakes.gemini_live_fake import GeminiLiveFake
from tests.fakes.nova_sonic_fake import FakeNovaModel, FakeNovaService, ToolPlan
from tests.fakes.openai_realtime_fake import FakeOptions, FakeRealtimeServer, ToolCue
from tests.support.audio import active_segments, dominant_frequency, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, RunningServer, running_server

PROVIDERS = ["openai_realtime", "grok", "gemini_live", "nova_sonic"]
TOOL_ARGS = {"day": "sunday"}
HOURS_PARAMETERS = {
    "type": "object",
    "properties": {"day": {"type": "string", "description": "day of the week"}},
    "required": ["day"],
}
handled: list[dict[str, Any]] = []


async def opening_hours(request: dict[str, Any]) -> dict[str, Any]:
    """The route's tool (``handler = "tests.test_tools_providers:opening_hours"``)."""
    handled.append(request)
    return {"day": request["arguments"]["day"], "hours": "10:00-16:00"}


ROUTE_TOOLS = f"""
[[routes.tools]]
name = "opening_hours"
description = "Opening hours of the bakery on a given day."
handler = "tests.test_tools_providers:opening_hours"
parameters = {json.dumps(HOURS_PARAMETERS).replace('":', '" =')}

[routes.call_control]
end_call = true
"""


def config(provider_table: str, route_keys: str = "") -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

{provider_table}

[[routes]]
name = "bakery"
providers = ["voice"]
instructions = "You speak for Ada's Bakery."
{route_keys}
"""


def lower_types(schema: Any) -> Any:
    """Gemini's Schema spells types in capitals (``OBJECT``, ``STRING``); same schema otherwise."""
    if isinstance(schema, dict):
        return {k: v.lower() if k == "type" else lower_types(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [lower_types(v) for v in schema]
    return schema


@dataclass
class Harness:
    """One provider fake behind a running server, read in provider-neutral terms."""

    server: RunningServer
    declared: Callable[[], list[tuple[str, str, dict[str, Any]]]]  # (name, description, parameters)
    # [] until the call has reached the provider: tests poll it from the call's start.
    tool_outputs: Callable[[], list[str]]


@contextlib.asynccontextmanager
async def harness(
    provider: str, route_keys: str, tool_call: tuple[str, dict[str, Any]] | None
) -> AsyncIterator[Harness]:
    if provider in ("openai_realtime", "grok"):
        dialect = "openai" if provider == "openai_realtime" else "grok"
        cue = ToolCue(*tool_call) if tool_call else None
        options = FakeOptions(dialect=dialect, tone_hz=500.0, response_ms=500, tool_call=cue)  # type: ignore[arg-type]
        async with FakeRealtimeServer(options) as fake:
            table = f'[providers.voice]\ntype = "{provider}"\napi_key = "test-key"\nbase_url = "{fake.base_url}"'
            async with running_server(config(table, route_keys)) as server:
                yield Harness(
                    server,
                    lambda: [
                        (t["name"], t["description"], t["parameters"]) for t in fake.last.session_updates[0]["tools"]
                    ],
                    lambda: [o["output"] for conn in fake.connections[-1:] for o in conn.tool_outputs],
                )
    elif provider == "gemini_live":
        async with GeminiLiveFake(reply_ms=500.0, reply_freqs=(500.0,)) as gemini:
            if tool_call:
                gemini.tool_call_next = tool_call
            table = (
                f'[providers.voice]\ntype = "gemini_live"\napi_key = "test-key"\n'
                f'base_url = "{gemini.base_url}"\nca_file = "{gemini.ca_file}"'
            )
            async with running_server(config(table, route_keys)) as server:
                yield Harness(
                    server,
                    lambda: [
                        (d["name"], d["description"], lower_types(d["parameters"]))
                        for d in gemini.last.setup["tools"][0]["functionDeclarations"]
                    ],
                    lambda: [
                        json.dumps(r["response"])
                        for conn in gemini.connections[-1:]
                        for t in conn.tool_responses
                        for r in t["functionResponses"]
                    ],
                )
    else:
        plan = ToolPlan(*tool_call) if tool_call else None
        service = FakeNovaService(lambda: FakeNovaModel(reply_ms=500, reply_hz=500, tool=plan))
        register_stream_factory("tools-tests", service)
        table = (
            '[providers.voice]\ntype = "nova_sonic"\nregion = "us-east-1"\n'
            'endpoint_url = "memory://tools-tests"\nconnect_timeout_s = 10'
        )
        try:
            async with running_server(config(table, route_keys)) as server:
                yield Harness(
                    server,
                    lambda: [
                        (
                            t["toolSpec"]["name"],
                            t["toolSpec"]["description"],
                            json.loads(t["toolSpec"]["inputSchema"]["json"]),  # Nova: schema as a JSON string
                        )
                        for t in service.models[0].tools_declared
                    ],
                    lambda: [output for model in service.models[:1] for _, output in model.tool_results],
                )
        finally:
            unregister_stream_factory("tools-tests")
            service.shutdown()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_route_tool_round_trip_on_each_provider(provider: str) -> None:
    handled.clear()
    cue = ("opening_hours", TOOL_ARGS)
    async with harness(provider, ROUTE_TOOLS, cue) as h, h.server.twilio().call() as call:
        await call.pause(300)
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: bool(h.tool_outputs()), timeout=10)
        # Declared once in the route, on the wire in this provider's own shape.
        declared = h.declared()
        assert [name for name, _, _ in declared] == ["opening_hours", "end_call"]
        assert declared[0] == ("opening_hours", "Opening hours of the bakery on a given day.", HOURS_PARAMETERS)
        # The route's handler ran with the model's arguments; its output went back verbatim.
        [request] = handled
        assert request["call_sid"] == call.call_sid and request["arguments"] == TOOL_ARGS
        assert [json.loads(o) for o in h.tool_outputs()] == [{"day": "sunday", "hours": "10:00-16:00"}]
        # The model's spoken answer after the result reaches the caller.
        await call.wait_for(lambda: call.received_media_ms() >= 480, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        start, end = max(active_segments(call.heard_pcm(), 8000, -35), key=lambda s: s[1] - s[0])
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(500, abs=10)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_greeting_is_the_first_thing_a_silent_caller_hears(provider: str) -> None:
    async with (
        harness(provider, 'greeting = "Thanks for calling Ada\'s Bakery."', None) as h,
        h.server.twilio().call() as call,
    ):
        await call.wait_for(lambda: call.received_media_ms() >= 480, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        segments = active_segments(call.heard_pcm(), 8000, -35)
        assert segments, "the caller heard no greeting"
        start, end = segments[0]
        assert start < 3000  # spoke first: the caller has said nothing at all
        assert end - start == pytest.approx(500, abs=50)
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(500, abs=10)


async def bakery_agent(request: dict[str, Any]) -> dict[str, str]:
    """The route's external agent (``reasoning = { agent = "tests.test_tools_providers:bakery_agent" }``)."""
    handled.append(request)
    return {"answer": "We bake rye bread on Sundays."}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_agent_reasoning_on_each_provider(provider: str) -> None:
    handled.clear()
    route = 'reasoning = { agent = "tests.test_tools_providers:bakery_agent" }'
    cue = ("ask_agent", {"question": "Do you have rye bread?"})
    async with harness(provider, route, cue) as h, h.server.twilio().call(from_="+15558887777") as call:
        await call.pause(300)
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: bool(h.tool_outputs()), timeout=10)
        assert [name for name, _, _ in h.declared()] == ["ask_agent"]
        [request] = handled
        assert (request["call_sid"], request["caller"]) == (call.call_sid, "+15558887777")
        assert request["question"] == "Do you have rye bread?"
        assert [json.loads(o) for o in h.tool_outputs()] == [{"answer": "We bake rye bread on Sundays."}]
        await call.wait_for(lambda: call.received_media_ms() >= 480, timeout=8)


async def test_echo_greeting_chime_plays_first() -> None:
    table = '[providers.voice]\ntype = "echo"'
    route = 'greeting = "Thanks for calling."'
    async with running_server(config(table, route)) as server, server.twilio().call() as call:
        total = sum(ms for _, ms in GREETING_TONES)
        await call.wait_for(lambda: call.received_media_ms() >= total, timeout=5)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        start, end = active_segments(call.heard_pcm(), 8000, -35)[0]
        assert start < 500 and end - start == pytest.approx(total, abs=40)
        at = start
        for hz, ms in GREETING_TONES:
            assert dominant_frequency(call.heard_pcm(at + 20, at + ms - 20), 8000) == pytest.approx(hz, abs=10)
            at += ms
