"""One way to make a provider type known: a module that exposes ``SPEC``, by dotted path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from s2s.registry import BUILTIN_TYPES, known_types, provider_spec, register


def test_a_registered_module_is_imported_only_when_a_config_names_its_type(tmp_path: Path) -> None:
    (tmp_path / "vb_plugin_provider.py").write_text("from s2s.echo import SPEC\n")
    sys.path.insert(0, str(tmp_path))
    try:
        register("plugin_echo", "vb_plugin_provider")
        assert "plugin_echo" in known_types() and "vb_plugin_provider" not in sys.modules
        spec = provider_spec("plugin_echo")
        assert spec is sys.modules["vb_plugin_provider"].SPEC
    finally:
        sys.path.remove(str(tmp_path))


def test_the_application_registers_the_tape_type_the_same_way() -> None:
    import voicebot.config  # noqa: F401  (where the application's types are registered)
    from voicebot.devtools.tape.provider import SPEC

    assert provider_spec("tape") is SPEC


def test_a_built_in_type_cannot_be_taken_over() -> None:
    with pytest.raises(ValueError, match="built in"):
        register("openai_realtime", "somewhere.else")
    register("echo", BUILTIN_TYPES["echo"])  # naming the built-in module itself is harmless


@pytest.mark.parametrize("type_name", sorted(BUILTIN_TYPES))
def test_every_vendor_folder_has_the_one_layout(type_name: str) -> None:
    """``config.py`` holds the provider table (the SPEC's config model), ``session.py`` the
    asyncio shell; the package's ``__init__`` exposes SPEC and nothing registers on import."""
    package = BUILTIN_TYPES[type_name]
    folder = Path(__file__).resolve().parent.parent / package.replace(".", "/")
    assert (folder / "config.py").is_file() and (folder / "session.py").is_file()
    spec = provider_spec(type_name)
    assert spec.config_model.__module__ == f"{package}.config"
