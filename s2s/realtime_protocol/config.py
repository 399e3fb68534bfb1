"""Config fields shared by the providers that speak the OpenAI-Realtime-style protocol."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

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

    @property
    def wire_audio_format(self) -> AudioFormat:
        return AUDIO_FORMATS[self.audio_format]
