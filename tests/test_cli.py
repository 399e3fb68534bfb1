"""The command line explains itself: --version, help with an example for every command and
option, readable metavars, and help that loads none of the heavy modules (so it is instant)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from voicebot.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def commands(parser: argparse.ArgumentParser, path: str = "voicebot") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from commands(sub, f"{path} {name}")
                else:
                    yield f"{path} {name}", sub


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicebot.cli", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_version_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert run("--version").stdout.strip() == f"voicebot {version}"


def test_every_command_and_option_has_help_with_an_example() -> None:
    found = dict(commands(build_parser()))
    assert set(found) == {
        "voicebot serve",
        "voicebot config check",
        "voicebot dial",
        "voicebot replay",
        "voicebot tape view",
        "voicebot calls",
        "voicebot call",
        "voicebot campaign",
        "voicebot providers check",
    }
    for name, parser in found.items():
        assert parser.epilog and parser.epilog.startswith("examples:\n  voicebot "), name
        assert all(line.startswith(f"  {name}") for line in parser.epilog.splitlines()[1:2]), name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and "e.g." in action.help, (name, action.dest)  # an example each
            metavar = action.metavar or action.dest.upper()
            assert (not metavar.endswith("_") and metavar.isupper()) or action.nargs == 0, (name, metavar)
            if action.option_strings and action.nargs != 0:
                assert action.metavar is not None, (name, action.option_strings)
    top = run("--help").stdout
    assert "more commands register here" not in top
    assert "examples:" in top


def test_help_loads_none_of_the_server_provider_or_audio_code() -> None:
    probe = (
        "import sys, contextlib, io\n"
        "from voicebot.cli import main\n"
        "for argv in (['--help'], ['serve', '--help'], ['replay', '--help'], ['dial', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        "heavy = ('numpy', 'scipy', 'starlette', 'uvicorn', 'pydantic', 'openai', 'google', 'opentelemetry', "
        "'s2s', 'telephony', 'transcoding', 'httpx')\n"
        "print(__import__('json').dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert json.loads(result.stdout) == [], result.stderr
