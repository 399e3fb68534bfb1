"""Replacing a live call's TwiML through Twilio's REST API (``calls(sid).update(twiml=…)``).

Twilio ends the call's media stream itself and runs the new TwiML at once, wherever the
call's HTTP requests would have gone: unlike the TwiML after ``<Connect>``
(``/twilio/stream-ended``), it does not depend on Twilio's next request reaching the same
server instance. Used for transfers (voicebot.agent.call_control) and for the apology when
a draining instance ends its remaining calls (voicebot.server.drain). ``api_base_url`` points the
client elsewhere (a local fake in tests)."""

from __future__ import annotations

from typing import Any

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

REST_TIMEOUT_S = 5.0


async def update_call_twiml(
    account_sid: str,
    auth_token: str | None,
    call_sid: str,
    twiml: str,
    *,
    api_base_url: str | None = None,
    timeout_s: float = REST_TIMEOUT_S,
) -> None:
    """Raises the ``twilio`` client's errors (refused, unreachable, timed out)."""
    await update_call(account_sid, auth_token, call_sid, api_base_url=api_base_url, timeout_s=timeout_s, twiml=twiml)


async def update_call(
    account_sid: str,
    auth_token: str | None,
    call_sid: str,
    *,
    api_base_url: str | None = None,
    timeout_s: float = REST_TIMEOUT_S,
    **params: str,
) -> None:
    """``calls(sid).update`` with ``params`` (``twiml``, ``status``, ``url``…). Raises the
    ``twilio`` client's errors."""
    http = AsyncTwilioHttpClient(timeout=timeout_s)
    client = Client(account_sid, auth_token, http_client=http)
    if api_base_url:
        client.api.base_url = api_base_url
    try:
        await client.calls(call_sid).update_async(**params)
    finally:
        await http.close()


async def cancel_call(
    account_sid: str,
    auth_token: str | None,
    call_sid: str,
    *,
    api_base_url: str | None = None,
    timeout_s: float = REST_TIMEOUT_S,
) -> None:
    """Stop a call that is still queued or ringing (``calls(sid).update(status="canceled")``,
    https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource). Raises the
    ``twilio`` client's errors."""
    http = AsyncTwilioHttpClient(timeout=timeout_s)
    client = Client(account_sid, auth_token, http_client=http)
    if api_base_url:
        client.api.base_url = api_base_url
    try:
        await client.calls(call_sid).update_async(status="canceled")
    finally:
        await http.close()


async def create_call(
    account_sid: str,
    auth_token: str | None,
    params: dict[str, Any],
    *,
    api_base_url: str | None = None,
    timeout_s: float = REST_TIMEOUT_S,
) -> tuple[str, str]:
    """Place a call (``calls.create``, https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource);
    ``params`` are ``create_async``'s keyword arguments. Returns the CallSid and Twilio's status
    (``queued``). Raises the ``twilio`` client's errors."""
    http = AsyncTwilioHttpClient(timeout=timeout_s)
    client = Client(account_sid, auth_token, http_client=http)
    if api_base_url:
        client.api.base_url = api_base_url
    try:
        call = await client.calls.create_async(**params)
    finally:
        await http.close()
    return str(call.sid), str(call.status)
