"""xAI Grok Voice Agent provider: ``type = "grok"``.

Layout as every vendor folder: ``config``, ``protocol`` (Grok's dialect of the shared
:mod:`s2s.realtime_protocol`), ``session`` (the ``Provider``: how to connect)."""

from s2s.grok.config import GrokConfig, GrokServerVad
from s2s.grok.protocol import GrokProtocol
from s2s.grok.session import GrokProvider
from s2s.provider import Provider, ProviderConfig
from s2s.registry import ProviderSpec


def _factory(name: str, config: ProviderConfig) -> Provider:
    assert isinstance(config, GrokConfig)
    return GrokProvider(name, config)


SPEC = ProviderSpec(GrokConfig, _factory)

__all__ = ["SPEC", "GrokConfig", "GrokProtocol", "GrokProvider", "GrokServerVad"]
