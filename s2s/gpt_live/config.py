"""``[providers.NAME]`` with ``type = "gpt_live"``: OpenAI GPT-Live, the full-duplex model.

Field names and defaults follow the installed ``openai`` SDK (``openai.types.live``):
``SessionConfig.model`` lists ``gpt-live-1`` and ``gpt-live-1.1``; the voice defaults to
``marin`` (``AudioOutput.voice``); delegation is ``client`` when omitted.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from s2s.provider import ProviderConfig
from s2s.realtime_protocol.config import DEFAULT_INSTRUCTIONS


class GptLiveConfig(ProviderConfig):
    type: Literal["gpt_live"] = "gpt_live"
    api_key: SecretStr
    model: str = Field(default="gpt-live-1.1", description="gpt-live-1 or gpt-live-1.1")
    voice: str = Field(default="marin", description="built-in voice name; fixed for the session")
    instructions: str = Field(default=DEFAULT_INSTRUCTIONS, description="used when the route sets none")
    delegation: Literal["client", "responses"] = Field(
        default="client",
        description=(
            "client: each delegation goes to the route's external agent (reasoning = { agent_url … }); "
            "responses: a Responses model run by the session calls the route's tools"
        ),
    )
    responses_model: str = Field(default="gpt-5.5", description="the backend model when delegation = responses")
    acknowledgement_delay_ms: int | None = Field(
        default=None, ge=0, description="how long the model waits before acknowledging a delegation aloud"
    )
    lead_ms: int = Field(
        default=160,
        ge=40,
        le=2000,
        description="bot audio queued at Twilio ahead of the caller; must cover the round trip to Twilio",
    )
    input_gap_ms: int = Field(
        default=100, ge=20, description="send silence when the caller's stream has been quiet this long"
    )
    base_url: str = Field(
        default="wss://api.openai.com/v1", description="WebSocket base; the SDK connects to {base_url}/live/sessions"
    )
    # SessionResource.expires_at tells the real limit; these bound it when it says more.
    session_limit_s: float = Field(default=7200.0, gt=0, description="how long OpenAI keeps a Live session")
    renew_after_s: float = Field(
        default=6900.0, gt=0, description="emit SessionExpiring after this long so the session is renewed in time"
    )

    @model_validator(mode="after")
    def _renewal_before_limit(self) -> GptLiveConfig:
        if self.renew_after_s >= self.session_limit_s:
            raise ValueError("renew_after_s must be less than session_limit_s")
        return self
