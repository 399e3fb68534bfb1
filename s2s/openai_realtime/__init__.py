"""OpenAI Realtime (GA) provider: ``type = "openai_realtime"``.

The vendor folder layout every provider shares: ``config`` (the provider table), ``protocol``
(sans-I/O: here the GA ``session.update`` layout over the shared :mod:`s2s.realtime_protocol`),
``session`` (the asyncio shell and the ``Provider``: here the SDK connection as transport)."""

from s2s.openai_realtime.config import OpenAIRealtimeConfig, SemanticVad, ServerVad
from s2s.openai_realtime.protocol import OpenAIRealtimeProtocol
from s2s.openai_realtime.session import OpenAIRealtimeProvider
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
