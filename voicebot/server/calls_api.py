"""The operators' API: ``/calls``, behind a bearer token (``[ops] token``).

``GET /calls`` lists the calls this instance is bridging right now: CallSid, route, the
provider currently serving it, call state, duration and barge-ins so far. It reads the
runtime's live bridges and changes nothing.

Every route here goes through :func:`require_token`; issue 16's ``POST /calls`` (placing an
outbound call) belongs in :func:`routes` beside ``GET``, with the same guard. With no token
configured the API is off and answers 404, so an instance never exposes it by accident.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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
        rows.append(
            {
                "call_sid": call_sid,
                "route": summary.route,
                "provider": getattr(bridge.session, "provider_name", None),
                "state": bridge.state.state.value,
                "duration_s": round(bridge.clock() - summary.started_at, 1),
                "barge_ins": len(summary.barge_ins),
            }
        )
    return sorted(rows, key=lambda row: -row["duration_s"])


async def list_calls(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    return JSONResponse({"calls": call_rows(runtime), "draining": runtime.draining})


def routes() -> list[Route]:
    return [Route("/calls", require_token(list_calls), methods=["GET"])]
