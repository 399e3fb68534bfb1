"""The outbound call store's contract (voicebot.calls.outbound_store), for the in-process store
and the Redis one against a real redis-server: a call has one CallSid, the first final
status wins, one AMD verdict per call, and a waiter on another client hears the verdict."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.support.redis_server import redis_server
from voicebot.calls.outbound_store import InProcessOutboundStore, OutboundRecord, OutboundStore, RedisOutboundStore


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[OutboundStore, OutboundStore]]:
    """Two views of one store, as two instances of a fleet have (one object in process)."""
    if request.param == "memory":
        store = InProcessOutboundStore()
        yield store, store
        return
    with redis_server() as (url, _):
        prefix = "t-" + secrets.token_hex(3)
        a, b = aioredis.Redis.from_url(url), aioredis.Redis.from_url(url)
        yield RedisOutboundStore(a, prefix), RedisOutboundStore(b, prefix)
        await a.aclose()
        await b.aclose()


def record(key: str = "OBkey", ring_s: float = 60.0) -> OutboundRecord:
    return OutboundRecord(
        key, "reminders", "+15551234567", "+15550001111", "parrot", time.time() + ring_s, {"name": "Ada"}
    )


async def test_a_call_has_one_callsid_and_the_first_final_status_wins(
    stores: tuple[OutboundStore, OutboundStore],
) -> None:
    a, b = stores
    await a.create(record())
    assert await b.find("CA1") is None
    named = await b.name("OBkey", "CA1")
    assert named is not None and named.variables == {"name": "Ada"} and named.call_sid == "CA1"
    assert await a.name("OBkey", "CA2") is None  # another CallSid is not this call's
    assert await a.name("OBnope", "CA1") is None
    found = await a.find("CA1")
    assert found is not None and found.key == "OBkey"
    changed, now = await a.advance("OBkey", "ringing", None)
    assert changed and now is not None and now.status == "ringing"
    await b.answer("OBkey")
    changed, now = await b.advance("OBkey", "completed", 42)
    assert changed and now is not None and now.answered and now.duration_s == 42
    changed, now = await a.advance("OBkey", "no-answer", 0)  # late, out of order: ignored
    assert not changed and now is not None and now.status == "completed" and now.duration_s == 42
    await a.set_tape("OBkey", "tapes/x.jsonl")
    found = await b.find("CA1")
    assert found is not None and found.row()["tape"] == "tapes/x.jsonl" and found.row()["status"] == "completed"


async def test_one_verdict_per_call_and_a_waiter_elsewhere_hears_it(
    stores: tuple[OutboundStore, OutboundStore],
) -> None:
    a, b = stores
    await a.create(record())
    assert await a.wait_verdict("OBkey", 0.2) is None  # none yet: the bound passes
    waiting = asyncio.create_task(a.wait_verdict("OBkey", 10.0))
    await asyncio.sleep(0.1)  # subscribed (or not yet: then it reads the verdict from the record)
    first, now = await b.verdict("OBkey", "human")
    assert first and now is not None and now.answered_by == "human"
    assert await asyncio.wait_for(waiting, 5) == "human"
    first, now = await a.verdict("OBkey", "machine_start")
    assert not first and now is not None and now.answered_by == "human" and not now.machine
    assert await b.wait_verdict("OBkey", 0.1) == "human"  # known already: no wait


async def test_a_call_lost_past_its_ring_deadline_reads_unknown(stores: tuple[OutboundStore, OutboundStore]) -> None:
    a, _ = stores
    await a.create(record(ring_s=-1.0))
    got = await a.get("OBkey")
    assert got is not None and got.row()["status"] == "unknown"
    await a.advance("OBkey", "busy", 0)
    got = await a.get("OBkey")
    assert got is not None and got.row()["status"] == "busy"  # a final status stays what it was
