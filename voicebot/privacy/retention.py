"""Retention: the server deletes what it keeps about calls once it is old enough.

Two stores age out: call tapes (``[recording] retention_days``, by each file's last write, so a
call still being recorded is never old) and per-caller memory (``[memory] retention_days``,
by the time each call ended). :class:`RetentionSweeper` deletes both once when the server
starts and then every ``[server] retention_sweep_s`` (an hour by default), so nothing outlives
its retention by more than that even on a line nobody calls (caller memory also expires rows
whenever it is read or written). The config is read at every sweep: a reload applies to the
next one.

Only files whose *name* is a tape's (``20260124T221530123Z_CA….jsonl``, and anything with
the same stem: renderings, markers) are considered, so a ``dir`` shared with other files
(even ``"."``) loses nothing else. Disk work runs in a worker thread; a file that cannot be
deleted is counted and reported in the sweep's one log line, and never stops the sweep or
the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voicebot.agent.memory import CallerMemory
from voicebot.config import AppConfig

log = logging.getLogger(__name__)

DAY_S = 86400.0
# voicebot.devtools.tape.recorder.tape_filename: UTC time to the millisecond, then the CallSid
# (-1, -2... when a name was taken); any extension, so files beside a tape go with it.
TAPE_NAME = re.compile(r"^\d{8}T\d{9}Z_[A-Za-z0-9_-]+\.[A-Za-z0-9.]+$")


@dataclass(frozen=True, slots=True)
class Swept:
    tapes: int = 0
    memory_rows: int = 0
    failures: int = 0


def expired_tapes(directory: Path, retention_days: float, now: float) -> list[Path]:
    """The tape files in ``directory`` last written more than ``retention_days`` ago."""
    cutoff = now - retention_days * DAY_S
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in directory.iterdir():
            if not TAPE_NAME.match(entry.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = entry.lstat()
                if stat.st_mtime < cutoff and entry.is_file():
                    found.append(entry)
    return found


def sweep(config: AppConfig, now: float | None = None) -> Swept:
    """Delete the expired tapes and caller-memory rows now (blocking: run it in a thread)."""
    now = time.time() if now is None else now
    tapes = failures = rows = 0
    retention = config.recording.retention_days
    if retention is not None:
        for path in expired_tapes(Path(config.recording.dir), retention, now):
            try:
                path.unlink()
                tapes += 1
            except FileNotFoundError:
                pass
            except OSError:
                failures += 1
    memory = CallerMemory(config.memory)
    if memory.path.exists():  # never create the file of a memory no route uses
        try:
            rows = memory.expire(now)
        except Exception as exc:  # sqlite3.Error, OSError: reported, retried next sweep
            log.error("retention: caller memory %s could not be swept: %s", memory.path, exc)
            failures += 1
    return Swept(tapes, rows, failures)


class RetentionSweeper:
    """Runs :func:`sweep` at start and every ``[server] retention_sweep_s``, off the event loop."""

    def __init__(self, config: Callable[[], AppConfig], clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self.sweeps = 0
        self._swept = asyncio.Condition()

    async def sweep_now(self) -> Swept:
        config = self._config()
        swept = await asyncio.to_thread(sweep, config, self._clock())
        if swept.tapes or swept.memory_rows or swept.failures:
            log.info(
                "retention: deleted %d tape file(s) from %s (older than %s days) and %d caller-memory row(s) "
                "(older than %g days)%s",
                swept.tapes,
                config.recording.dir,
                f"{config.recording.retention_days:g}" if config.recording.retention_days else "-",
                swept.memory_rows,
                config.memory.retention_days,
                f"; {swept.failures} could not be deleted" if swept.failures else "",
            )
        async with self._swept:
            self.sweeps += 1
            self._swept.notify_all()
        return swept

    async def run(self) -> None:
        """Sweep now, then forever at the configured interval (cancel to stop)."""
        while True:
            try:
                await self.sweep_now()
            except Exception:
                log.exception("retention: sweep failed; trying again at the next interval")
            await asyncio.sleep(self._config().server.retention_sweep_s)

    async def wait_for_sweeps(self, count: int) -> None:
        """Until ``count`` sweeps have finished since the server started."""
        async with self._swept:
            await self._swept.wait_for(lambda: self.sweeps >= count)
