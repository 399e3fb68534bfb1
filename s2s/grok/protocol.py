"""Everything in which xAI's Grok Voice Agent differs from OpenAI Realtime GA.

- ``session.update`` layout: ``voice`` and ``turn_detection`` at the top of ``session``, no
  ``type:"realtime"``/``output_modalities``; formats stay nested under ``audio``.
- The server opens with ``conversation.created`` (and ``session.created``); the update goes out
  on whichever comes first.
- ``conversation.item.truncate`` is best effort: sent, and an error reply is ignored.

Sources: xAI Voice Agent API (https://docs.x.ai/developers/models/grok-voice-3.0 and its
realtime guide), pipecat's ``GrokRealtimeLLMService``
(https://docs.pipecat.ai/api-reference/server/services/s2s/grok) and xAI's Twilio example.
The remaining differences (``ping``, beta-named ``response.text.delta``, ``…transcription.updated``,
``status:"in_progress"`` transcripts) are tolerated by the shared protocol for both providers.
"""

from __future__ import annotations

from typing import Any

from s2s.grok.config import GrokConfig
from s2s.provider import SessionContext
from s2s.realtime_protocol import RealtimeProtocol, function_tools, wire_audio_format


class GrokProtocol(RealtimeProtocol):
    provider_name = "grok"
    created_events = frozenset({"conversation.created", "session.created"})
    truncate_best_effort = True

    def __init__(self, ctx: SessionContext, config: GrokConfig) -> None:
        super().__init__(ctx, config.wire_audio_format)
        self.config = config

    def session_config(self) -> dict[str, Any]:
        cfg, ctx = self.config, self.ctx
        audio_format = wire_audio_format(self.audio_format)
        audio_input: dict[str, Any] = {"format": audio_format}
        if cfg.transcription_model:
            audio_input["transcription"] = {"model": cfg.transcription_model}
        session: dict[str, Any] = {
            "instructions": ctx.instructions or cfg.instructions,
            "voice": ctx.voice or cfg.voice,
            "turn_detection": cfg.turn_detection.model_dump(exclude_none=True),
            "audio": {"input": audio_input, "output": {"format": audio_format}},
        }
        if ctx.tools:
            session["tools"] = function_tools(ctx.tools)
        return session
