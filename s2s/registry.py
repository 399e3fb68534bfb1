"""Provider types by name (the ``type`` key of a ``[providers.NAME]`` table).

One way to make a type known: a module that exposes ``SPEC`` (a :class:`ProviderSpec`), named
by its dotted path in :data:`BUILTIN_TYPES` or given to :func:`register` (the application's
own types such as ``tape``, tests, plug-ins). Modules are imported lazily, when a config first
names their type, so a missing optional SDK only affects configs that use it, and nothing
registers itself as a side effect of being imported.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from s2s.errors import VoicebotError
from s2s.provider import Provider, ProviderConfig

BUILTIN_TYPES: dict[str, str] = {
    "echo": "s2s.echo",
    "openai_realtime": "s2s.openai_realtime",
    "gpt_live": "s2s.gpt_live",
    "grok": "s2s.grok",
    "gemini_live": "s2s.gemini_live",
    "nova_sonic": "s2s.nova_sonic",
    "cascade": "s2s.cascade",
}

# The install extra (pyproject.toml) that brings each built-in type's SDK, and the modules
# that SDK provides. They are looked for when a config names the type (some provider packages
# import their SDK only when a session opens), so a missing SDK is a config error, not a
# failed call.
SDK_EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai_realtime": ("openai", ("openai",)),
    "gpt_live": ("openai", ("openai.types.live",)),  # client.live arrived in openai 3.60
    "gemini_live": ("gemini", ("google.genai",)),
    "nova_sonic": ("nova", ("aws_sdk_bedrock_runtime", "awscrt", "boto3")),
}


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    config_model: type[ProviderConfig]
    factory: Callable[[str, ProviderConfig], Provider]


_registered: dict[str, str] = {}  # type -> module exposing SPEC, beyond the built-ins
_loaded: dict[str, ProviderSpec] = {}


class UnknownProviderType(VoicebotError, LookupError):
    pass


class MissingProviderSDK(UnknownProviderType):
    """A built-in type whose SDK is not installed; the message names the extra to install."""


def register(type_name: str, module: str) -> None:
    """Make ``type_name`` name the provider whose ``SPEC`` the module ``module`` (a dotted
    path) exposes: types that are not built in (the application's tape replay provider, test
    fakes, plug-ins). The module is imported when a config first names the type."""
    if BUILTIN_TYPES.get(type_name, module) != module:
        raise ValueError(f"provider type {type_name!r} is built in")
    _registered[type_name] = module
    _loaded.pop(type_name, None)


def known_types() -> list[str]:
    return sorted(set(BUILTIN_TYPES) | set(_registered))


def provider_spec(type_name: str) -> ProviderSpec:
    if type_name in _loaded:
        return _loaded[type_name]
    module_name = BUILTIN_TYPES.get(type_name) or _registered.get(type_name)
    if module_name is None:
        raise UnknownProviderType(f"unknown provider type {type_name!r}; known: {', '.join(known_types())}")
    extra, modules = SDK_EXTRAS.get(type_name, ("", ()))
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            raise MissingProviderSDK(
                f"provider type {type_name!r} needs its SDK ({module} is not installed): "
                f"pip install 'voicebot[{extra}]' (or 'voicebot[all]')"
            )
    spec: ProviderSpec = importlib.import_module(module_name).SPEC
    _loaded[type_name] = spec
    return spec


def build_provider(name: str, config: ProviderConfig) -> Provider:
    return provider_spec(config.type).factory(name, config)
