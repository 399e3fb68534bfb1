"""The echo line's provider table (``type = "echo"``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from s2s.provider import ProviderConfig
from transcoding.voice_activity import NEURAL_RATES, VadKind


class EchoToolCue(BaseModel):
    """Test-oriented: on caller-side text containing ``on_text``, say a tone, then call a tool."""

    model_config = ConfigDict(extra="forbid")

    on_text: str = Field(min_length=1)
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    say_ms: int = Field(default=0, ge=0, description="tone spoken before the tool call")
    reply_ms: int = Field(default=0, ge=0, description="tone spoken after the tool result arrives")
    tone_hz: float = Field(default=700.0, gt=0, lt=4000)


class EchoConfig(ProviderConfig):
    type: Literal["echo"] = "echo"
    encoding: Literal["mulaw", "pcm16"] = "mulaw"
    sample_rate: Literal[8000, 16000, 24000] = 8000
    vad_threshold_dbfs: float = Field(default=-38.0, le=0)
    vad_start_ms: int = Field(default=60, ge=20)
    vad_silence_ms: int = Field(default=500, ge=100)
    vad: VadKind = Field(
        default="energy",
        description="what counts as speech above vad_threshold_dbfs: the level alone, or also a voice-activity "
        "model ('silero', 'webrtc'; 8 or 16 kHz only; pip install 'voicebot[vad]', else energy is used)",
    )
    chunk_ms: int = Field(default=100, ge=10, description="size of each audio chunk sent back")
    speed: float = Field(default=4.0, gt=0, description="how much faster than real time replies are sent")
    reply_delay_ms: int = Field(default=150, ge=0, description="'thinking' time before a reply starts")
    # For exercising the shared rotation policy (s2s.resilience) and history carry-over with no
    # cloud provider: the line announces its own expiry as Gemini's goAway / Nova's stream limit
    # do, and can "transcribe" each utterance as its duration.
    expire_after_s: float | None = Field(
        default=None, gt=0, description="emit SessionExpiring this long after the session opened"
    )
    transcribe: bool = Field(default=False, description="emit placeholder transcripts ('780 ms of speech')")
    tool_cues: list[EchoToolCue] = Field(default_factory=list, description="tests: call tools on cue")

    @model_validator(mode="after")
    def _vad_rate(self) -> EchoConfig:
        if self.vad != "energy" and self.sample_rate not in NEURAL_RATES:
            raise ValueError(f"vad {self.vad!r} takes 8000 or 16000 Hz audio, not sample_rate {self.sample_rate}")
        return self
