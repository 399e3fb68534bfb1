"""Twilio's HTTP webhooks: the voice webhook that answers a call with TwiML, the status
callback, and the TwiML Twilio fetches after our media stream ends. What a call gets is
the application's decision (:class:`telephony.application.CallApplication`)."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from s2s.call_context import call_sid_var
from telephony.application import CallApplication, Declined
from telephony.sids import malformed_sid
from telephony.signature import external_base_url, websocket_url
from telephony.twiml import connect_stream, hangup

log = logging.getLogger(__name__)

MEDIA_PATH = "/twilio/media"
STREAM_ENDED_PATH = "/twilio/stream-ended"
STATUS_PATH = "/twilio/status"


def _twiml(body: str) -> Response:
    return Response(body, media_type="text/xml")


async def read_signed_form(request: Request) -> tuple[dict[str, str], str] | Response:
    """The form parameters and our external base URL, or the error response to send."""
    app: CallApplication = request.app.state.calls
    limit = app.limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return PlainTextResponse("request body too large", status_code=413)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return PlainTextResponse("request body too large", status_code=413)
    try:
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body)))
    except (UnicodeDecodeError, ValueError) as exc:
        log.warning("webhook %s: unparseable body: %s", request.url.path, exc)
        return PlainTextResponse("body is not application/x-www-form-urlencoded", status_code=400)
    base = external_base_url(app.limits.public_url, request.headers, request.url.scheme)
    url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not app.signatures.webhook_ok(url, params, request.headers.get("x-twilio-signature")):
        log.warning(
            "webhook %s: rejected: bad or missing X-Twilio-Signature (checked against %s)", request.url.path, url
        )
        app.webhook_rejected("signature")
        return PlainTextResponse("invalid signature", status_code=403)
    bad = malformed_sid(params)
    if bad is not None:
        log.warning("webhook %s: refused: %s %.40r is not a Twilio SID", request.url.path, bad, params[bad])
        app.webhook_rejected("malformed")
        return PlainTextResponse(f"malformed {bad}", status_code=400)
    return params, base


async def voice(request: Request) -> Response:
    app: CallApplication = request.app.state.calls
    received = time.monotonic()
    if app.draining:
        # Shutting down (voicebot.server.drain): a 503 makes Twilio try the number's fallback URL,
        # i.e. another instance, instead of starting a call this one would have to cut.
        app.webhook_rejected("draining")
        log.info("voice webhook refused: draining for shutdown")
        return PlainTextResponse("draining", status_code=503, headers={"Retry-After": "5"})
    signed = await read_signed_form(request)
    if isinstance(signed, Response):
        return signed
    params, base = signed
    if not params.get("CallSid"):
        return PlainTextResponse("missing CallSid", status_code=400)
    call_sid_var.set(params["CallSid"])
    plan = await app.plan_call(params, received)
    if isinstance(plan, Declined):
        # Answered without a stream: the route's on_unavailable (or a no-route message).
        log.warning("call %s to %s: route %r declined: %s", plan.call_sid, params.get("To"), plan.route, plan.reason)
        app.webhook_rejected("no-route" if plan.route is None else "unavailable")
        return _twiml(plan.twiml)
    stream_url = websocket_url(base) + MEDIA_PATH
    return _twiml(
        connect_stream(
            stream_url, {"token": plan.token}, after_url=base + STREAM_ENDED_PATH, status_url=base + STATUS_PATH
        )
    )


async def stream_ended(request: Request) -> Response:
    app: CallApplication = request.app.state.calls
    signed = await read_signed_form(request)
    if isinstance(signed, Response):
        return signed
    params, _ = signed
    return _twiml(app.take_next_twiml(params.get("CallSid", "")) or hangup())


async def status(request: Request) -> Response:
    signed = await read_signed_form(request)
    if isinstance(signed, Response):
        return signed
    params, _ = signed
    call_sid = params.get("CallSid", "?")
    if params.get("StreamEvent") == "stream-error":
        # The media stream failed on Twilio's side (our WebSocket unreachable, refused, or
        # dropped): the caller may be hearing silence, so this is a warning, and counted.
        app: CallApplication = request.app.state.calls
        app.stream_error(call_sid, params.get("StreamError", ""))
        log.warning(
            "call %s: Twilio reports a media stream error on %s: %s",
            call_sid,
            params.get("StreamSid", "?"),
            params.get("StreamError", "(no detail)"),
        )
        return Response(status_code=204)
    log.info(
        "status callback for call %s: %s",
        call_sid,
        {k: v for k, v in params.items() if k in ("CallStatus", "StreamEvent", "StreamError", "CallDuration")},
    )
    return Response(status_code=204)
