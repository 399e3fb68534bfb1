"""Per-caller memory: a short summary of a caller's past calls, put into the instructions when
they call again. Off unless a route sets ``memory = true``.

Storage is one SQLite file (``[memory] path``), used through the stdlib ``sqlite3`` module in
a worker thread (``asyncio.to_thread``) so disk I/O never stalls the audio loop. A fresh
connection per operation keeps it thread-safe with no shared state; an operation is one small
indexed query, far below a call's latency budget.

What is stored, and for how long (data retention): for each finished call, the caller key,
time, route, outcome and a summary of at most ``max_summary_chars`` built from the caller's
and bot's final transcript turns — never audio and never the whole transcript. The caller key
is a SHA-256 of the ``From`` number, so the file alone does not list phone numbers
(:func:`caller_key` recomputes it to look a caller up or :meth:`CallerMemory.forget` them).
Rows older than ``retention_days`` are deleted on every read and write, and only the newest
``max_calls`` calls per caller are kept. Withheld numbers (``anonymous``, empty) are never stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from s2s.provider import Turn
from voicebot.agent.config import MemoryConfig

log = logging.getLogger(__name__)

_WITHHELD = {"", "anonymous", "restricted", "unknown", "unavailable", "private"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_sid  TEXT PRIMARY KEY,
    caller    TEXT NOT NULL,
    ended_at  REAL NOT NULL,
    route     TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    summary   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_by_caller ON calls (caller, ended_at);
CREATE INDEX IF NOT EXISTS calls_by_age ON calls (ended_at);
"""


def caller_key(number: str) -> str | None:
    """The stored key for a ``From`` number; None when the number is withheld."""
    normalized = number.strip().lower()
    if normalized in _WITHHELD:
        return None
    return hashlib.sha256(normalized.encode()).hexdigest()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def summarize_call(transcript: Sequence[Turn], limit: int) -> str:
    """An extractive summary of one call: what the caller said (in order, the most telling
    part of a call for next time) and the bot's last answer. No model is involved, so it
    costs nothing and cannot invent facts."""
    said = " / ".join(t.text for t in transcript if t.role == "caller")
    last_bot = next((t.text for t in reversed(transcript) if t.role == "bot"), "")
    parts = []
    if said:
        parts.append(f'the caller said: "{_clip(said, limit * 2 // 3)}"')
    if last_bot:
        parts.append(f'you last said: "{_clip(last_bot, limit // 3)}"')
    return "; ".join(parts) or "nothing was said"


class CallerMemory:
    def __init__(self, config: MemoryConfig) -> None:
        self.config = config
        self.path = Path(config.path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5.0)
        conn.executescript(_SCHEMA)
        return conn

    def _expire(self, conn: sqlite3.Connection, now: float) -> int:
        cutoff = now - self.config.retention_days * 86400.0
        return int(conn.execute("DELETE FROM calls WHERE ended_at < ?", (cutoff,)).rowcount)

    # -- blocking operations (run in a worker thread) ----------------------------------

    def _recall(self, key: str, now: float) -> list[tuple[float, str, str]]:
        with self._connect() as conn:
            self._expire(conn, now)
            rows = conn.execute(
                "SELECT ended_at, outcome, summary FROM calls WHERE caller = ? ORDER BY ended_at DESC LIMIT ?",
                (key, self.config.max_calls),
            ).fetchall()
        conn.close()
        return [(float(r[0]), str(r[1]), str(r[2])) for r in rows]

    def _remember(self, key: str, call_sid: str, route: str, outcome: str, summary: str, now: float) -> None:
        with self._connect() as conn:
            self._expire(conn, now)
            conn.execute(
                "INSERT OR REPLACE INTO calls (call_sid, caller, ended_at, route, outcome, summary) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (call_sid, key, now, route, outcome, summary),
            )
            conn.execute(
                "DELETE FROM calls WHERE caller = ? AND call_sid NOT IN "
                "(SELECT call_sid FROM calls WHERE caller = ? ORDER BY ended_at DESC LIMIT ?)",
                (key, key, self.config.max_calls),
            )
        conn.close()

    def expire(self, now: float) -> int:
        """Delete the rows older than ``retention_days`` now (blocking); how many went. The
        server's retention sweep (voicebot.privacy.retention) calls it even when nobody calls."""
        with self._connect() as conn:
            deleted = self._expire(conn, now)
        conn.close()
        return deleted

    def _forget(self, key: str) -> int:
        with self._connect() as conn:
            deleted = conn.execute("DELETE FROM calls WHERE caller = ?", (key,)).rowcount
        conn.close()
        return int(deleted)

    # -- async API ---------------------------------------------------------------------

    async def recall(self, caller: str, now: float | None = None) -> str | None:
        """The instructions block about this caller's past calls, or None (new, withheld,
        or the store failed: memory is a nicety and never stops a call)."""
        key = caller_key(caller)
        if key is None:
            return None
        try:
            rows = await asyncio.to_thread(self._recall, key, time.time() if now is None else now)
        except sqlite3.Error as exc:
            log.error("caller memory %s unreadable (%s); the call goes ahead without it", self.path, exc)
            return None
        if not rows:
            return None
        lines = [
            f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(ended))} (ended: {outcome}): {summary}"
            for ended, outcome, summary in rows
        ]
        block = "\n".join(lines)
        header = "This caller has called before. What happened on their recent calls (newest first):\n"
        return header + _clip(block, self.config.max_summary_chars)

    async def remember(
        self,
        caller: str,
        call_sid: str,
        route: str,
        outcome: str,
        transcript: Sequence[Turn],
        now: float | None = None,
    ) -> bool:
        """Store a finished call; False when it was not stored (withheld number, empty call,
        or a storage error, which is logged)."""
        key = caller_key(caller)
        if key is None or not transcript:
            return False
        summary = summarize_call(transcript, self.config.max_summary_chars // self.config.max_calls)
        try:
            await asyncio.to_thread(
                self._remember, key, call_sid, route, outcome, summary, time.time() if now is None else now
            )
        except sqlite3.Error as exc:
            log.error("call %s: caller memory %s not written (%s); call not remembered", call_sid, self.path, exc)
            return False
        return True

    async def forget(self, caller: str) -> int:
        """Delete everything remembered about ``caller`` (a data-subject request)."""
        key = caller_key(caller)
        return 0 if key is None else await asyncio.to_thread(self._forget, key)
