"""OpenAI GPT-Live, the full-duplex provider: ``type = "gpt_live"``."""

from s2s.gpt_live.config import GptLiveConfig
from s2s.gpt_live.protocol import GptLiveProtocol
from s2s.gpt_live.session import GptLiveProvider, GptLiveSession
from s2s.provider import Provider, ProviderConfig
from s2s.registry import ProviderSpec


def _factory(name: str, config: ProviderConfig) -> Provider:
    assert isinstance(config, GptLiveConfig)
    return GptLiveProvider(name, config)


SPEC = ProviderSpec(GptLiveConfig, _factory)

__all__ = ["SPEC", "GptLiveConfig", "GptLiveProtocol", "GptLiveProvider", "GptLiveSession"]
