"""The media stream token: what the voice webhook decided for a call, signed, so that any
instance of a fleet can take the call's media stream.

Twilio's voice webhook and its Media Stream WebSocket are separate connections; behind a
plain Service/Ingress they may reach different instances. The webhook therefore sends the
call's plan itself in ``<Parameter name="token">`` rather than a key into its own memory:
``base64url(JSON) "." base64url(HMAC-SHA256)`` over the CallSid, the route name, the
admitted provider chain (in the order the webhook decided), caller, called, the issue time
and a nonce. The instance the stream reaches checks the MAC, the age
(``server.stream_connect_timeout_s``) and that the ``start`` frame's callSid is the signed
one, then rebuilds the plan from its own config (:meth:`voicebot.calls.claim.StreamClaims.claim`).

Twilio caps a ``<Parameter>``'s name + value below 500 characters (TwiML ``<Stream>``, custom
parameters: https://www.twilio.com/docs/voice/twiml/stream#custom-parameters): the payload
is a JSON array, not an object, and a token that would still be too long (caller or called
addresses of hundreds of characters, SIP URIs) drops caller and called; the instance that
adopts it then has no caller number for the call's tools (memory). Past that (absurd
route/provider names) :meth:`issue` returns None and the caller falls back to an
instance-local token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, replace

from s2s.errors import VoicebotError
from voicebot.config import AppConfig

# Twilio: a <Parameter>'s name + value must stay under 500 characters.
PARAMETER_LIMIT = 500
TOKEN_PARAMETER = "token"
MAX_TOKEN_CHARS = PARAMETER_LIMIT - len(TOKEN_PARAMETER) - 1
# Instances' clocks (NTP) may disagree by this much about the issue time.
CLOCK_SKEW_S = 2.0
_VERSION = 1
# The label the default key is derived with: the Twilio auth token itself never signs tokens.
_KEY_LABEL = b"voicebot/stream-token/v1"


class BadStreamToken(VoicebotError, ValueError):
    """The token is malformed, forged, tampered with, expired or for another call."""


@dataclass(frozen=True, slots=True)
class StreamTicket:
    """What the webhook decided, as carried by the token."""

    call_sid: str
    route: str
    providers: tuple[str, ...]
    caller: str
    called: str
    issued_at: float  # Unix time, seconds


def derived_key(config: AppConfig) -> bytes | None:
    """``[server] stream_token_secret``, else a key derived from the Twilio auth token (the
    same on every instance of an account), else None: no key every instance shares."""
    secret = config.server.stream_token_secret
    if secret is not None:
        return secret.get_secret_value().encode()
    if config.twilio.auth_token is not None and config.twilio.auth_token.get_secret_value():
        return hmac.new(config.twilio.auth_token.get_secret_value().encode(), _KEY_LABEL, hashlib.sha256).digest()
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StreamTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def _sign(self, ticket: StreamTicket) -> str:
        body = [
            _VERSION,
            ticket.call_sid,
            ticket.route,
            list(ticket.providers),
            ticket.caller,
            ticket.called,
            round(ticket.issued_at * 1000),
            _b64(secrets.token_bytes(6)),  # two webhooks for one CallSid (a retry) get distinct tokens
        ]
        payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
        return payload + "." + self._mac(payload)

    def issue(self, ticket: StreamTicket) -> str | None:
        """The token, or None when even without caller and called it exceeds Twilio's limit."""
        for candidate in (ticket, replace(ticket, caller="", called="")):
            token = self._sign(candidate)
            if len(token) <= MAX_TOKEN_CHARS:
                return token
        return None

    def verify(self, token: str, call_sid: str, max_age_s: float, now: float | None = None) -> StreamTicket:
        """The ticket, if ``token`` was signed with this key for ``call_sid`` no longer than
        ``max_age_s`` ago; else :class:`BadStreamToken` saying why."""
        payload, dot, mac = token.rpartition(".")
        if not dot or not payload:
            raise BadStreamToken("malformed token")
        if not hmac.compare_digest(self._mac(payload), mac):
            raise BadStreamToken("bad signature (forged, tampered with, or signed with another key)")
        try:
            body = json.loads(_unb64(payload))
            version, sid, route, providers, caller, called, issued_ms, _nonce = body
            ticket = StreamTicket(sid, route, tuple(providers), caller, called, issued_ms / 1000)
        except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise BadStreamToken(f"signed but unreadable payload: {exc}") from None
        if version != _VERSION:
            raise BadStreamToken(f"unknown token version {version!r}")
        if ticket.call_sid != call_sid:
            raise BadStreamToken(f"issued for call {ticket.call_sid}, presented by call {call_sid}")
        age = (time.time() if now is None else now) - ticket.issued_at
        if age > max_age_s + CLOCK_SKEW_S:
            raise BadStreamToken(f"expired {age - max_age_s:.1f} s ago (issued {age:.1f} s ago)")
        if age < -CLOCK_SKEW_S:
            raise BadStreamToken(f"issued {-age:.1f} s in the future")
        return ticket
