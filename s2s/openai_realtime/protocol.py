"""OpenAI Realtime GA's ``session.update`` layout; everything else is the shared protocol."""

from __future__ import annotations

from typing import Any

from s2s.openai_realtime.config import OpenAIRealtimeConfig
from s2s.provider import SessionContext
from s2s.realtime_protocol import RealtimeProtocol, function_tools, wire_audio_format


class OpenAIRealtimeProtocol(RealtimeProtocol):
    provider_name = "openai_realtime"

    def __init__(self, ctx: SessionContext, config: OpenAIRealtimeConfig) -> None:
        super().__init__(ctx, config.wire_audio_format)
        self.config = config

    def session_config(self) -> dict[str, Any]:
        """GA shape (openai ``types/realtime/realtime_session_create_request_param.py``):
        ``type:"realtime"``, format/turn detection/transcription
        under ``audio.input``, format/voice under ``audio.output``. The bridge relies on
        ``create_response`` (answer at speech stop) and ``interrupt_response`` (stop at barge-in)."""
        cfg, ctx = self.config, self.ctx
        audio_format = wire_audio_format(self.audio_format)
        turn_detection: dict[str, Any] = {
            **cfg.turn_detection.model_dump(),
            "create_response": True,
            "interrupt_response": True,
        }
        audio_input: dict[str, Any] = {"format": audio_format, "turn_detection": turn_detection}
        if cfg.transcription_model:
            transcription: dict[str, Any] = {"model": cfg.transcription_model}
            if ctx.language:
                transcription["language"] = ctx.language.split("-")[0].lower()  # ISO-639-1
            audio_input["transcription"] = transcription
        if cfg.noise_reduction:
            audio_input["noise_reduction"] = {"type": cfg.noise_reduction}
        session: dict[str, Any] = {
            "type": "realtime",
            "model": ctx.model or cfg.model,
            "output_modalities": ["audio"],
            "instructions": ctx.instructions or cfg.instructions,
            "audio": {
                "input": audio_input,
                "output": {"format": audio_format, "voice": ctx.voice or cfg.voice},
            },
        }
        if ctx.tools:
            session["tools"] = function_tools(ctx.tools)
            session["tool_choice"] = "auto"
        return session
