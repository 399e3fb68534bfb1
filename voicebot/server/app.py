"""The ASGI application: routes only; behaviour lives in telephony/ and the runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from telephony import webhook
from telephony.application import CallApplication
from telephony.media_endpoint import media_stream
from transcoding.pipeline import prewarm
from voicebot.calls.outbound import OutboundCalls
from voicebot.calls.runtime import Runtime
from voicebot.privacy.retention import RetentionSweeper
from voicebot.server import calls_api, outbound_hooks, transfer_hooks
from voicebot.server.health import readiness
from voicebot.telemetry.install import install as install_telemetry
from voicebot.telemetry.setup import PROMETHEUS_CONTENT_TYPE, get_telemetry


async def healthz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    return JSONResponse({"status": "ok", "active_calls": len(runtime.active)})


async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    state = readiness(runtime)
    body = {"status": "ready" if state.ready else "not-ready", "reasons": state.reasons}
    return JSONResponse(body, status_code=200 if state.ready else 503)


async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the same OpenTelemetry metrics OTLP exports."""
    return Response(get_telemetry().prometheus_text(), media_type=PROMETHEUS_CONTENT_TYPE)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Work the server process does beside its requests: the retention sweep
    (voicebot.privacy.retention), at start and then periodically."""
    runtime: Runtime = app.state.runtime
    sweeper = RetentionSweeper(lambda: runtime.config)
    app.state.retention = sweeper
    task = asyncio.create_task(sweeper.run(), name="retention-sweep")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def create_app(runtime: Runtime) -> Starlette:
    prewarm()
    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/twilio/voice", webhook.voice, methods=["POST"]),
            Route("/twilio/status", webhook.status, methods=["POST"]),
            Route(webhook.STREAM_ENDED_PATH, webhook.stream_ended, methods=["POST"]),
            WebSocketRoute(webhook.MEDIA_PATH, media_stream),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *outbound_hooks.routes(),
            *transfer_hooks.routes(),
            *calls_api.routes(),
        ],
    )
    app.state.runtime = runtime
    app.state.outbound = OutboundCalls(runtime)
    calls: CallApplication = runtime  # what telephony's endpoints see of it
    app.state.calls = calls
    install_telemetry(runtime)
    return app
