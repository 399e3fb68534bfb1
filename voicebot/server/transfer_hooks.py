"""Twilio's callbacks about a warm transfer (voicebot.agent.warm_transfer): the person's call
status and the conference's ``participant-join``. Signed like the voice webhook
(:func:`telephony.webhook.read_signed_form`); ``?transfer=…`` names the waiting transfer."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from telephony.webhook import read_signed_form
from voicebot.agent.warm_transfer import TRANSFER_CALLBACKS, TRANSFER_PATH

log = logging.getLogger(__name__)


async def transfer_event(request: Request) -> Response:
    signed = await read_signed_form(request)
    if isinstance(signed, Response):
        return signed
    params, _ = signed
    if not TRANSFER_CALLBACKS.deliver(request.query_params.get("transfer", ""), params):
        # The transfer is over: the person's leg and the room report until they end.
        log.debug(
            "transfer callback after its transfer ended: %s",
            params.get("StatusCallbackEvent") or params.get("CallStatus"),
        )
    return Response(status_code=204)


def routes() -> list[Route]:
    return [Route(TRANSFER_PATH, transfer_event, methods=["POST"])]
