"""The operators' API: ``/calls``, behind a bearer token (``[ops] token``).

``GET /calls`` lists the calls this instance is bridging right now: CallSid, route, the
provider currently serving it, call state, duration, barge-ins and provider cost so far
(``cost_usd``, ``usage``: voicebot.calls.cost). It reads the
runtime's live bridges and changes nothing.

``POST /calls`` places an outbound call (voicebot.calls.outbound): JSON ``{"to", "route",
"from"?, "variables"?}`` in; ``201 {"call_sid", "status", ...}`` out, or the reason it was not
placed (``503`` when the route's providers are full). ``GET /calls/{sid}`` shows one call:
an outbound call placed by any instance of the fleet (its state is in the shared store,
voicebot.calls.outbound_store), or an inbound one bridged here.

Every route here goes through :func:`require_token`. With no token
configured the API is off and answers 404, so an instance never exposes it by accident.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from telephony.signature import external_base_url
from voicebot.calls.outbound import NotPlaced, OutboundCalls
from voicebot.calls.runtime import Runtime

Handler = Callable[[Request], Awaitable[Response]]


def require_token(handler: Handler) -> Handler:
    """404 while ``[ops] token`` is unset; 401 (with ``WWW-Authenticate: Bearer``) unless the
    request's ``Authorization: Bearer`` matches it (constant-time comparison)."""

    async def guarded(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        token = runtime.config.ops.token
        if token is None:
            return JSONResponse({"error": "the ops API is off: set [ops] token"}, status_code=404)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()
        ):
            return JSONResponse(
                {"error": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="voicebot ops"'},
            )
        return await handler(request)

    return guarded


def call_rows(runtime: Runtime) -> list[dict[str, Any]]:
    rows = []
    for call_sid, bridge in list(runtime.active.items()):
        summary = bridge.summary
        plan = runtime.plan_of(call_sid)
        cost = plan.cost if plan is not None else None
        rows.append(
            {
                "call_sid": call_sid,
                "route": summary.route,
                "provider": getattr(bridge.session, "provider_name", None),
                "state": bridge.state.state.value,
                "duration_s": round(bridge.clock() - summary.started_at, 1),
                "barge_ins": len(summary.barge_ins),
                # provider use so far, priced by [pricing] (voicebot.calls.cost)
                "cost_usd": round(cost.cost_usd, 6) if cost is not None else None,
                "usage": cost.total().row() if cost is not None else {},
            }
        )
    return sorted(rows, key=lambda row: -row["duration_s"])


async def list_calls(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    return JSONResponse({"calls": call_rows(runtime), "draining": runtime.draining})


class PlaceCall(BaseModel):
    """The body of ``POST /calls``."""

    model_config = {"extra": "forbid", "populate_by_name": True}

    to: str = Field(pattern=r"^(\+[1-9][0-9]{6,14}|sip:\S+|client:\S+)$", description="E.164, sip: or client:")
    route: str = Field(min_length=1, max_length=200)
    from_: str | None = Field(default=None, alias="from", pattern=r"^(\+[1-9][0-9]{6,14}|client:\S+)$")
    variables: dict[str, str] = Field(default_factory=dict, max_length=50)


async def place_call(request: Request) -> Response:
    try:
        body = PlaceCall.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "bad request", "problems": problems}, status_code=400)
    runtime: Runtime = request.app.state.runtime
    outbound: OutboundCalls = request.app.state.outbound
    base = external_base_url(runtime.config.server.public_url, request.headers, request.url.scheme)
    try:
        call = await outbound.place(body.route, body.to, body.from_, body.variables, base)
    except NotPlaced as exc:
        return JSONResponse({"error": exc.reason, "placed": False}, status_code=exc.status)
    return JSONResponse(call.row(), status_code=201)


async def show_call(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    outbound: OutboundCalls = request.app.state.outbound
    sid = request.path_params["sid"]
    live = next((row for row in call_rows(runtime) if row["call_sid"] == sid), None)
    try:
        call = await outbound.store.find(sid)
    except RedisError as exc:
        return JSONResponse({"error": f"the call store is unreachable: {exc}"}, status_code=503)
    if call is None and live is None:
        return JSONResponse({"error": f"no call {sid[:40]!r} here"}, status_code=404)
    row = call.row() if call is not None else {"call_sid": sid, "direction": "inbound"}
    if live is not None:
        row |= {key: live[key] for key in ("state", "duration_s", "barge_ins", "cost_usd", "usage")}
    return JSONResponse(row)


def routes() -> list[Route]:
    return [
        Route("/calls", require_token(list_calls), methods=["GET"]),
        Route("/calls", require_token(place_call), methods=["POST"]),
        Route("/calls/{sid}", require_token(show_call), methods=["GET"]),
    ]
