"""``voicebot campaign FILE.csv --route NAME``: call a list of numbers through a running
server's ``POST /calls``, paced, with retries, and resumable.

Input: a CSV with a ``number`` column; a ``timezone`` column (IANA name) places the row in
its own quiet hours; every other column is a call variable (``{name}`` in the route's texts).

Pacing: at most ``cps`` calls placed per second and ``concurrency`` calls in progress from
this campaign. The provider limit itself is the server's: it reserves a slot before dialling
(fleet-wide with the Redis admission store) and answers 503 when the route is full, which
here means "wait and try the same row again", not an attempt.

Busy, no-answer and failed calls are tried again after ``backoff_s``, doubled per attempt,
up to ``attempts``. Quiet hours (``HH:MM-HH:MM``, local to the row) defer a call to their end.

Resume without calling anyone twice: the results CSV is also the journal. A ``placing`` line
is written (and flushed to disk) *before* each ``POST /calls``; the call's final status is
appended when known. On restart a row whose last line is not final was perhaps dialled when
the process died, so it is recorded ``unknown`` and never dialled again.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled", "not-placed", "unknown"})
RETRY = frozenset({"busy", "no-answer", "failed"})
# ``tape``: where the server recorded the call (its transcript is the tape's end record), empty
# when the route does not record; last, so a results file begun by an older version stays readable.
RESULT_COLUMNS = ("row", "number", "attempt", "call_sid", "status", "answered_by", "duration_s", "at", "tape")


@dataclass
class Row:
    index: int
    number: str
    timezone: str | None
    variables: dict[str, str]
    attempts: int = 0
    not_before: float = 0.0  # time.time() before which the row waits (a retry's backoff)
    done: bool = False


@dataclass
class Settings:
    route: str
    url: str
    token: str
    cps: float = 1.0
    concurrency: int = 1
    attempts: int = 3
    backoff_s: float = 300.0
    quiet_hours: tuple[dt.time, dt.time] | None = None
    timezone: str = "UTC"
    poll_s: float = 1.0
    full_wait_s: float = 2.0


def parse_quiet_hours(text: str) -> tuple[dt.time, dt.time]:
    start, _, end = text.partition("-")
    return dt.time.fromisoformat(start.strip()), dt.time.fromisoformat(end.strip())


def quiet_until(now: dt.datetime, window: tuple[dt.time, dt.time]) -> dt.datetime | None:
    """The end of the quiet window ``now`` (aware, local) is in, or None when calls may go out."""
    start, end = window
    t = now.timetz().replace(tzinfo=None)
    inside = start <= t < end if start <= end else (t >= start or t < end)
    if not inside:
        return None
    until = now.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    return until if until > now else until + dt.timedelta(days=1)


def read_rows(path: Path) -> list[Row]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "number" not in reader.fieldnames:
            raise ValueError(f"{path}: needs a 'number' column")
        rows = []
        for i, record in enumerate(reader, start=1):
            number = (record.pop("number") or "").strip()
            tz = (record.pop("timezone", None) or "").strip() or None
            rows.append(Row(i, number, tz, {k: v for k, v in record.items() if k and v is not None}))
    return rows


class Journal:
    """The results CSV, appended to and flushed line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self._file = path.open("a", newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(RESULT_COLUMNS)
            self._flush()

    @staticmethod
    def replay(path: Path, rows: list[Row], settings: Settings) -> list[tuple[Row, str]]:
        """Apply a previous run's lines to ``rows``; returns the rows left in flight (perhaps
        dialled: to be recorded ``unknown``, never called again)."""
        if not path.exists():
            return []
        by_index = {row.index: row for row in rows}
        last: dict[int, tuple[int, str, float]] = {}
        with path.open(newline="") as f:
            for record in csv.DictReader(f):
                index = int(record["row"])
                last[index] = (int(record["attempt"]), record["status"], float(record["at"]))
        in_flight = []
        for index, (attempt, status, at) in last.items():
            row = by_index.get(index)
            if row is None:
                continue
            row.attempts = attempt
            if status == "deferred":  # the server refused it (full): nothing was dialled
                continue
            if status not in FINAL:
                row.done = True
                in_flight.append((row, status))
            elif status in RETRY and attempt < settings.attempts:
                row.not_before = at + settings.backoff_s * 2 ** (attempt - 1)
            else:
                row.done = True
        return in_flight

    def write(
        self, row: Row, status: str, call_sid: str = "", answered_by: str = "", duration: str = "", tape: str = ""
    ) -> None:
        self._writer.writerow(
            (row.index, row.number, row.attempts, call_sid, status, answered_by, duration, f"{time.time():.3f}", tape)
        )
        self._flush()

    def _flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


@dataclass
class Campaign:
    settings: Settings
    rows: list[Row]
    journal: Journal
    clock: Callable[[], float] = time.time
    _last_placed: float = -1e18
    _busy: set[int] = field(default_factory=set)  # rows with a call in progress

    def _ready(self, row: Row, now: float) -> float:
        """Seconds until ``row`` may be called (0: now)."""
        wait = max(0.0, row.not_before - now)
        if self.settings.quiet_hours is not None:
            tz = ZoneInfo(row.timezone or self.settings.timezone)
            until = quiet_until(dt.datetime.fromtimestamp(now, tz), self.settings.quiet_hours)
            if until is not None:
                wait = max(wait, until.timestamp() - now)
        return wait

    async def run(self) -> None:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.token}"}
        async with httpx.AsyncClient(base_url=s.url.rstrip("/"), headers=headers, timeout=30.0) as client:
            slots = asyncio.Semaphore(s.concurrency)
            tasks: set[asyncio.Task[None]] = set()
            try:
                await self._dispatch(client, slots, tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch(
        self, client: httpx.AsyncClient, slots: asyncio.Semaphore, tasks: set[asyncio.Task[None]]
    ) -> None:
        s = self.settings
        while True:
            pending = [r for r in self.rows if not r.done]
            if not pending and not tasks:
                return
            now = self.clock()
            waiting = sorted((self._ready(r, now), r.index, r) for r in pending if r.index not in self._busy)
            if not waiting or waiting[0][0] > 0:
                naps = [w[0] for w in waiting[:1]] + [s.poll_s]
                nap = asyncio.ensure_future(asyncio.sleep(min(naps)))
                await asyncio.wait({nap, *tasks}, return_when=asyncio.FIRST_COMPLETED)
                nap.cancel()
                continue
            await slots.acquire()
            gap = self._last_placed + 1.0 / s.cps - self.clock()
            if gap > 0:
                await asyncio.sleep(gap)
            row = waiting[0][2]
            self._busy.add(row.index)
            self._last_placed = self.clock()
            task = asyncio.ensure_future(self._call(client, row, slots))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _call(self, client: httpx.AsyncClient, row: Row, slots: asyncio.Semaphore) -> None:
        s = self.settings
        try:
            row.attempts += 1
            self.journal.write(row, "placing")
            body = {"to": row.number, "route": s.route, "variables": row.variables}
            response = await client.post("/calls", json=body)
            if response.status_code == 503:
                # the route is full (or the server draining): nothing was dialled; same row later
                row.attempts -= 1
                self.journal.write(row, "deferred")
                row.not_before = self.clock() + s.full_wait_s
                return
            if response.status_code != 201:
                self.journal.write(row, "not-placed")
                row.done = True
                print(f"row {row.index} {row.number}: not placed: {response.text.strip()}", file=sys.stderr)
                return
            sid = response.json()["call_sid"]
            self.journal.write(row, "queued", sid)
            call = await self._wait_final(client, sid)
            status, duration = call["status"], call.get("duration_s")
            self.journal.write(
                row,
                status,
                sid,
                call.get("answered_by") or "",
                "" if duration is None else str(duration),
                call.get("tape") or "",
            )
            if status in RETRY and row.attempts < s.attempts:
                row.not_before = self.clock() + s.backoff_s * 2 ** (row.attempts - 1)
            else:
                row.done = True
        finally:
            self._busy.discard(row.index)
            slots.release()

    async def _wait_final(self, client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
        """``GET /calls/{sid}`` once the call has its final status."""
        while True:
            response = await client.get(f"/calls/{sid}")
            if response.status_code == 200:
                call: dict[str, Any] = response.json()
                if call.get("status") in FINAL:
                    return call
            await asyncio.sleep(self.settings.poll_s)


def resume(path: Path, rows: list[Row], settings: Settings) -> Journal:
    """The journal at ``path``, with a previous run's progress applied to ``rows``; a row that
    was in flight when that run stopped is recorded ``unknown`` (it may have been dialled)."""
    in_flight = Journal.replay(path, rows, settings)
    journal = Journal(path)
    for row, status in in_flight:
        print(f"row {row.index} {row.number}: was {status!r} when the last run stopped; not called again")
        journal.write(row, "unknown")
    return journal


def campaign_command(args: argparse.Namespace) -> int:
    """``voicebot campaign`` (arguments: voicebot.cli)."""
    token = args.token or os.environ.get("VOICEBOT_OPS_TOKEN")
    if not token:
        print("no token: pass --token or set VOICEBOT_OPS_TOKEN (the server's [ops] token)", file=sys.stderr)
        return 2
    try:
        rows = read_rows(args.file)
        quiet = parse_quiet_hours(args.quiet_hours) if args.quiet_hours else None
        ZoneInfo(args.timezone)
    except (OSError, ValueError, KeyError) as exc:
        print(f"campaign: {exc}", file=sys.stderr)
        return 2
    settings = Settings(
        args.route,
        args.url,
        token,
        cps=args.cps,
        concurrency=args.concurrency,
        attempts=args.attempts,
        backoff_s=args.backoff_s,
        quiet_hours=quiet,
        timezone=args.timezone,
    )
    results: Path = args.results or args.file.with_suffix(".results.csv")
    journal = resume(results, rows, settings)
    try:
        asyncio.run(Campaign(settings, rows, journal).run())
    finally:
        journal.close()
    print(f"campaign done: results in {results}")
    return 0
