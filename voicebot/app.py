"""The ASGI application: routes only; behaviour lives in telephony/ and the runtime."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from telephony import webhook
from telephony.media_endpoint import media_stream
from transcoding.pipeline import prewarm
from voicebot.runtime import Runtime


async def healthz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    return JSONResponse({"status": "ok", "active_calls": len(runtime.active)})


def create_app(runtime: Runtime) -> Starlette:
    prewarm()
    app = Starlette(
        routes=[
            Route("/twilio/voice", webhook.voice, methods=["POST"]),
            Route("/twilio/status", webhook.status, methods=["POST"]),
            Route(webhook.STREAM_ENDED_PATH, webhook.stream_ended, methods=["POST"]),
            WebSocketRoute(webhook.MEDIA_PATH, media_stream),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    app.state.runtime = runtime
    return app
