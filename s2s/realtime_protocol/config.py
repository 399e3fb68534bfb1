"""Config fields shared by the providers that speak the OpenAI-Realtime-style protocol."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from s2s.provider import ProviderConfig
from transcoding.formats import MULAW_8K, PCM16_24K, AudioFormat

AudioFormatName = Literal["pcmu", "pcm24k"]

# "pcmu" is G.711 mu-law 8 kHz, byte-identical to Twilio's payloads, so the bridge passes them
# through untouched; "pcm24k" is PCM16 LE at 24 kHz (the only PCM rate OpenAI GA accepts), which
# the bridge resamples from/to 8 kHz.
AUDIO_FORMATS: dict[AudioFormatName, AudioFormat] = {"pcmu": MULAW_8K, "pcm24k": PCM16_24K}

DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant answering a phone call. Keep answers short and "
    "conversational; the caller can interrupt you at any time."
)


class RealtimeProviderConfig(ProviderConfig):
    """Keys common to ``openai_realtime`` and ``grok``; each package sets its own defaults."""

    api_key: SecretStr
    model: str
    voice: str
    instructions: str = Field(default=DEFAULT_INSTRUCTIONS, description="used when the route sets none")
    audio_format: AudioFormatName = "pcmu"
    base_url: str = Field(description="WebSocket base; the session connects to {base_url}/realtime?model=")
    # Both vendors are reported to cap a session at 60 minutes (UNVERIFIED for either); OpenAI
    # then sends the fatal ``session_expired`` error.
    session_limit_s: float = Field(default=3600.0, gt=0, description="how long the provider keeps a session")
    renew_after_s: float = Field(
        default=3300.0, gt=0, description="emit SessionExpiring after this long so the session is renewed in time"
    )

    @model_validator(mode="after")
    def _renewal_before_limit(self) -> RealtimeProviderConfig:
        if self.renew_after_s >= self.session_limit_s:
            raise ValueError("renew_after_s must be less than session_limit_s")
        return self

    @property
    def wire_audio_format(self) -> AudioFormat:
        return AUDIO_FORMATS[self.audio_format]
