"""Admission control: per-provider max_sessions taken at the webhook, held by the stream,
released on every exit path; circuit breakers skipping failing providers."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from s2s.circuit import CircuitBoard, CircuitState
from tests.fakes.faulty_provider import faulty_servers
from tests.support.server import AUTH_TOKEN, RunningServer, running_server
from voicebot.calls.admission import InProcessSlotStore, SlotLease, admit
from voicebot.devtools.twilio_sim import NoStream, parse_stream_twiml


def config(providers: str, chain: list[str], server: str = "", route_extra: str = "", resilience: str = "") -> str:
    return f"""
[server]
{server}

[resilience]
{resilience}

[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

{providers}

[[routes]]
name = "main"
providers = {chain!r}
{route_extra}
"""


def echo(name: str, max_sessions: int | None = None) -> str:
    limit = f"max_sessions = {max_sessions}" if max_sessions else ""
    return f'[providers.{name}]\ntype = "echo"\n{limit}\n'


def sid() -> str:
    return "CA" + secrets.token_hex(16)


async def slots(server: RunningServer, provider: str) -> int:
    return await server.run_on_server(server.runtime.slots.count(provider))


async def wait_slots(server: RunningServer, provider: str, expected: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (held := await slots(server, provider)) != expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{provider} holds {held} slot(s), expected {expected}")
        await asyncio.sleep(0.02)


async def test_three_simultaneous_calls_with_max_sessions_2_split_exactly_2_and_1() -> None:
    cfg = config(echo("first", 2) + echo("second"), ["first", "second"])
    async with running_server(cfg) as server:
        twilio = server.twilio()
        responses = await asyncio.gather(*(twilio.webhook("+15550001111", "+15557654321", sid()) for _ in range(3)))
        assert all(r.status_code == 200 and parse_stream_twiml(r.text) for r in responses)
        chosen = sorted(plan.providers[0].name for plan in server.runtime.handoff.pending.values())
        assert chosen == ["first", "first", "second"]
        assert await slots(server, "first") == 2
        assert await slots(server, "second") == 1


async def test_when_every_provider_is_full_the_webhook_returns_on_unavailable() -> None:
    cfg = config(
        echo("only", 2),
        ["only"],
        route_extra='[routes.on_unavailable]\nsay = "Please hold the line later."\ndial = "+15550002222"',
    )
    async with running_server(cfg) as server:
        twilio = server.twilio()
        responses = await asyncio.gather(*(twilio.webhook("+15550001111", "+15557654321", sid()) for _ in range(3)))
        streams = [r for r in responses if parse_stream_twiml(r.text)]
        declined = [r for r in responses if not parse_stream_twiml(r.text)]
        assert len(streams) == 2 and len(declined) == 1
        assert "<Say>Please hold the line later.</Say><Dial>+15550002222</Dial>" in declined[0].text


async def test_slot_is_released_after_hang_up() -> None:
    async with running_server(config(echo("only", 1), ["only"])) as server:
        twilio = server.twilio()
        async with twilio.call() as call:
            await call.pause(200)
            assert await slots(server, "only") == 1
            with pytest.raises(NoStream):
                async with twilio.call():
                    pass
        await wait_slots(server, "only", 0)
        async with twilio.call() as second:
            await second.pause(100)
            assert await slots(server, "only") == 1


async def test_slot_is_released_after_the_provider_crashes() -> None:
    async with faulty_servers("ok") as (provider,):
        providers = f'[providers.only]\ntype = "loopback"\nurl = "{provider.url}"\nmax_sessions = 1\n'
        # One connect attempt per recovery: the circuit (3 failures) stays closed for the next call.
        async with running_server(config(providers, ["only"], resilience="connect_attempts = 1")) as server:
            twilio = server.twilio()
            async with twilio.call() as call:
                await call.wait_for(lambda: bool(provider.live), timeout=3)
                provider.mode = "refuse"
                provider.drop_all()  # and recovery cannot reconnect: the call ends
                await asyncio.wait_for(call.closed.wait(), 5)
            await wait_slots(server, "only", 0)
            provider.mode = "ok"
            async with twilio.call() as again:
                await again.wait_for(lambda: len(provider.live) == 1, timeout=3)


async def test_slot_of_a_stream_that_never_connects_is_released_on_a_timer() -> None:
    cfg = config(echo("only", 1), ["only"], server="stream_connect_timeout_s = 0.5")
    async with running_server(cfg) as server:
        twilio = server.twilio()
        response = await twilio.webhook("+15550001111", "+15557654321", sid())
        assert parse_stream_twiml(response.text)
        assert await slots(server, "only") == 1
        started = time.monotonic()
        # No further webhook arrives: the release must come from the timer.
        await wait_slots(server, "only", 0, timeout=3)
        assert time.monotonic() - started < 0.5 + 1.0
        assert not server.runtime.handoff.pending


# -- the pieces, without a server ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_after_n_failures_then_lets_one_probe_through_after_the_cool_down() -> None:
    clock = Clock()
    board = CircuitBoard(failures=3, cooldown_s=10.0, clock=clock)
    breaker = board["p"]
    for _ in range(2):
        assert breaker.allow_attempt()
        breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.available() and not breaker.allow_attempt()
    clock.now = 10.0
    assert breaker.available()
    assert breaker.allow_attempt()  # the probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow_attempt()  # one probe at a time
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN and not breaker.available()
    clock.now = 20.0
    assert breaker.allow_attempt()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow_attempt()


async def test_slot_store_expires_unrefreshed_slots_and_moves_a_lease_between_providers() -> None:
    clock = Clock()
    store = InProcessSlotStore(clock)
    board = CircuitBoard()
    first = SlotLease(store, "CA1", {"a": 1, "b": 1})
    second = SlotLease(store, "CA2", {"a": 1, "b": 1})
    assert await admit(["a", "b"], first, board, ttl_s=5) == "a"
    assert await admit(["a", "b"], second, board, ttl_s=5) == "b"
    assert await admit(["a", "b"], SlotLease(store, "CA3", {"a": 1, "b": 1}), board, ttl_s=5) is None
    assert await admit(["a"], first, board, ttl_s=5) == "a"  # idempotent for the holder
    clock.now = 4.0
    assert await store.refresh("a", "CA1", 5)
    clock.now = 6.0  # CA2's slot on b was never refreshed
    assert await store.count("a") == 1 and await store.count("b") == 0
    assert await first.move_to("b")
    assert await store.count("a") == 0 and await store.count("b") == 1
    await first.release()
    assert await store.count("b") == 0


async def test_open_circuit_makes_the_webhook_pick_the_next_provider_without_trying_the_broken_one() -> None:
    async with faulty_servers("refuse") as (broken,):
        providers = f'[providers.broken]\ntype = "loopback"\nurl = "{broken.url}"\n' + echo("backup")
        cfg = config(providers, ["broken", "backup"], resilience="circuit_failures = 2\ncircuit_cooldown_s = 60")
        async with running_server(cfg) as server:
            twilio = server.twilio()
            async with twilio.call() as call:  # two failed attempts open the circuit, backup answers
                await call.wait_for(lambda: broken.handshakes_refused >= 2, timeout=3)
            refused = broken.handshakes_refused
            response = await twilio.webhook("+15550001111", "+15557654321", sid())
            assert parse_stream_twiml(response.text)
            plan = next(iter(server.runtime.handoff.pending.values()))
            assert plan.providers[0].name == "backup"
            assert broken.handshakes_refused == refused
