"""The Redis slot store against a real redis-server: fleet-wide limits, atomicity, expiry,
and an instance that dies holding slots."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.audio import to_mulaw, tone
from tests.support.redis_server import redis_server
from tests.support.server import echo_line_config, running_server
from voicebot.calls.admission import InProcessSlotStore
from voicebot.calls.admission_redis import RedisSlotStore, slot_store
from voicebot.config import AdmissionConfig
from voicebot.devtools.twilio_sim import NoStream

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as (url, _):
        yield url


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[tuple[RedisSlotStore, RedisSlotStore]]:
    """Two instances of the app: separate clients, same Redis."""
    a, b = RedisSlotStore.from_url(redis_url), RedisSlotStore.from_url(redis_url)
    yield a, b
    await a.aclose()
    await b.aclose()


async def test_limit_is_shared_by_every_instance(stores: tuple[RedisSlotStore, RedisSlotStore]) -> None:
    a, b = stores
    assert await a.acquire("openai", "CA1", 2, 30)
    assert await b.acquire("openai", "CA2", 2, 30)
    assert not await a.acquire("openai", "CA3", 2, 30)  # full, fleet-wide
    assert not await b.acquire("openai", "CA3", 2, 30)
    assert await b.acquire("gemini", "CA3", 2, 30)  # limits are per provider
    assert await a.acquire("openai", "CA1", 2, 30)  # idempotent for the holder (renews)
    assert await a.count("openai") == 2
    await b.release("openai", "CA1")  # any instance may release
    await b.release("openai", "CA1")  # idempotent
    assert await b.acquire("openai", "CA3", 2, 30)
    assert await a.acquire("openai", "CA9", None, 30)  # None = unlimited
    assert await a.count("openai") == 3


async def test_concurrent_acquires_never_exceed_the_limit(
    stores: tuple[RedisSlotStore, RedisSlotStore], caplog: pytest.LogCaptureFixture
) -> None:
    """60 at once on a loaded machine: an acquire whose reply is late is refused and voided,
    never admitted unchecked, so the slots held are exactly the calls admitted."""
    a, b = stores
    results = await asyncio.gather(*((a if i % 2 else b).acquire("grok", f"CA{i}", 7, 30) for i in range(60)))
    await a.settle()
    await b.settle()
    admitted = sum(results)
    assert admitted <= 7
    assert await a.count("grok") == admitted
    if "did not answer" not in caplog.text:  # no reply was late: every slot was given out
        assert admitted == 7


async def test_slots_expire_without_heartbeat_and_refresh_keeps_them(
    stores: tuple[RedisSlotStore, RedisSlotStore],
) -> None:
    a, b = stores
    assert await a.acquire("nova", "CAkept", 2, 0.6)
    assert await a.acquire("nova", "CAlost", 2, 0.6)
    for _ in range(4):  # 1.2 s: CAkept heartbeats, CAlost does not
        await asyncio.sleep(0.3)
        assert await a.refresh("nova", "CAkept", 0.6)
    assert not await a.refresh("nova", "CAlost", 0.6)  # its holder learns the slot is gone
    assert await b.count("nova") == 1
    assert await b.acquire("nova", "CAnew", 2, 30)
    assert not await b.acquire("nova", "CAmore", 2, 30)


async def test_the_whole_set_expires_when_nobody_holds_a_slot(
    stores: tuple[RedisSlotStore, RedisSlotStore], redis_url: str
) -> None:
    a, _ = stores
    assert await a.acquire("idle", "CA1", 1, 0.3)
    assert await a.client.exists(a.key("idle")) == 1
    await asyncio.sleep(0.5)
    assert await a.client.exists(a.key("idle")) == 0  # no garbage left in Redis


INSTANCE = textwrap.dedent(
    """
    import asyncio, sys
    from voicebot.calls.admission import SlotLease
    from voicebot.calls.admission_redis import RedisSlotStore

    async def main(url, ttl):
        store = RedisSlotStore.from_url(url)
        leases = []
        for i in range(3):
            lease = SlotLease(store, f"CAdead{i}", {"openai": 3})
            assert await lease.move_to("openai", ttl)
            lease.hold(ttl)  # heartbeats every ttl/3, as a live media stream does
            leases.append(lease)
        print("holding", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
    """
)


async def test_an_instance_that_dies_holding_slots_gives_them_back_after_the_ttl(
    stores: tuple[RedisSlotStore, RedisSlotStore], redis_url: str
) -> None:
    _, survivor = stores
    ttl = 1.0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", INSTANCE, redis_url, str(ttl), stdout=subprocess.PIPE, env=env, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        assert line.strip() == b"holding"
        # While the instance lives, its heartbeats keep the provider full well past the TTL.
        await asyncio.sleep(ttl * 2)
        assert await survivor.count("openai") == 3
        assert not await survivor.acquire("openai", "CAnew", 3, 30)

        proc.send_signal(signal.SIGKILL)  # no release, no goodbye
        await proc.wait()
        killed = time.monotonic()
        assert not await survivor.acquire("openai", "CAnew", 3, 30)  # not before the TTL
        while not await survivor.acquire("openai", "CAnew", 3, 30):
            assert time.monotonic() - killed < ttl + 1.0, "dead instance's slots never came back"
            await asyncio.sleep(0.05)
        assert time.monotonic() - killed >= ttl / 2  # the last heartbeat was at most ttl/3 before the kill
        # Each dead slot expires on its own last heartbeat's clock: within one heartbeat period
        # of the first, all three are gone and only the new call holds a slot.
        while await survivor.count("openai") != 1:
            assert time.monotonic() - killed < ttl + 1.0, "some of the dead instance's slots never came back"
            await asyncio.sleep(0.05)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_redis_down_falls_back_to_a_per_instance_cap(caplog: pytest.LogCaptureFixture) -> None:
    with redis_server() as (url, proc):
        store = RedisSlotStore.from_url(url, unreachable_max_sessions=2)
        assert await store.acquire("openai", "CA1", 5, 30)
        proc.terminate()
        proc.wait(5)
        assert await store.refresh("openai", "CA1", 30)  # a live call's slot is presumed held
        assert await store.acquire("openai", "CA2", 5, 30)  # counted on this instance now...
        assert await store.acquire("openai", "CA3", 5, 30)
        assert not await store.acquire("openai", "CA4", 5, 30)  # ...up to the fallback cap
        await store.release("openai", "CA2")
        assert await store.acquire("openai", "CA4", 5, 30)
        await store.aclose()
    assert caplog.text.count("Redis slot store unreachable") == 1  # logged once, not per call
    assert "admitting anyway" not in caplog.text


async def test_slow_redis_refuses_and_leaves_no_slot_held(caplog: pytest.LogCaptureFixture) -> None:
    """Redis stopped (SIGSTOP) while an acquire is in flight: the acquire is refused after
    ``timeout_s``; when Redis resumes and runs the script, the attempt's void undoes it."""
    with redis_server() as (url, proc):
        store = RedisSlotStore.from_url(url, timeout_s=0.3)
        assert await store.acquire("openai", "CAheld", 5, 30)
        proc.send_signal(signal.SIGSTOP)
        try:
            assert not await store.acquire("openai", "CAslow", 5, 30)
            assert not await store.acquire("openai", "CAheld", 5, 30)  # a renewal: refused, not voided
        finally:
            proc.send_signal(signal.SIGCONT)
        await store.settle()
        assert await store.count("openai") == 1  # CAheld only
        assert await store.client.zscore(store.key("openai"), "CAslow") is None
        assert await store.acquire("openai", "CAslow", 5, 30)  # a new attempt is not tombstoned
        await store.aclose()
    assert "did not answer an acquire" in caplog.text and "unreachable" not in caplog.text


def fleet_config(redis_url: str, prefix: str) -> str:
    return echo_line_config(
        parrot="max_sessions = 1",
        route_extra='on_unavailable = { say = "All our lines are busy." }',
        sections=f'[admission]\nstore = "redis"\nredis_url = "{redis_url}"\nkey_prefix = "{prefix}"',
    )


async def test_two_servers_share_max_sessions_through_redis(redis_url: str) -> None:
    config = fleet_config(redis_url, "vb-fleet-" + secrets.token_hex(3))
    async with running_server(config) as a, running_server(config) as b:
        assert isinstance(a.runtime.slots, RedisSlotStore)
        async with a.twilio().call() as first:
            await first.say(to_mulaw(tone(500, 200)))
            # The one parrot session of the whole fleet is taken on server A: B declines.
            with pytest.raises(NoStream) as declined:
                async with b.twilio().call():
                    pass
            assert declined.value.status == 200 and "All our lines are busy." in declined.value.twiml
        # A's call hung up and released its slot; B now takes a call.
        for _ in range(100):
            if not a.runtime.active:
                break
            await asyncio.sleep(0.02)
        async with b.twilio().call() as second:
            await second.say(to_mulaw(tone(500, 200)))
            assert second.call_sid in b.runtime.active


async def test_a_slow_redis_declines_calls_rather_than_admitting_them() -> None:
    with redis_server() as (url, proc):
        config = fleet_config(url, "vb-slow").replace("[admission]", "[admission]\ntimeout_s = 0.3")
        async with running_server(config) as server:
            proc.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(NoStream) as declined:
                    async with server.twilio().call():
                        pass
            finally:
                proc.send_signal(signal.SIGCONT)
            assert declined.value.status == 200 and "All our lines are busy." in declined.value.twiml
            assert isinstance(server.runtime.slots, RedisSlotStore)
            await server.run_on_server(server.runtime.slots.settle())
            assert await server.run_on_server(server.runtime.slots.count("parrot")) == 0


async def test_store_follows_config_and_never_logs_the_redis_password(caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(slot_store(AdmissionConfig()), InProcessSlotStore)  # off by default
    with caplog.at_level(logging.INFO, logger="voicebot.calls.admission_redis"):
        store = slot_store(AdmissionConfig(store="redis", redis_url="redis://:hunter2@redis.internal:6379/0"))
    assert isinstance(store, RedisSlotStore)
    assert "redis.internal:6379" in caplog.text and "hunter2" not in caplog.text
    await store.aclose()
