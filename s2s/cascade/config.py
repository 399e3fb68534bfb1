"""The cascade's provider table (``type = "cascade"``): one part table each for
speech-to-text, the language model and text-to-speech (:mod:`s2s.cascade.parts`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from s2s.cascade.parts import PartConfig, PartKind, validate_part
from s2s.provider import ProviderConfig

DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant answering a phone call. Your words are spoken aloud: "
    "answer in one to three short sentences of plain speech, with no lists, markup or emoji. "
    "The caller can interrupt you at any time."
)


class CascadeConfig(ProviderConfig):
    type: Literal["cascade"] = "cascade"
    stt: PartConfig = Field(description="speech-to-text part: {type = 'openai_realtime' | 'pocketsphinx', ...}")
    llm: PartConfig = Field(description="language model part: {type = 'openai_chat' | 'responder', ...}")
    tts: PartConfig = Field(description="text-to-speech part: {type = 'openai_speech' | 'espeak', ...}")
    instructions: str = Field(default=DEFAULT_INSTRUCTIONS, description="used when the route sets none")

    @field_validator("stt", "llm", "tts", mode="before")
    @classmethod
    def _part(cls, value: Any, info: Any) -> PartConfig:
        kind: PartKind = info.field_name
        return validate_part(kind, value)
