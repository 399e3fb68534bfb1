"""./dev's bootstrap (scripts/bootstrap.sh): it says what it installs while it installs, and it
refuses a VOICEBOT_PYTHON that is too old instead of quietly using another interpreter."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bootstrap(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; ROOT="{ROOT}"; source scripts/bootstrap.sh; {script}'],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VOICEBOT_VENV": str(tmp_path / "venv"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def fake_python(tmp_path: Path, version: str) -> Path:
    """An interpreter that reports ``version`` and fails the >= 3.12 probe, as an old one does."""
    path = tmp_path / "python3.10"
    path.write_text(f'#!/bin/sh\n[ "$1" = --version ] && {{ echo "Python {version}"; exit 0; }}\nexit 1\n')
    path.chmod(0o755)
    return path


def test_a_too_old_voicebot_python_is_refused_with_its_version(tmp_path: Path) -> None:
    old = fake_python(tmp_path, "3.10.14")
    result = bootstrap("ensure_venv", tmp_path, VOICEBOT_PYTHON=str(old))
    assert result.returncode == 1
    assert f"VOICEBOT_PYTHON={old} is Python 3.10.14; voicebot needs Python >= 3.12." in result.stderr
    assert not (tmp_path / "venv").exists()


def test_a_voicebot_python_that_cannot_run_is_named(tmp_path: Path) -> None:
    result = bootstrap("ensure_venv", tmp_path, VOICEBOT_PYTHON=str(tmp_path / "nope"))
    assert result.returncode == 1
    assert f"VOICEBOT_PYTHON={tmp_path / 'nope'} cannot be run." in result.stderr


def test_progress_names_each_step_with_the_elapsed_time(tmp_path: Path) -> None:
    steps = "Collecting numpy", "Building wheel for voicebot (pyproject.toml)", "Installing collected packages: numpy"
    # Each step waits for the reporter to have seen the previous one (no sleeps to race).
    script = "; ".join(
        f"echo '{step}'; until grep -q '{step[:20]}' {tmp_path}/progress.err 2>/dev/null; do sleep 0.05; done"
        for step in steps
    )
    result = bootstrap(
        f'run_with_progress {tmp_path}/pip.log sh -c "{script}" 2>{tmp_path}/progress.err; '
        f"cat {tmp_path}/progress.err >&2",
        tmp_path,
        VOICEBOT_PROGRESS_S="0.1",
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("bootstrap:")]
    assert [line.split(maxsplit=2)[2] for line in lines] == [step[:70] for step in steps]
    assert all(line.split()[1].endswith("s") and line.split()[1][:-1].isdigit() for line in lines)
    assert (tmp_path / "pip.log").read_text().splitlines() == list(steps)


def test_a_failing_command_fails_the_progress_wrapper(tmp_path: Path) -> None:
    result = bootstrap(f"run_with_progress {tmp_path}/pip.log sh -c 'exit 3' || echo status=$?", tmp_path)
    assert "status=3" in result.stdout
