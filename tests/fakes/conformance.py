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
from typing import Any

from google.genai import types as genai_types
from openai.types.live import ClientEvent as LiveClientEvent
from openai.types.live import ServerEvent as LiveServerEvent
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, ValidationError


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
