"""The three parts of a cascade and their registries.

A cascade is speech-to-text, a language model and text-to-speech joined by
:class:`~s2s.cascade.session.CascadeSession`. Each part is a small interface here; each
implementation is one module that exposes ``PART`` (its config model and factory) and is
named in :data:`BUILTIN_PARTS`, imported only when a config names it, so an SDK or native
library a config does not use is never loaded.

Parts speak plain Python types: the speech-to-text part reuses the neutral events the bridge
knows (``SpeechStarted``, ``SpeechStopped``, a final caller ``Transcript`` = end of turn); the
language model streams :class:`TextDelta`, :class:`~s2s.events.ToolCall` and its
:class:`TokenCount`; text-to-speech turns one sentence into audio chunks.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from s2s.errors import VoicebotError
from s2s.events import SpeechStarted, SpeechStopped, ToolCall, Transcript
from s2s.provider import SessionContext
from s2s.tools import ToolSpec
from transcoding.formats import AudioFormat

PartKind = Literal["stt", "llm", "tts"]

SttEvent = SpeechStarted | SpeechStopped | Transcript


class PartConfig(BaseModel):
    """A part's table inside ``[providers.NAME]`` (``stt = {type = "...", ...}``)."""

    model_config = ConfigDict(extra="forbid")

    type: str


class PartError(VoicebotError):
    """A part failed to open or broke mid-call. ``retryable`` as for
    :class:`~s2s.provider.ProviderConnectError` (bad credentials are not)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


# -- speech to text -------------------------------------------------------------------------


class SpeechToText(ABC):
    """One call's recogniser: caller audio in, speech-started / end-of-turn text out."""

    input_format: AudioFormat

    @abstractmethod
    async def send_audio(self, audio: bytes) -> None:
        """Caller audio in ``input_format``; any length."""

    @abstractmethod
    def events(self) -> AsyncIterator[SttEvent]:
        """``SpeechStarted`` as soon as the caller starts talking (the barge-in trigger),
        ``SpeechStopped``, then one final caller ``Transcript`` per turn (possibly empty text).
        Ends when closed; raises :class:`PartError` when the recogniser is lost."""

    @abstractmethod
    async def close(self) -> None: ...


# -- language model -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the model's answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class TokenCount:
    """What one model request used, as the API reported it (after the answer): the input
    tokens (of which ``cached_input_tokens`` came from the provider's cache) and the output."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0


LlmEvent = TextDelta | ToolCall | TokenCount

MessageRole = Literal["user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    """One entry of the conversation as a chat model sees it. Assistant messages may carry
    tool calls; a tool message answers ``call_id``."""

    role: MessageRole
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    call_id: str | None = None


class LanguageModel(ABC):
    """A streaming text model. One instance per call; ``respond`` may be cancelled at any
    point (barge-in), which must abandon the request."""

    @abstractmethod
    def respond(
        self, instructions: str, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncGenerator[LlmEvent, None]:
        """Stream the answer to ``messages``: text deltas, (complete) tool calls and, when the
        model reports it, one :class:`TokenCount`."""

    async def close(self) -> None:
        return None


# -- text to speech -------------------------------------------------------------------------


class TextToSpeech(ABC):
    """Speaks one sentence at a time, so the first audio of an answer comes early."""

    output_format: AudioFormat

    @abstractmethod
    def speak(self, text: str) -> AsyncGenerator[bytes, None]:
        """Audio of ``text`` in ``output_format``, in chunks as it is produced. Cancelling the
        iteration must stop the synthesis (barge-in)."""

    async def close(self) -> None:
        return None


# -- registries -----------------------------------------------------------------------------

BUILTIN_PARTS: dict[PartKind, dict[str, str]] = {
    "stt": {"openai_realtime": "s2s.cascade.stt_openai", "pocketsphinx": "s2s.cascade.stt_pocketsphinx"},
    "llm": {
        "openai_chat": "s2s.cascade.llm_openai",
        "openai_responses": "s2s.cascade.llm_responses",
        "responder": "s2s.cascade.llm_responder",
    },
    "tts": {"openai_speech": "s2s.cascade.tts_openai", "espeak": "s2s.cascade.tts_espeak"},
}


class PartOpener[P](Protocol):
    """A configured part (one per provider, so clients and models are shared by its calls)."""

    async def open(self, ctx: SessionContext) -> P:
        """One call's part; raise :class:`PartError` when it cannot be had."""
        ...


# The install extra (pyproject.toml) each part's SDK comes with, and the module it provides:
# looked for when a config names the part, so a missing SDK is a config error, not a failed call.
PART_SDKS: dict[str, tuple[str, str]] = {
    "openai_realtime": ("openai", "openai"),
    "openai_chat": ("openai", "openai"),
    "openai_responses": ("openai", "openai"),
    "openai_speech": ("openai", "openai"),
    "pocketsphinx": ("local", "pocketsphinx"),
}


@dataclass(frozen=True, slots=True)
class PartSpec:
    """What a part module exposes as ``PART``: its config model and ``factory(config)``,
    which builds the :class:`PartOpener`."""

    kind: PartKind
    config_model: type[PartConfig]
    factory: Callable[[Any], PartOpener[Any]]


_registered: dict[tuple[PartKind, str], PartSpec] = {}


class UnknownPartType(VoicebotError, LookupError):
    pass


def register_part(type_name: str, spec: PartSpec) -> None:
    """Add a part that is not built in (plug-ins, tests)."""
    _registered[(spec.kind, type_name)] = spec


def part_types(kind: PartKind) -> list[str]:
    return sorted(set(BUILTIN_PARTS[kind]) | {name for k, name in _registered if k == kind})


def part_spec(kind: PartKind, type_name: str) -> PartSpec:
    key = (kind, type_name)
    if key in _registered:
        return _registered[key]
    module_name = BUILTIN_PARTS[kind].get(type_name)
    if module_name is None:
        raise UnknownPartType(f"unknown {kind} type {type_name!r}; known: {', '.join(part_types(kind))}")
    extra, sdk = PART_SDKS.get(type_name, ("", ""))
    if sdk and importlib.util.find_spec(sdk) is None:
        raise UnknownPartType(f"{kind} type {type_name!r} needs {sdk}: pip install 'voicebot[{extra}]'")
    spec: PartSpec = importlib.import_module(module_name).PART
    _registered[key] = spec
    return spec


def validate_part(kind: PartKind, value: Any) -> PartConfig:
    """Validate a part table with the model its ``type`` names (used by the provider config)."""
    if isinstance(value, PartConfig):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ValueError(f"{kind} must be a table with a type ({', '.join(part_types(kind))})")
    try:
        spec = part_spec(kind, value["type"])
    except UnknownPartType as exc:
        raise ValueError(str(exc)) from None
    return spec.config_model.model_validate(value)
