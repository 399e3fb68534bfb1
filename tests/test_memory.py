"""Per-caller memory: stored per From number in SQLite, summarised into the next call's
instructions, expired by the retention setting, off unless the route enables it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from s2s.echo import EchoSession
from s2s.provider import Turn
from tests.support.live_call import echo_of
from tests.support.server import echo_line_config, running_server
from voicebot.agent.config import MemoryConfig
from voicebot.agent.memory import CallerMemory, caller_key

CALLER = "+15557654321"
DAY = 86400.0


def memory(tmp_path: Path, **overrides: Any) -> CallerMemory:
    return CallerMemory(MemoryConfig(path=str(tmp_path / "sub" / "memory.sqlite3"), **overrides))


def turns(*texts: str) -> list[Turn]:
    return [Turn("caller" if i % 2 == 0 else "bot", text) for i, text in enumerate(texts)]


async def test_a_remembered_call_is_summarised_for_the_next_one(tmp_path: Path) -> None:
    store = memory(tmp_path)
    assert await store.recall(CALLER) is None
    stored = await store.remember(
        CALLER, "CA1", "desk", "bot-hangup", turns("My order 1234 is late", "It ships Monday", "Thanks")
    )
    assert stored
    block = await store.recall(CALLER)
    assert block is not None
    assert "called before" in block
    assert "My order 1234 is late / Thanks" in block and "It ships Monday" in block
    assert "bot-hangup" in block
    assert await store.recall("+15550000000") is None  # other callers see nothing


async def test_phone_numbers_are_not_stored_in_clear_and_can_be_forgotten(tmp_path: Path) -> None:
    store = memory(tmp_path)
    await store.remember(CALLER, "CA1", "desk", "caller-hangup", turns("hello"))
    dump = "\n".join(sqlite3.connect(store.path).iterdump())
    assert CALLER not in dump and caller_key(CALLER) in dump  # type: ignore[operator]
    assert await store.forget(CALLER) == 1
    assert await store.recall(CALLER) is None


async def test_retention_deletes_old_calls_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    store = memory(tmp_path, retention_days=7, max_calls=2)
    now = time.time()
    await store.remember(CALLER, "CA-old", "desk", "x", turns("order-0"), now=now - 8 * DAY)
    await store.remember(CALLER, "CA-a", "desk", "x", turns("order-1"), now=now - 3 * DAY)
    await store.remember(CALLER, "CA-b", "desk", "x", turns("order-2"), now=now - 2 * DAY)
    await store.remember(CALLER, "CA-c", "desk", "x", turns("order-3"), now=now - 1 * DAY)
    block = await store.recall(CALLER, now=now)
    assert block is not None
    assert "order-3" in block and "order-2" in block
    assert "order-1" not in block and "order-0" not in block
    rows = sqlite3.connect(store.path).execute("SELECT call_sid FROM calls ORDER BY ended_at").fetchall()
    assert rows == [("CA-b",), ("CA-c",)]
    # Past the retention period even the newest call is gone.
    assert await store.recall(CALLER, now=now + 7 * DAY) is None


async def test_withheld_numbers_and_empty_calls_are_not_stored(tmp_path: Path) -> None:
    store = memory(tmp_path)
    assert not await store.remember("anonymous", "CA1", "desk", "x", turns("hi"))
    assert not await store.remember("", "CA2", "desk", "x", turns("hi"))
    assert not await store.remember(CALLER, "CA3", "desk", "x", [])
    assert await store.recall("anonymous") is None


async def test_an_unreadable_store_never_stops_a_call(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    store = CallerMemory(MemoryConfig(path=str(path)))
    assert await store.recall(CALLER) is None
    assert not await store.remember(CALLER, "CA1", "desk", "x", turns("hi"))


def memory_config(path: Path, enabled: bool) -> str:
    route = f"""instructions = "You are the front desk."
memory = {"true" if enabled else "false"}

[routes.dtmf]
inter_digit_timeout_ms = 200"""
    return echo_line_config("desk", route_extra=route, sections=f'[memory]\npath = "{path}"\nretention_days = 30')


async def place_call(config: str, from_: str) -> EchoSession:
    """One call that types an order number, then hangs up; returns its echo session."""
    async with running_server(config) as server, server.twilio().call(from_=from_) as call:
        session = await echo_of(server, call)
        for digit in "1234#":
            await call.press(digit)
        await call.wait_for(lambda: bool(session.received_text), timeout=3)
    return session


async def test_the_next_call_from_the_same_number_starts_with_a_summary(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    config = memory_config(path, enabled=True)
    first = await place_call(config, CALLER)
    assert first.ctx.instructions == "You are the front desk."  # nothing known yet
    store = CallerMemory(MemoryConfig(path=str(path)))
    for _ in range(100):  # the first call is written in the background after it ends
        if await store.recall(CALLER) is not None:
            break
        await asyncio.sleep(0.05)
    second = await place_call(config, CALLER)
    assert second.ctx.instructions.startswith("You are the front desk.\n\nThis caller has called before.")
    assert "The caller entered 1234, then # on the phone keypad." in second.ctx.instructions
    other = await place_call(config, "+15550009999")
    assert other.ctx.instructions == "You are the front desk."


async def test_memory_is_off_unless_the_route_enables_it(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    await place_call(memory_config(path, enabled=False), CALLER)
    await place_call(memory_config(path, enabled=False), CALLER)
    assert not path.exists()
