"""Checks of wire frames against the official SDKs' own types, for the fakes to run on every
frame they receive or send.

A fake written from notes can agree with our client on a mistake; the SDK types are the
vendors' published shapes. Every client frame a fake receives and every server event it sends
goes through :func:`openai_client_frame` / :func:`openai_server_event` (``openai.types.realtime``)
or :func:`gemini_client_message` / :func:`gemini_server_message` (``google.genai.types``). A
violation is recorded by the fake and fails the test when the fake closes: a frame our client
sends that the SDK does not describe is a bug in the client; one the fake sends is a bug in the
fake.

The SDK models accept unknown keys (``extra="allow"``), so a key that is not part of the
published shape is found by walking the validated model for ``model_extra``.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from google.genai import types as genai_types
from openai.types.live import ClientEvent as LiveClientEvent
from openai.types.live import ServerEvent as LiveServerEvent
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError


def _by_type(union: Any) -> dict[str, type[BaseModel]]:
    """The members of an SDK event union by their ``type`` literal, so a frame is checked
    against its own model (errors then name its fields, not every member of the union)."""
    while typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    members: dict[str, type[BaseModel]] = {}
    for member in typing.get_args(union):
        for literal in typing.get_args(member.model_fields["type"].annotation):
            members[literal] = member
    return members


_OPENAI_CLIENT = _by_type(RealtimeClientEvent)
_OPENAI_SERVER = _by_type(RealtimeServerEvent)
_LIVE_CLIENT = _by_type(LiveClientEvent)
_LIVE_SERVER = _by_type(LiveServerEvent)


def unknown_keys(model: Any, path: str = "") -> list[str]:
    """Dotted paths of keys a validated SDK model kept as extras (not in the published shape)."""
    found: list[str] = []
    if isinstance(model, BaseModel):
        for key in model.model_extra or {}:
            found.append(f"{path}{key}")
        for name in type(model).model_fields:
            found.extend(unknown_keys(getattr(model, name), f"{path}{name}."))
    elif isinstance(model, (list, tuple)):
        for i, item in enumerate(model):
            found.extend(unknown_keys(item, f"{path}{i}."))
    elif isinstance(model, dict):
        for key, value in model.items():
            found.extend(unknown_keys(value, f"{path}{key}."))
    return found


def _check(models: dict[str, type[BaseModel]], frame: dict[str, Any], what: str) -> str | None:
    model_type = models.get(str(frame.get("type")))
    if model_type is None:
        return f"{what} {frame.get('type')!r} is not a type the SDK defines"
    try:
        model = model_type.model_validate(frame)
    except ValidationError as exc:
        problems = [(e["loc"], e["msg"]) for e in exc.errors()[:4]]
        return f"{what} {frame.get('type')!r} does not match {model_type.__name__}: {problems}"
    extra = unknown_keys(model)
    if extra:
        return f"{what} {frame.get('type')!r} has keys the SDK type does not define: {extra}"
    return None


def openai_client_frame(frame: dict[str, Any]) -> str | None:
    """A client event as ``openai.types.realtime.RealtimeClientEvent`` defines it."""
    return _check(_OPENAI_CLIENT, frame, "client event")


def openai_server_event(event: dict[str, Any]) -> str | None:
    """A server event as ``openai.types.realtime.RealtimeServerEvent`` defines it."""
    return _check(_OPENAI_SERVER, event, "server event")


def live_client_frame(frame: dict[str, Any]) -> str | None:
    """A GPT-Live client event as ``openai.types.live.ClientEvent`` defines it."""
    return _check(_LIVE_CLIENT, frame, "Live client event")


def live_server_event(event: dict[str, Any]) -> str | None:
    """A GPT-Live server event as ``openai.types.live.ServerEvent`` defines it."""
    return _check(_LIVE_SERVER, event, "Live server event")


def _gemini_check(model_type: type[BaseModel], message: dict[str, Any], what: str) -> str | None:
    try:
        model = model_type.model_validate(message)
    except ValidationError as exc:
        problems = [(e["loc"], e["msg"]) for e in exc.errors()[:4]]
        return f"{what} does not match google.genai.types.{model_type.__name__}: {problems}"
    extra = unknown_keys(model)
    if extra:
        return f"{what} has keys google.genai.types.{model_type.__name__} does not define: {extra}"
    return None


# Setup keys the SDK's own converter (``google.genai._live_converters``) puts on the wire but its
# ``LiveClientSetup`` type lacks (google-genai 3.6): each is checked against its own SDK type.
_SETUP_KEYS_OUTSIDE_THE_TYPE: dict[str, type[BaseModel]] = {
    "realtimeInputConfig": genai_types.RealtimeInputConfig,
    "realtime_input_config": genai_types.RealtimeInputConfig,
}


def gemini_client_message(message: dict[str, Any]) -> str | None:
    """A client message as ``google.genai.types.LiveClientMessage`` defines it (camelCase or
    snake_case keys, as the service accepts both)."""
    setup = message.get("setup")
    if isinstance(setup, dict):
        setup = dict(setup)
        for key, model_type in _SETUP_KEYS_OUTSIDE_THE_TYPE.items():
            if key in setup and (problem := _gemini_check(model_type, setup.pop(key), f"setup.{key}")):
                return problem
        message = {**message, "setup": setup}
    return _gemini_check(genai_types.LiveClientMessage, message, "client message")


def gemini_server_message(message: dict[str, Any]) -> str | None:
    """A server message as ``google.genai.types.LiveServerMessage`` defines it."""
    return _gemini_check(genai_types.LiveServerMessage, message, "server message")


# -- Amazon Nova Sonic ----------------------------------------------------------------------
# The AWS SDK (aws-sdk-bedrock-runtime) types only the envelope: each input event is the bytes of
# a ``BidirectionalInputPayloadPart`` chunk, each output event one of a
# ``BidirectionalOutputPayloadPart``. The JSON inside is defined by the Nova user guide
# (https://docs.aws.amazon.com/nova/latest/nova2-userguide/sonic-input-events.html and
# .../sonic-output-events.html); these models hold the fields those pages list, strictly.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")  # output: the service adds fields over time


Role = Literal["SYSTEM", "USER", "ASSISTANT", "TOOL", "SYSTEM_SPEECH"]
Rate = Literal[8000, 16000, 24000]


class _MediaType(_Strict):
    mediaType: str


class _Inference(_Strict):
    maxTokens: int
    topP: float
    temperature: float


class _TurnDetection(_Strict):
    endpointingSensitivity: Literal["HIGH", "MEDIUM", "LOW"]


class _SessionStart(_Strict):
    inferenceConfiguration: _Inference
    turnDetectionConfiguration: _TurnDetection | None = None


class _AudioOutputConfig(_Strict):
    mediaType: Literal["audio/lpcm"]
    sampleRateHertz: Rate
    sampleSizeBits: Literal[16]
    channelCount: Literal[1]
    voiceId: str
    encoding: Literal["base64"]
    audioType: Literal["SPEECH"]


class _InputSchema(_Strict):
    json_: str = Field(alias="json")  # a JSON Schema as a string, not an object


class _ToolSpecBody(_Strict):
    name: str
    description: str
    inputSchema: _InputSchema


class _Tool(_Strict):
    toolSpec: _ToolSpecBody


class _ToolConfiguration(_Strict):
    tools: list[_Tool]


class _PromptStart(_Strict):
    promptName: str
    textOutputConfiguration: _MediaType
    audioOutputConfiguration: _AudioOutputConfig
    toolUseOutputConfiguration: _MediaType | None = None
    toolConfiguration: _ToolConfiguration | None = None


class _AudioInputConfig(_Strict):
    mediaType: Literal["audio/lpcm"]
    sampleRateHertz: Rate
    sampleSizeBits: Literal[16]
    channelCount: Literal[1]
    audioType: Literal["SPEECH"]
    encoding: Literal["base64"]


class _ToolResultConfig(_Strict):
    toolUseId: str
    type: Literal["TEXT"]
    textInputConfiguration: _MediaType


class _ContentStart(_Strict):
    promptName: str
    contentName: str
    type: Literal["TEXT", "AUDIO", "TOOL"]
    interactive: bool
    role: Role
    textInputConfiguration: _MediaType | None = None
    audioInputConfiguration: _AudioInputConfig | None = None
    toolResultInputConfiguration: _ToolResultConfig | None = None


class _ContentPayload(_Strict):
    promptName: str
    contentName: str
    content: str


class _ContentEnd(_Strict):
    promptName: str
    contentName: str


class _PromptEnd(_Strict):
    promptName: str


class _SessionEnd(_Strict):
    pass


_NOVA_INPUT: dict[str, type[BaseModel]] = {
    "sessionStart": _SessionStart,
    "promptStart": _PromptStart,
    "contentStart": _ContentStart,
    "textInput": _ContentPayload,
    "audioInput": _ContentPayload,
    "toolResult": _ContentPayload,
    "contentEnd": _ContentEnd,
    "promptEnd": _PromptEnd,
    "sessionEnd": _SessionEnd,
}


class _OutContentStart(_Loose):
    contentId: str
    type: Literal["TEXT", "AUDIO", "TOOL"]
    role: Role


class _OutContent(_Loose):
    contentId: str
    content: str


class _OutToolUse(_Loose):
    contentId: str
    toolName: str
    toolUseId: str
    content: str


class _OutContentEnd(_Loose):
    contentId: str
    type: Literal["TEXT", "AUDIO", "TOOL"]
    stopReason: str


class _OutCompletion(_Loose):
    completionId: str


_NOVA_OUTPUT: dict[str, type[BaseModel]] = {
    "completionStart": _OutCompletion,
    "contentStart": _OutContentStart,
    "textOutput": _OutContent,
    "audioOutput": _OutContent,
    "toolUse": _OutToolUse,
    "contentEnd": _OutContentEnd,
    "completionEnd": _OutCompletion,
    "usageEvent": _OutCompletion,
}


def _nova_check(models: dict[str, type[BaseModel]], event: Any, what: str) -> str | None:
    if not isinstance(event, dict) or set(event) != {"event"} or not isinstance(event["event"], dict):
        return f"{what} is not {{'event': {{NAME: BODY}}}}: {str(event)[:120]}"
    if len(event["event"]) != 1:
        return f"{what} names {len(event['event'])} events in one"
    ((name, body),) = event["event"].items()
    model_type = models.get(name)
    if model_type is None:
        return f"{what} {name!r} is not an event the Nova user guide defines"
    try:
        model_type.model_validate(body)
    except ValidationError as exc:
        return (
            f"{what} {name!r} does not match the documented shape: {[(e['loc'], e['msg']) for e in exc.errors()[:4]]}"
        )
    return None


def nova_input_event(event: Any) -> str | None:
    """An input event as the Nova user guide's sonic-input-events page defines it."""
    return _nova_check(_NOVA_INPUT, event, "input event")


def nova_output_event(event: Any) -> str | None:
    """An output event as the sonic-output-events page defines it."""
    return _nova_check(_NOVA_OUTPUT, event, "output event")
