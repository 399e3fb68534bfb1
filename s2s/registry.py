"""Provider types by name (the ``type`` key of a ``[providers.NAME]`` table).

Built-in provider packages are imported lazily, when a config first names their type, so a
missing optional SDK only affects configs that use it. Each package exposes ``SPEC``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from s2s.provider import Provider, ProviderConfig

BUILTIN_TYPES: dict[str, str] = {
    "echo": "s2s.echo",
    "openai_realtime": "s2s.openai_realtime",
    "grok": "s2s.grok",
    "gemini_live": "s2s.gemini_live",
    "nova_sonic": "s2s.nova_sonic",
    "cascade": "s2s.cascade",
}


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    config_model: type[ProviderConfig]
    factory: Callable[[str, ProviderConfig], Provider]


_registered: dict[str, ProviderSpec] = {}


class UnknownProviderType(LookupError):
    pass


def register(type_name: str, spec: ProviderSpec) -> None:
    """Add a provider type that is not built in (tests, plug-ins, the tape replay provider)."""
    _registered[type_name] = spec


def known_types() -> list[str]:
    return sorted(set(BUILTIN_TYPES) | set(_registered))


def provider_spec(type_name: str) -> ProviderSpec:
    if type_name in _registered:
        return _registered[type_name]
    module_name = BUILTIN_TYPES.get(type_name)
    if module_name is None:
        raise UnknownProviderType(f"unknown provider type {type_name!r}; known: {', '.join(known_types())}")
    spec: ProviderSpec = importlib.import_module(module_name).SPEC
    _registered[type_name] = spec
    return spec


def build_provider(name: str, config: ProviderConfig) -> Provider:
    return provider_spec(config.type).factory(name, config)
