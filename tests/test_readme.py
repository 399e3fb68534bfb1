"""Every command block of README.md runs as written, so the README cannot drift from the code.

The first block (`./dev serve`, `./dev test`) is tested by tests/test_default_serve.py (serve as
a subprocess answering a call; the suite is this suite). Every other shell block runs with bash,
`set -e`, in a scratch directory laid out like a checkout (`dev`, `scripts/`, `pyproject.toml`,
`examples/`, `tests/fixtures/` linked from the repository, `.venv` shared through VOICEBOT_VENV), so what
a command writes lands there. The only edit: port 8080 becomes a free loopback port, since the
machine is shared. Python blocks run as pytest files in the same kind of directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.readme import ROOT, Block, blocks

LINKED = ("dev", "scripts", "pyproject.toml", "examples", ".env.example", "tests/fixtures")
# Written by a block's commands: checked to exist afterwards (a command that "succeeds" without
# producing its output would otherwise pass).
OUTPUT_OPTIONS = re.compile(r"--(?:out|html) (\S+)|replay \S+ --wav (\S+)")


def checkout(tmp_path: Path) -> Path:
    # A block's ./dev reinstalls a .venv whose stamp is older than pyproject.toml, and would do so
    # from this scratch copy, which has no sources: the shared .venv would lose voicebot itself.
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = ROOT / ".venv" / ".voicebot-installed"
    if not stamp.exists() or stamp.read_text().strip() != want:
        pytest.fail(".venv is older than pyproject.toml: run ./dev --help once (it reinstalls), then these tests")
    work = tmp_path / "checkout"
    work.mkdir()
    for name in LINKED:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).symlink_to(ROOT / name)
    return work


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEBOT_", "OTEL_", "TWILIO_", "PYTEST_"))}
    env["VOICEBOT_VENV"] = str(ROOT / ".venv")
    return env


def shell_blocks() -> list[Block]:
    return blocks()[1:]


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    first, *others = blocks()
    assert first.commands == ["./dev serve", "./dev test"]
    assert len(others) >= 2, "the local loop and the providers check"
    assert any("dial" in b.text and "replay" in b.text for b in others)


@pytest.mark.parametrize("block", shell_blocks(), ids=lambda b: f"README.md:{b.line}")
def test_a_command_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    work = checkout(tmp_path)
    port = str(free_port())
    script = block.text.replace("8080", port)
    # Whatever the block started in the background ends with it, even when a command fails.
    wrapped = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}\nwait\n"
    result = subprocess.run(
        ["bash", "-c", wrapped], cwd=work, env=clean_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"README.md:{block.line} failed\n{result.stdout}\n{result.stderr}"
    for match in OUTPUT_OPTIONS.finditer(block.text):
        written = work / (match.group(1) or match.group(2))
        assert written.is_file() and written.stat().st_size > 0, f"README.md:{block.line}: {written.name} not written"


def test_the_local_loop_records_replays_and_shows_the_call(tmp_path: Path) -> None:
    """What the loop promises beyond exit codes: one tape, replayed without divergence, and
    both pages written."""
    (loop,) = [b for b in shell_blocks() if "dial" in b.text and "replay" in b.text]
    work = checkout(tmp_path)
    script = loop.text.replace("8080", str(free_port()))
    wrapped = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}\nwait\n"
    result = subprocess.run(
        ["bash", "-c", wrapped], cwd=work, env=clean_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    (tape,) = (work / "tapes").glob("*.jsonl")
    assert "no divergence" in result.stdout
    assert f"recording to tapes/{tape.name}" in result.stderr
    assert "1 of 1 utterance(s) answered" in result.stdout
    assert "<audio" in (work / "call.html").read_text() and "Divergences" in (work / "replay.html").read_text()


@pytest.mark.parametrize("block", blocks(("python",)), ids=lambda b: f"README.md:{b.line}")
def test_a_python_block_runs_as_a_test(block: Block, tmp_path: Path) -> None:
    work = checkout(tmp_path)
    snippet = work / "test_readme_snippet.py"
    snippet.write_text(block.text)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(snippet)],
        cwd=work,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"README.md:{block.line}\n{result.stdout}\n{result.stderr}"
    assert "1 passed" in result.stdout
