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
shell), and in place of one wire protocol the parts (:mod:`s2s.cascade.parts`: their
interface and types; one module per implementation) and the conversation they share
(:mod:`s2s.cascade.conversation`). The ``Provider`` here opens the three parts for a call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from s2s.cascade.config import CascadeConfig
from s2s.cascade.parts import LanguageModel, PartOpener, SpeechToText, TextToSpeech, part_spec
from s2s.cascade.session import CascadeSession
from s2s.provider import Provider, ProviderConfig, ProviderConnectError, ProviderSession, SessionContext
from s2s.registry import ProviderSpec

log = logging.getLogger(__name__)


class CascadeProvider(Provider):
    config: CascadeConfig

    def __init__(self, name: str, config: CascadeConfig) -> None:
        super().__init__(name, config)
        self._stt: PartOpener[Any] = part_spec("stt", config.stt.type).factory(config.stt)
        self._llm: PartOpener[Any] = part_spec("llm", config.llm.type).factory(config.llm)
        self._tts: PartOpener[Any] = part_spec("tts", config.tts.type).factory(config.tts)

    async def open_session(self, ctx: SessionContext) -> ProviderSession:
        opened = await asyncio.gather(
            self._stt.open(ctx), self._llm.open(ctx), self._tts.open(ctx), return_exceptions=True
        )
        failures = [r for r in opened if isinstance(r, BaseException)]
        if failures:
            for part in opened:
                if not isinstance(part, BaseException):
                    await part.close()
            first = failures[0]
            if not isinstance(first, Exception):
                raise first
            retryable = all(getattr(f, "retryable", True) for f in failures)
            log.warning("call %s: %s could not open its parts: %s", ctx.call_sid, self.name, first)
            raise ProviderConnectError(self.name, f"{type(first).__name__}: {first}", retryable=retryable) from first
        stt, llm, tts = cast(tuple[SpeechToText, LanguageModel, TextToSpeech], tuple(opened))
        session = CascadeSession(self.name, ctx, ctx.instructions or self.config.instructions, stt, llm, tts)
        log.info(
            "%s session ready for call %s (%s -> %s -> %s)",
            self.name,
            ctx.call_sid,
            self.config.stt.type,
            self.config.llm.type,
            self.config.tts.type,
        )
        return session


def _create(name: str, config: ProviderConfig) -> Provider:
    assert isinstance(config, CascadeConfig)
    return CascadeProvider(name, config)


SPEC = ProviderSpec(config_model=CascadeConfig, factory=_create)

__all__ = ["SPEC", "CascadeConfig", "CascadeProvider"]
