"""Twilio's callbacks for outbound calls (voicebot.calls.outbound): the answer (TwiML that
connects the media stream), call status and the AMD verdict. Each is signed like the voice
webhook (:func:`telephony.webhook.read_signed_form`); ``?call=OB…`` names our reservation."""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from s2s.call_context import call_sid_var
from telephony.application import Declined
from telephony.signature import websocket_url
from telephony.twiml import connect_stream
from telephony.webhook import MEDIA_PATH, STATUS_PATH, STREAM_ENDED_PATH, read_signed_form
from voicebot.calls.outbound import AMD_PATH, ANSWER_PATH, OutboundCalls
from voicebot.calls.outbound import STATUS_PATH as OUTBOUND_STATUS_PATH

log = logging.getLogger(__name__)


def _twiml(body: str) -> Response:
    return Response(body, media_type="text/xml")


def _store_down(what: str, params: dict[str, str], exc: RedisError) -> Response:
    log.error("outbound %s for %s: the call store is unreachable (%r)", what, params.get("CallSid", "?")[:40], exc)
    return PlainTextResponse("call store unreachable", status_code=503)


async def answer(request: Request) -> Response:
    received = time.monotonic()
    signed = await read_signed_form(request)
    if isinstance(signed, Response):
        return signed
    params, base = signed
    if not params.get("CallSid"):
        return PlainTextResponse("missing CallSid", status_code=400)
    call_sid_var.set(params["CallSid"])
    outbound: OutboundCalls = request.app.state.outbound
    try:
        plan = await outbound.answer(request.query_params.get("call", ""), params, received)
    except RedisError as exc:
        return _store_down("answer", params, exc)
    if isinstance(plan, Declined):
        return _twiml(plan.twiml)
    return _twiml(
        connect_stream(
            websocket_url(base) + MEDIA_PATH,
            {"token": plan.token},
            after_url=base + STREAM_ENDED_PATH,
            status_url=base + STATUS_PATH,
        )
    )


async def status(request: Request) -> Response:
    signed = await read_signed_form(request)
    if isinstance(signed, Response):
        return signed
    params, _ = signed
    outbound: OutboundCalls = request.app.state.outbound
    try:
        known = await outbound.status(request.query_params.get("call", ""), params)
    except RedisError as exc:
        return _store_down("status", params, exc)
    if not known:
        log.warning("outbound status callback for unknown call %s", params.get("CallSid", "?")[:40])
        return PlainTextResponse("unknown call", status_code=404)
    return Response(status_code=204)


async def amd(request: Request) -> Response:
    signed = await read_signed_form(request)
    if isinstance(signed, Response):
        return signed
    params, _ = signed
    outbound: OutboundCalls = request.app.state.outbound
    try:
        known = await outbound.amd_result(request.query_params.get("call", ""), params)
    except RedisError as exc:
        return _store_down("AMD verdict", params, exc)
    if not known:
        log.warning("AMD callback for unknown call %s", params.get("CallSid", "?")[:40])
        return PlainTextResponse("unknown call", status_code=404)
    return Response(status_code=204)


def routes() -> list[Route]:
    return [
        Route(ANSWER_PATH, answer, methods=["POST"]),
        Route(OUTBOUND_STATUS_PATH, status, methods=["POST"]),
        Route(AMD_PATH, amd, methods=["POST"]),
    ]
