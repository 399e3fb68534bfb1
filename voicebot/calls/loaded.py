"""The config new calls start with, and what is built from it once per load: the providers,
the Twilio signature checker and the stream-token signer. A reload replaces them together;
a call in progress keeps the plan (config and providers) it started with."""

from __future__ import annotations

import logging
import secrets

from s2s.call_context import redact_log_records, set_personal_data_in_logs
from s2s.provider import Provider
from s2s.registry import build_provider
from telephony.signature import SignatureChecker
from voicebot.calls.stream_token import StreamTokens, derived_key
from voicebot.config import AppConfig

log = logging.getLogger(__name__)


class LoadedConfig:
    def __init__(self, config: AppConfig) -> None:
        # Signs stream tokens only when no key is configured; kept over reloads, so a token
        # issued before a reload still verifies after it.
        self._process_key = secrets.token_bytes(32)
        self.apply(config)

    def apply(self, config: AppConfig) -> None:
        """Use ``config`` for new calls."""
        self.config = config
        set_personal_data_in_logs(config.logs.personal_data)
        redact_log_records()  # each call's log lines are masked as its route says ([[routes]] redact)
        self.providers: dict[str, Provider] = {name: build_provider(name, c) for name, c in config.providers.items()}
        token = config.twilio.auth_token.get_secret_value() if config.twilio.auth_token else None
        self.signatures = SignatureChecker(token, config.twilio.validate_signatures)
        key = derived_key(config)
        if key is None:
            log.warning(
                "no [server] stream_token_secret and no Twilio auth token: media stream tokens are signed "
                "with a per-process key, so a call's media stream must reach the instance that answered "
                "its webhook; a fleet needs stream_token_secret, the same on every instance"
            )
        self.stream_tokens = StreamTokens(key or self._process_key)
