"""Outbound calls on a fleet: two servers on loopback sharing a real redis-server (the
admission store), Twilio's callbacks sent to whichever instance the test (or a round-robin
"load balancer") picks. Asserted: a call placed on one instance counts against the provider
limit the other sees, every callback and ``GET /calls/{sid}`` works on either instance, the
greeting held for the AMD verdict on the instance the stream reached is released by a verdict
that reached the other one, and a campaign through a balancer never has more calls in
progress than the fleet's limit."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.twilio_rest_fake import TwilioRestFake, loopback_server
from tests.support.audio import to_mulaw, tone
from tests.support.redis_server import redis_server
from tests.support.server import AUTH_TOKEN, RunningServer, running_server
from tests.test_campaign import callees, numbers, results, run_campaign, settings, write_csv
from tests.test_outbound import first_sound_ms, outbound_config, place, show, slots_in_use
from voicebot.devtools.twilio_sim import NoStream, SimulatedTwilio, parse_stream_twiml


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as (url, _):
        yield url


@pytest.fixture
async def rest() -> AsyncIterator[TwilioRestFake]:
    async with TwilioRestFake(auth_token=AUTH_TOKEN) as fake:
        yield fake


def fleet_config(rest: TwilioRestFake, redis_url: str, max_sessions: int = 1, outbound: str = "") -> str:
    prefix = "vb-outbound-" + secrets.token_hex(3)
    admission = f'[admission]\nstore = "redis"\nredis_url = "{redis_url}"\nkey_prefix = "{prefix}"'
    return outbound_config(rest, outbound, parrot=f"max_sessions = {max_sessions}", sections=admission)


async def wait_until_free(server: RunningServer) -> None:
    """The stream's slot goes once its bridge has torn down, on the server's own loop."""
    for _ in range(200):
        if await slots_in_use(server) == 0:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the call's slot was never released")


async def test_a_call_placed_on_one_instance_is_counted_and_followed_by_the_other(
    rest: TwilioRestFake, redis_url: str
) -> None:
    config = fleet_config(rest, redis_url)
    async with running_server(config) as a, running_server(config) as b:
        assert (await place(a, variables={"name": "Ada", "day": "Friday"})).status_code == 201
        created = rest.created[-1]
        # A's reservation is the fleet's one parrot slot: B places nothing and declines a caller.
        assert await slots_in_use(b) == 1
        refused = await place(b)
        assert refused.status_code == 503 and "full" in refused.json()["error"]
        assert len(rest.created) == 1
        with pytest.raises(NoStream):
            async with b.twilio().call():
                pass

        # Twilio's callbacks reach B; the media stream reaches A.
        assert (await rest.status(created, "ringing", via=b.url)).status_code == 204
        answer = await rest.answer(created, via=b.url)
        parsed = parse_stream_twiml(answer.text)
        assert parsed is not None, answer.text
        stream_url = a.url.replace("http", "ws", 1) + urlsplit(parsed[0]).path
        async with SimulatedTwilio(a.url, AUTH_TOKEN).stream(stream_url, parsed[1], created.sid) as call:
            await call.say(to_mulaw(tone(400, 300)))  # "Hello?"
            await call.pause(700)
            assert call.received_media_ms() == 0  # A holds the greeting while AMD listens
            plan = a.runtime.plan_of(created.sid)
            assert plan is not None and plan.route.greeting == "Hi Ada, this is the clinic."
            assert plan.route.instructions == "Remind Ada of the visit on Friday."
            verdict_at = call.now_ms()
            assert (await rest.amd(created, "human", via=b.url)).status_code == 204  # to B; A hears of it
            await call.wait_for(lambda: call.received_media_ms() >= 500, timeout=8)
            await call.pause(200)
            assert first_sound_ms(call) >= verdict_at
            assert await slots_in_use(b) == 1  # still one slot: the stream adopted the CallSid's
            for server in (a, b):
                row = await show(server, created.sid)
                assert row["status"] == "in-progress" and row["answered_by"] == "human", server.url
        assert (await rest.status(created, "completed", 42, via=b.url)).status_code == 204
        for server in (a, b):
            row = await show(server, created.sid)
            assert row["status"] == "completed" and row["duration_s"] == 42, server.url
        await wait_until_free(a)

        # Rung from B, never answered, its end reported to A: the slot comes back for the fleet.
        assert (await place(b)).status_code == 201
        unanswered = rest.created[-1]
        assert await slots_in_use(a) == 1
        assert (await rest.status(unanswered, "no-answer", via=a.url)).status_code == 204
        assert await slots_in_use(a) == 0 and await slots_in_use(b) == 0
        assert (await show(b, unanswered.sid))["status"] == "no-answer"


async def test_a_machine_verdict_on_one_instance_leaves_the_message_on_the_call_streaming_on_the_other(
    rest: TwilioRestFake, redis_url: str
) -> None:
    outbound = 'on_machine = "message"\nvoicemail_message = "Hi {name}, please call the clinic back."'
    config = fleet_config(rest, redis_url, outbound=outbound)
    async with running_server(config) as a, running_server(config) as b:
        assert (await place(a, variables={"name": "Ada"})).status_code == 201
        created = rest.created[-1]
        answer = await rest.answer(created, via=a.url)
        parsed = parse_stream_twiml(answer.text)
        assert parsed is not None, answer.text
        stream_url = b.url.replace("http", "ws", 1) + urlsplit(parsed[0]).path
        async with SimulatedTwilio(b.url, AUTH_TOKEN).stream(stream_url, parsed[1], created.sid) as call:
            rest.connect(call)
            await call.say(to_mulaw(tone(1000, 300)))  # the beep
            beep_end_ms = call.now_ms()
            assert (await rest.amd(created, "machine_end_beep", via=a.url)).status_code == 204
            await asyncio.wait_for(call.twiml_done.wait(), 15)
        assert call.received_media_ms() == 0  # B never let the bot talk
        [(verb, start_ms, _)] = call.twiml_heard
        assert verb == "Say" and start_ms >= beep_end_ms
        assert (await show(b, created.sid))["answered_by"] == "machine_end_beep"


class RoundRobin:
    """A load balancer on loopback: each request goes to the next backend in turn."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.sent: list[str] = []
        self._turn = 0

    async def forward(self, request: Request) -> Response:
        backend = self.backends[self._turn % len(self.backends)]
        self._turn += 1
        self.sent.append(backend)
        async with httpx.AsyncClient(timeout=15) as client:
            upstream = await client.request(
                request.method,
                backend + request.url.path,
                content=await request.body(),
                headers={k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")},
            )
        return Response(upstream.content, upstream.status_code, media_type=upstream.headers.get("content-type"))


@contextlib.asynccontextmanager
async def balancer(backends: list[str]) -> AsyncIterator[tuple[str, RoundRobin]]:
    rr = RoundRobin(backends)
    app = Starlette(routes=[Route("/{path:path}", rr.forward, methods=["GET", "POST"])])
    async with loopback_server(app) as url:
        yield url, rr


async def test_a_campaign_through_a_balancer_keeps_the_fleet_within_the_provider_limit(
    rest: TwilioRestFake, redis_url: str, tmp_path: Path
) -> None:
    to_call = numbers(6)
    config = fleet_config(rest, redis_url, max_sessions=2, outbound="machine_detection = false")
    async with running_server(config) as a, running_server(config) as b, balancer([a.url, b.url]) as (url, rr):
        rest.instances = [a.url, b.url]  # Twilio's callbacks are balanced too
        async with callees(rest, {}, hold_s=0.4) as driver:
            s = settings(a, concurrency=4, full_wait_s=0.1)
            s.url = url
            await run_campaign(s, write_csv(tmp_path / "list.csv", to_call), tmp_path / "out.csv")
    assert set(rr.sent) == {a.url, b.url}
    assert sorted(c.params["To"] for c in rest.created) == to_call  # each once
    assert driver.most_in_progress <= 2  # the campaign asked for 4 at once; the fleet has 2 slots
    lines = results(tmp_path / "out.csv")
    finals = [r for r in lines if r["status"] == "completed"]
    assert sorted(r["number"] for r in finals) == to_call
    assert all(r["duration_s"] == "42" for r in finals)
    assert any(r["status"] == "deferred" for r in lines)
