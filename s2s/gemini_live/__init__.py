"""Gemini Live native audio (google-genai ``client.aio.live``).

``protocol`` maps server messages to neutral events, ``setup`` builds what is sent besides
audio, ``session`` is the thin asyncio shell over the SDK session."""

from s2s.gemini_live.config import GeminiLiveConfig
from s2s.gemini_live.session import GeminiLiveProvider, GeminiLiveSession
from s2s.registry import ProviderSpec

SPEC = ProviderSpec(config_model=GeminiLiveConfig, factory=GeminiLiveProvider)

__all__ = ["SPEC", "GeminiLiveConfig", "GeminiLiveProvider", "GeminiLiveSession"]
