"""``[providers.NAME]`` with ``type = "grok"`` (xAI Grok Voice Agent)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from s2s.realtime_protocol import RealtimeProviderConfig


class GrokServerVad(BaseModel):
    """Grok's server VAD (xAI Voice Agent API ``turn_detection``; no semantic VAD). Unset options keep xAI's defaults,
    which the sources disagree on, rather than us guessing them."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["server_vad"] = "server_vad"
    threshold: float | None = Field(default=None, ge=0.1, le=0.9)
    prefix_padding_ms: int | None = Field(default=None, ge=0)
    silence_duration_ms: int | None = Field(default=None, ge=0, le=10000)


class GrokConfig(RealtimeProviderConfig):
    type: Literal["grok"] = "grok"
    model: str = "grok-voice-latest"
    voice: str = "eve"
    turn_detection: GrokServerVad = Field(default_factory=GrokServerVad)
    transcription_model: str | None = Field(
        default=None, description="e.g. grok-transcribe; none leaves xAI's default transcription"
    )
    base_url: str = "wss://api.x.ai/v1"
