"""Running token totals of one provider session, for providers that report tokens per
response (OpenAI Realtime ``response.done``) or per message (Gemini ``usageMetadata``): the
protocol adds each report here and emits the session's cumulative :class:`~s2s.events.Usage`,
the form every consumer expects (a later report of a session replaces the earlier one)."""

from __future__ import annotations

from dataclasses import dataclass

from s2s.events import Usage


@dataclass(slots=True)
class TokenTally:
    session_id: str
    text_in: int = 0
    audio_in: int = 0
    cached_text_in: int = 0
    cached_audio_in: int = 0
    text_out: int = 0
    audio_out: int = 0

    def add(
        self,
        *,
        text_in: int = 0,
        audio_in: int = 0,
        cached_text_in: int = 0,
        cached_audio_in: int = 0,
        text_out: int = 0,
        audio_out: int = 0,
    ) -> Usage:
        """Add one report; the session's totals so far."""
        self.text_in += text_in
        self.audio_in += audio_in
        self.cached_text_in += cached_text_in
        self.cached_audio_in += cached_audio_in
        self.text_out += text_out
        self.audio_out += audio_out
        return Usage(
            self.session_id,
            text_in_tokens=self.text_in,
            audio_in_tokens=self.audio_in,
            cached_text_in_tokens=self.cached_text_in,
            cached_audio_in_tokens=self.cached_audio_in,
            text_out_tokens=self.text_out,
            audio_out_tokens=self.audio_out,
        )
