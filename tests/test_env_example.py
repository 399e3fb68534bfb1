"""`.env.example` documents every environment variable the product reads or its docs and
deployment files reference, each with a comment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from voicebot.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def documented() -> dict[str, str]:
    """Variable -> the comment above it (consecutive variables share one comment)."""
    out: dict[str, str] = {}
    comment: list[str] = []
    after_variable = False
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("#"):
            comment = [line] if after_variable else [*comment, line]
            after_variable = False
        elif "=" in line:
            out[line.split("=", 1)[0].strip()] = "\n".join(comment)
            after_variable = True
        else:
            comment, after_variable = [], False
    return out


def referenced() -> set[str]:
    names: set[str] = set()
    code = [p for pkg in ("voicebot", "s2s", "telephony", "transcoding") for p in (ROOT / pkg).rglob("*.py")]
    for path in code:
        names |= set(re.findall(r'environ(?:\.get)?[\(\[]"([A-Z][A-Z0-9_]+)"', path.read_text()))
    readme_toml = "\n".join(re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S))
    deploy = [
        "\n".join(line for line in p.read_text().splitlines() if not line.lstrip().startswith("#"))
        for p in (ROOT / "infra").rglob("*")
        if p.is_file() and p.suffix != ".md"
    ]
    examples = [p.read_text() for p in (ROOT / "examples").glob("*.toml")]
    for text in (readme_toml, *deploy, *examples):
        names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)(?::-[^}]*)?\}", text))
    return names


def test_every_referenced_variable_is_documented_with_a_comment() -> None:
    docs = documented()
    missing = sorted(referenced() - set(docs))
    assert not missing, f".env.example lacks {missing}"
    for name in referenced():
        assert docs[name].strip(), f"{name} has no comment in .env.example"


def test_env_example_holds_no_secret_values() -> None:
    for name, value in (
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    ):
        if any(word in name for word in ("KEY", "TOKEN", "SECRET", "PASSWORD")):
            assert value == "", f"{name} must be empty in .env.example"


def test_example_config_is_valid_once_its_documented_variables_are_set() -> None:
    env = {name: "set" for name in documented()} | {"VOICEBOT_PUBLIC_URL": "https://voice.example.com"}
    config = load_config(ROOT / "examples" / "voicebot.toml", env=env)
    assert [route.name for route in config.routes] == ["echo-test", "uk", "default"]
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        load_config(ROOT / "examples" / "voicebot.toml", env={k: v for k, v in env.items() if k != "OPENAI_API_KEY"})
