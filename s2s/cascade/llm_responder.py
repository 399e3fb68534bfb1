"""``llm = { type = "responder" }``: a built-in stand-in for a language model, with no network.

It says back what it understood ("I heard: book a table."), answers keypad text, and greets.
With a local recogniser and synthesiser it makes a whole cascade that needs no keys, which
shows a caller (or a test) what the recogniser made of their words.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Literal

from pydantic import Field

from s2s.cascade.parts import LanguageModel, LlmEvent, Message, PartConfig, PartSpec, TextDelta
from s2s.provider import SessionContext
from s2s.tools import ToolSpec


class ResponderConfig(PartConfig):
    type: Literal["responder"] = "responder"
    prefix: str = Field(default="I heard:", description="said before the caller's words")
    nothing: str = Field(default="Sorry, I did not catch that.", description="said when the turn had no words")


class Responder(LanguageModel):
    def __init__(self, config: ResponderConfig) -> None:
        self.config = config

    async def respond(
        self, instructions: str, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncGenerator[LlmEvent, None]:
        said = messages[-1].text.strip() if messages and messages[-1].role == "user" else ""
        answer = f"{self.config.prefix} {said.rstrip('.!?')}." if said else self.config.nothing
        for word in answer.split(" "):  # streamed word by word, as a model would
            yield TextDelta(word + " ")


class ResponderOpener:
    def __init__(self, config: ResponderConfig) -> None:
        self.config = config

    async def open(self, ctx: SessionContext) -> Responder:
        return Responder(self.config)


PART = PartSpec("llm", ResponderConfig, ResponderOpener)
