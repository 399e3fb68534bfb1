"""``llm = { type = "openai_responses" }``: an OpenAI-compatible Responses endpoint.

Through the official ``openai`` package (``client.responses.create(..., stream=True)``). The
history goes as input items (SDK ``ResponseInputItemParam``): caller and bot turns as messages,
a tool round as a ``function_call`` item and its ``function_call_output``; the route's
instructions as ``instructions``; tools as flat function tools. Streamed events (SDK
``ResponseStreamEvent``): text in ``response.output_text.delta``; a tool call complete in
``response.output_item.done`` with a ``function_call`` item; ``response.failed`` / ``error``
end the answer with an error. Nothing is stored server-side (``store = false``): the session
keeps the conversation itself, as it must to cut it to what the caller heard.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Literal

import httpx
from openai import APIConnectionError, APIStatusError, AsyncOpenAI, omit
from openai.types.responses import FunctionToolParam, ResponseInputItemParam

from s2s.cascade.llm_openai import OpenAITextConfig, api_error, make_client, tool_call
from s2s.cascade.parts import LanguageModel, LlmEvent, Message, PartError, PartSpec, TextDelta, TokenCount
from s2s.events import ToolCall
from s2s.provider import SessionContext
from s2s.tools import ToolSpec


class OpenAIResponsesConfig(OpenAITextConfig):
    type: Literal["openai_responses"] = "openai_responses"


def response_input(messages: Sequence[Message]) -> list[ResponseInputItemParam]:
    items: list[ResponseInputItemParam] = []
    for m in messages:
        if m.role == "user":
            items.append({"role": "user", "content": m.text})
        elif m.role == "tool":
            items.append({"type": "function_call_output", "call_id": m.call_id or "", "output": m.text})
        else:
            if m.text:
                items.append({"role": "assistant", "content": m.text})
            for c in m.tool_calls:
                arguments = json.dumps(c.arguments)
                items.append({"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": arguments})
    return items


def response_tools(tools: Sequence[ToolSpec]) -> list[FunctionToolParam]:
    return [
        {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters, "strict": False}
        for t in tools
    ]


class OpenAIResponses(LanguageModel):
    def __init__(self, client: AsyncOpenAI, config: OpenAIResponsesConfig) -> None:
        self._client = client
        self.config = config
        self.model = config.model

    async def respond(
        self, instructions: str, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncGenerator[LlmEvent, None]:
        options: dict[str, Any] = {}
        if tools:
            options["tools"] = response_tools(tools)
        if self.config.reasoning_effort is not None:
            options["reasoning"] = {"effort": self.config.reasoning_effort}
        if self.config.temperature is not None:
            options["temperature"] = self.config.temperature
        if self.config.max_tokens is not None:
            options["max_output_tokens"] = self.config.max_tokens
        calls: list[ToolCall] = []
        try:
            stream = await self._client.responses.create(
                model=self.model,
                input=response_input(messages),
                instructions=instructions or omit,
                store=False,
                stream=True,
                **options,
            )
            async with stream:
                async for event in stream:
                    if event.type == "response.output_text.delta":
                        yield TextDelta(event.delta)
                    elif event.type == "response.output_item.done" and event.item.type == "function_call":
                        calls.append(tool_call(event.item.call_id, event.item.name, event.item.arguments))
                    elif event.type == "response.completed" and event.response.usage is not None:
                        used = event.response.usage
                        yield TokenCount(
                            used.input_tokens, used.output_tokens, used.input_tokens_details.cached_tokens or 0
                        )
                    elif event.type == "response.failed":
                        error = event.response.error
                        raise PartError(f"model {self.model}: response failed: {error.message if error else '?'}")
                    elif event.type == "error":
                        raise PartError(f"model {self.model}: {event.code}: {event.message}")
        except (APIStatusError, APIConnectionError, httpx.HTTPError) as exc:
            raise api_error(self.model, exc) from exc
        for call in calls:
            yield call


class OpenAIResponsesOpener:
    def __init__(self, config: OpenAIResponsesConfig) -> None:
        self.config = config
        self._client = make_client(config)

    async def open(self, ctx: SessionContext) -> OpenAIResponses:
        return OpenAIResponses(self._client, self.config)


PART = PartSpec("llm", OpenAIResponsesConfig, OpenAIResponsesOpener)
