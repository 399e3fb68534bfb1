"""X-Twilio-Signature checks for the webhook and the Media Stream upgrade.

Twilio signs the URL exactly as it requested it. Behind a proxy our server sees another
scheme and host, so the URL is rebuilt from ``server.public_url`` (preferred) or from
``X-Forwarded-Proto``/``X-Forwarded-Host``/``Host``. The WebSocket upgrade carries an
``X-Twilio-Signature`` too (https://www.twilio.com/docs/global-infrastructure/firewall-configurations/media-streams-configuration),
computed as for a webhook (https://www.twilio.com/docs/usage/webhooks/webhooks-security) over the
``wss://`` URL with no parameters: https maps to wss, http to ws.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator


def external_base_url(public_url: str | None, headers: Mapping[str, str], scheme: str) -> str:
    """``https://host[:port]`` as Twilio addressed us."""
    if public_url:
        return public_url.rstrip("/")
    proto = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
    host = headers.get("x-forwarded-host") or headers.get("host", "localhost")
    host = host.split(",")[0].strip()
    if proto in ("ws", "wss"):
        proto = "https" if proto == "wss" else "http"
    return f"{proto}://{host}"


def websocket_url(http_url: str) -> str:
    if http_url.startswith("https://"):
        return "wss://" + http_url[len("https://") :]
    if http_url.startswith("http://"):
        return "ws://" + http_url[len("http://") :]
    return http_url


class SignatureChecker:
    """Validates requests with the ``twilio`` package; disabled means every request passes."""

    def __init__(self, auth_token: str | None, enabled: bool) -> None:
        self.enabled = enabled
        self._validator = RequestValidator(auth_token or "")

    def webhook_ok(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        if not self.enabled:
            return True
        return bool(signature) and self._validator.validate(url, dict(params), signature)

    def upgrade_ok(self, ws_url: str, signature: str | None) -> bool:
        if not self.enabled:
            return True
        return bool(signature) and self._validator.validate(ws_url, {}, signature)
