"""A route tool served over HTTP (``url = …``): the bridge POSTs the call context and the
model's arguments, and hands the JSON reply to the model; a failing endpoint becomes an
error result the model can voice, never a dead call."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.twilio_rest_fake import loopback_server
from tests.support.live_call import echo_of
from tests.support.server import echo_line_config, running_server


def tool_config(url: str) -> str:
    cue = '{ on_text = "entered 7", name = "order_status", arguments = { order = "A-17" } }'
    route = f"""
[[routes.tools]]
name = "order_status"
description = "Where an order is."
url = "{url}"
headers = {{ Authorization = "Bearer s3cret" }}
timeout_s = 2
parameters = {{ type = "object", properties = {{ order = {{ type = "string" }} }}, required = ["order"] }}

[routes.dtmf]
inter_digit_timeout_ms = 200"""
    return echo_line_config("orders", parrot=f"tool_cues = [{cue}]", route_extra=route)


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "http-500"])
async def test_route_tool_over_http(fail: bool) -> None:
    seen: list[tuple[dict[str, Any], str | None]] = []

    async def endpoint(request: Request) -> Response:
        seen.append((await request.json(), request.headers.get("authorization")))
        if fail:
            return PlainTextResponse("boom", status_code=500)
        return JSONResponse({"order": "A-17", "status": "out for delivery"})

    app = Starlette(routes=[Route("/status", endpoint, methods=["POST"])])
    async with (
        loopback_server(app) as base,
        running_server(tool_config(base + "/status")) as server,
        server.twilio().call() as call,
    ):
        echo = await echo_of(server, call)
        await call.press("7")
        await call.wait_for(lambda: bool(echo.tool_results), timeout=5)
        output = json.loads(echo.tool_results[0][1])
        assert not call.closed.is_set()
    [(payload, auth)] = seen
    assert auth == "Bearer s3cret"
    assert payload == {
        "call_sid": call.call_sid,
        "caller": "+15557654321",
        "tool": "order_status",
        "arguments": {"order": "A-17"},
    }
    if fail:
        assert output == {"error": "order_status is unavailable right now"}
    else:
        assert output == {"order": "A-17", "status": "out for delivery"}
