"""OpenAI Realtime (GA) provider: ``type = "openai_realtime"``."""

from s2s.openai_realtime.config import OpenAIRealtimeConfig, SemanticVad, ServerVad
from s2s.openai_realtime.protocol import OpenAIRealtimeProtocol
from s2s.openai_realtime.provider import OpenAIRealtimeProvider
from s2s.provider import Provider, ProviderConfig
from s2s.registry import ProviderSpec


def _factory(name: str, config: ProviderConfig) -> Provider:
    assert isinstance(config, OpenAIRealtimeConfig)
    return OpenAIRealtimeProvider(name, config)


SPEC = ProviderSpec(OpenAIRealtimeConfig, _factory)

__all__ = [
    "SPEC",
    "OpenAIRealtimeConfig",
    "OpenAIRealtimeProtocol",
    "OpenAIRealtimeProvider",
    "SemanticVad",
    "ServerVad",
]
