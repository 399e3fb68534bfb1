"""Gemini Live native audio (google-genai ``client.aio.live``).

``config`` is the provider table, ``protocol`` the sans-I/O session (server messages in, neutral
events and typed client messages out), ``setup`` the setup config and opening it sends,
``session`` the thin asyncio shell over the SDK session."""

from s2s.gemini_live.config import GeminiLiveConfig
from s2s.gemini_live.session import GeminiLiveProvider, GeminiLiveSession
from s2s.registry import ProviderSpec

SPEC = ProviderSpec(config_model=GeminiLiveConfig, factory=GeminiLiveProvider)

__all__ = ["SPEC", "GeminiLiveConfig", "GeminiLiveProvider", "GeminiLiveSession"]
