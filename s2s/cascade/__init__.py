"""``type = "cascade"``: speech-to-text -> language model -> text-to-speech as one provider.

Each part is a table of the provider naming its implementation (:mod:`s2s.cascade.parts`)::

    [providers.cascade]
    type = "cascade"
    stt = { type = "openai_realtime", api_key = "${OPENAI_API_KEY}" }
    llm = { type = "openai_chat", base_url = "http://127.0.0.1:11434/v1", model = "llama3.2" }
    tts = { type = "openai_speech", api_key = "${OPENAI_API_KEY}" }

A session opens its three parts for the call (speech-to-text connects; the others are
per-request clients), seeds the model with the route's instructions and the conversation so
far, and then behaves as any other provider session (:mod:`s2s.cascade.session`). Because it
takes the history like the others, a cascade may stand anywhere in a route's chain, including
after speech-to-speech providers as a fallback that keeps the conversation.

Layout as every vendor folder: ``config`` (the provider table), ``session`` (the asyncio
shell, and the ``Provider``, which opens the three parts for a call), and in place of one
wire protocol the parts (:mod:`s2s.cascade.parts`: their interface and types; one module per
implementation) and the conversation they share (:mod:`s2s.cascade.conversation`).
"""

from __future__ import annotations

from s2s.cascade.config import CascadeConfig
from s2s.cascade.session import CascadeProvider
from s2s.provider import Provider, ProviderConfig
from s2s.registry import ProviderSpec


def _create(name: str, config: ProviderConfig) -> Provider:
    assert isinstance(config, CascadeConfig)
    return CascadeProvider(name, config)


SPEC = ProviderSpec(config_model=CascadeConfig, factory=_create)

__all__ = ["SPEC", "CascadeConfig", "CascadeProvider"]
