"""Retention: the running server deletes tapes and caller-memory rows older than their
``retention_days`` when it starts and then every ``[server] retention_sweep_s``. Files and rows
are aged by their timestamps (mtime, ``ended_at``), never by waiting."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest

from s2s.provider import Turn
from tests.support.server import RunningServer, echo_line_config, running_server
from voicebot.agent.config import MemoryConfig
from voicebot.agent.memory import CallerMemory
from voicebot.devtools.tape.recorder import tape_filename
from voicebot.privacy.retention import DAY_S, RetentionSweeper

CALLER = "+15550107777"


def aged(path: Path, days: float, text: str = "{}\n") -> Path:
    path.write_text(text)
    then = time.time() - days * DAY_S
    os.utime(path, (then, then))
    return path


def config(tmp_path: Path, sweep_s: float = 3600) -> str:
    return echo_line_config(
        sections=f"""[server]
retention_sweep_s = {sweep_s}
[recording]
dir = "{tmp_path / "tapes"}"
retention_days = 30
[memory]
path = "{tmp_path / "memory.sqlite3"}"
retention_days = 7""",
        route_extra="memory = true",
    )


async def sweeps(server: RunningServer, count: int) -> None:
    sweeper: RetentionSweeper = server.app.state.retention
    await asyncio.wait_for(server.run_on_server(sweeper.wait_for_sweeps(count)), 10)


def sweeps_done(server: RunningServer) -> int:
    sweeper: RetentionSweeper = server.app.state.retention
    return sweeper.sweeps


async def test_the_server_deletes_old_tapes_and_memory_rows_when_it_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tapes = tmp_path / "tapes"
    tapes.mkdir()
    old = aged(tapes / tape_filename("CA" + "1" * 32), days=31)
    old_stem = old.with_suffix(".wav")
    aged(old_stem, days=31)
    recent = aged(tapes / tape_filename("CA" + "2" * 32), days=29)
    unrelated = aged(tapes / "notes.txt", days=400)
    memory = CallerMemory(MemoryConfig(path=str(tmp_path / "memory.sqlite3"), retention_days=7, max_calls=10))
    said = [Turn("caller", "hello")]
    await memory.remember(CALLER, "CA" + "a" * 32, "default", "caller-hangup", said, now=time.time() - 8 * DAY_S)
    await memory.remember(CALLER, "CA" + "b" * 32, "default", "caller-hangup", said, now=time.time() - 6 * DAY_S)
    caplog.set_level(logging.INFO, logger="voicebot.privacy.retention")

    async with running_server(config(tmp_path)) as server:
        await sweeps(server, 1)

    assert not old.exists() and not old_stem.exists()
    assert recent.exists() and unrelated.exists()
    with sqlite3.connect(tmp_path / "memory.sqlite3") as conn:
        assert conn.execute("SELECT call_sid FROM calls").fetchall() == [("CA" + "b" * 32,)]
    assert "retention: deleted 2 tape file(s)" in caplog.text and "1 caller-memory row(s)" in caplog.text


async def test_the_sweep_runs_again_at_its_interval(tmp_path: Path) -> None:
    tapes = tmp_path / "tapes"
    tapes.mkdir()
    async with running_server(config(tmp_path, sweep_s=0.1)) as server:
        await sweeps(server, 1)
        later = aged(tapes / tape_filename("CA" + "3" * 32), days=45)  # written after the first sweep
        # the second sweep from now started after the file was aged, whatever the first one saw
        await sweeps(server, sweeps_done(server) + 2)
        assert not later.exists()


async def test_without_retention_days_tapes_are_kept_and_no_memory_file_is_created(tmp_path: Path) -> None:
    tapes = tmp_path / "tapes"
    tapes.mkdir()
    ancient = aged(tapes / tape_filename("CA" + "4" * 32), days=3000)
    text = echo_line_config(sections=f'[recording]\ndir = "{tapes}"\n[memory]\npath = "{tmp_path / "m.sqlite3"}"')
    async with running_server(text) as server:
        await sweeps(server, 1)
    assert ancient.exists() and not (tmp_path / "m.sqlite3").exists()
