"""``[providers.NAME]`` with ``type = "openai_realtime"``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from s2s.realtime_protocol import RealtimeProviderConfig


class ServerVad(BaseModel):
    """Silence-based turn detection; defaults as openai
    ``types/realtime/realtime_audio_input_turn_detection.py`` documents them."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0)
    silence_duration_ms: int = Field(default=500, ge=0)


class SemanticVad(BaseModel):
    """Turn detection by a model judging whether the caller finished; waits up to 8/4/2 s."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class OpenAIRealtimeConfig(RealtimeProviderConfig):
    type: Literal["openai_realtime"] = "openai_realtime"
    model: str = "gpt-realtime-2.1"
    voice: str = Field(default="marin", description="fixed once the model has spoken in a session")
    turn_detection: TurnDetection = Field(default_factory=ServerVad)
    transcription_model: str | None = Field(
        default="gpt-live-transcribe", description="caller transcripts; none turns them off"
    )
    noise_reduction: Literal["near_field", "far_field"] | None = None
    base_url: str = "wss://api.openai.com/v1"
