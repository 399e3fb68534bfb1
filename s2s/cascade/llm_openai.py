"""``llm = { type = "openai_chat" }``: any OpenAI-compatible Chat Completions endpoint.

Through the official ``openai`` package (``AsyncOpenAI(base_url=...).chat.completions.create``
with ``stream=True``), so the same part serves OpenAI and the servers that speak its API
(vLLM, llama.cpp's server, Ollama's ``/v1``, LiteLLM...). Messages, tools and streamed
chunks follow the SDK's types (``openai.types.chat``: ``ChatCompletionMessageParam``,
``ChatCompletionToolParam``, ``ChatCompletionChunk``): text comes in ``delta.content``; a
tool call comes in pieces keyed by ``delta.tool_calls[].index`` (id and name first, the JSON
arguments as string fragments) and is handed on once the stream has ended.

Stopping an answer (barge-in) closes the HTTP response, which abandons the generation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from openai import APIConnectionError, APIStatusError, AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import Field, SecretStr

from s2s.call_context import logged_text
from s2s.cascade.parts import (
    LanguageModel,
    LlmEvent,
    Message,
    PartConfig,
    PartError,
    PartSpec,
    TextDelta,
    TokenCount,
)
from s2s.events import ToolCall
from s2s.provider import SessionContext
from s2s.tools import ToolSpec

log = logging.getLogger(__name__)


class OpenAITextConfig(PartConfig):
    """Keys shared by the Chat Completions and Responses parts."""

    # Local servers take any key; the SDK insists on one being set.
    api_key: SecretStr = Field(default=SecretStr("unused"), description="'${OPENAI_API_KEY}' for OpenAI")
    base_url: str = Field(default="https://api.openai.com/v1", description="any OpenAI-compatible server's /v1")
    model: str = "gpt-5.4-mini"
    # Reasoning models think before the first token, which the caller hears as silence; for
    # OpenAI's GPT-5 family "none"/"minimal"/"low" keep answers quick. Unset = not sent (servers
    # that do not know the field may reject it).
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=300, ge=1, description="caps a spoken answer")
    timeout_s: float = Field(default=15.0, gt=0, description="per request, to the end of the stream")


class OpenAIChatConfig(OpenAITextConfig):
    type: Literal["openai_chat"] = "openai_chat"
    # The token count arrives in a last chunk when asked for (stream_options.include_usage,
    # https://platform.openai.com/docs/api-reference/chat/create#chat-create-stream_options);
    # a server that refuses the field can be told not to be asked.
    report_usage: bool = Field(
        default=True, description="ask for the token count (cost); false for servers that refuse it"
    )


def chat_messages(instructions: str, messages: Sequence[Message]) -> list[ChatCompletionMessageParam]:
    """Our history as Chat Completions messages: the route's instructions as the system
    message (understood by every compatible server, unlike ``developer``)."""
    out: list[ChatCompletionMessageParam] = [{"role": "system", "content": instructions}] if instructions else []
    for m in messages:
        if m.role == "user":
            out.append({"role": "user", "content": m.text})
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.call_id or "", "content": m.text})
        elif m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.text or None,
                    "tool_calls": [
                        {
                            "id": c.call_id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": "assistant", "content": m.text})
    return out


def chat_tools(tools: Sequence[ToolSpec]) -> list[ChatCompletionToolParam]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


@dataclass
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def complete(self) -> ToolCall:
        return tool_call(self.call_id, self.name, "".join(self.arguments))


def tool_call(call_id: str, name: str, raw_arguments: str) -> ToolCall:
    """A model's function call; arguments that are not a JSON object are logged, not fatal."""
    try:
        arguments = json.loads(raw_arguments) if raw_arguments.strip() else {}
    except json.JSONDecodeError:
        log.warning("model called %s with arguments that are not JSON: %.200r", name, logged_text(raw_arguments))
        arguments = {}
    if not isinstance(arguments, dict):
        arguments = {"value": arguments}
    return ToolCall(call_id, name, arguments)


def api_error(model: str, exc: Exception) -> PartError:
    """An SDK error as a :class:`PartError`; client errors (bad key, unknown model) are not
    worth retrying."""
    if isinstance(exc, APIStatusError):
        return PartError(
            f"model {model}: HTTP {exc.status_code}: {exc.message}",
            retryable=exc.status_code not in (400, 401, 403, 404),
        )
    return PartError(f"model {model}: {type(exc).__name__}: {exc}")


def make_client(config: OpenAITextConfig) -> AsyncOpenAI:
    # One client (one HTTP connection pool) for all calls of a provider. SDK retries are off: a
    # failed answer is the recovery layer's to handle, and a retry after seconds would only be
    # heard as dead air.
    return AsyncOpenAI(
        api_key=config.api_key.get_secret_value(), base_url=config.base_url, timeout=config.timeout_s, max_retries=0
    )


class OpenAIChat(LanguageModel):
    def __init__(self, client: AsyncOpenAI, config: OpenAIChatConfig) -> None:
        self._client = client
        self.config = config
        self.model = config.model

    async def respond(
        self, instructions: str, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncGenerator[LlmEvent, None]:
        options: dict[str, Any] = {}
        if tools:
            options["tools"] = chat_tools(tools)
        if self.config.reasoning_effort is not None:
            options["reasoning_effort"] = self.config.reasoning_effort
        if self.config.temperature is not None:
            options["temperature"] = self.config.temperature
        if self.config.max_tokens is not None:
            options["max_completion_tokens"] = self.config.max_tokens
        if self.config.report_usage:
            options["stream_options"] = {"include_usage": True}
        calls: dict[int, _PartialCall] = {}
        try:
            stream = await self._client.chat.completions.create(
                model=self.model, messages=chat_messages(instructions, messages), stream=True, **options
            )
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:  # the last chunk, with no choices
                        details = chunk.usage.prompt_tokens_details
                        yield TokenCount(
                            chunk.usage.prompt_tokens,
                            chunk.usage.completion_tokens,
                            (details.cached_tokens or 0) if details is not None else 0,
                        )
                    for choice in chunk.choices:
                        delta = choice.delta
                        if delta.content:
                            yield TextDelta(delta.content)
                        for piece in delta.tool_calls or ():
                            call = calls.setdefault(piece.index, _PartialCall())
                            call.call_id = piece.id or call.call_id
                            if piece.function is not None:
                                call.name = piece.function.name or call.name
                                if piece.function.arguments:
                                    call.arguments.append(piece.function.arguments)
        except (APIStatusError, APIConnectionError, httpx.HTTPError) as exc:
            raise api_error(self.model, exc) from exc
        for index in sorted(calls):
            yield calls[index].complete()


class OpenAIChatOpener:
    def __init__(self, config: OpenAIChatConfig) -> None:
        self.config = config
        self._client = make_client(config)

    async def open(self, ctx: SessionContext) -> OpenAIChat:
        # A route's `model` names its speech-to-speech model; the chat model is this part's own.
        return OpenAIChat(self._client, self.config)


PART = PartSpec("llm", OpenAIChatConfig, OpenAIChatOpener)
