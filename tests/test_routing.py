"""Route selection on To/From (exact, prefix, catch-all, first match wins), through the
running server's webhook and as pure functions."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from telephony.routing import select_route, shadowed_routes
from tests.support.server import AUTH_TOKEN, running_server
from voicebot.config import ConfigError, load_config_text
from voicebot.devtools.twilio_sim import parse_stream_twiml

CONFIG = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.uk_line]
type = "echo"
[providers.vip_line]
type = "echo"
[providers.sales_line]
type = "echo"
[providers.default_line]
type = "echo"

[[routes]]
name = "vip"
to = "+15550001000"
from = ["+1555777*"]
providers = ["vip_line"]

[[routes]]
name = "sales"
to = ["+15550001000", "+15550002000"]
providers = ["sales_line"]
greeting = "Sales, hello!"

[[routes]]
name = "uk"
to = "+44*"
providers = ["uk_line", "default_line"]
language = "en-GB"

[[routes]]
name = "default"
providers = ["default_line"]
"""


@pytest.mark.parametrize(
    ("to", "from_", "route"),
    [
        ("+15550001000", "+15557770001", "vip"),  # exact To and a From prefix
        ("+15550001000", "+15551234567", "sales"),  # same number, another caller
        ("+15550002000", "+15557770001", "sales"),
        ("+442071234567", "+15557770001", "uk"),  # prefix
        ("+15559999999", "+15557770001", "default"),  # catch-all
        ("client:alice", "", "default"),
    ],
)
def test_first_matching_route_wins(to: str, from_: str, route: str) -> None:
    config = load_config_text(CONFIG)
    chosen = select_route(config.routes, to, from_)
    assert chosen is not None and chosen.name == route


def test_no_route_matches_without_a_catch_all() -> None:
    config = load_config_text(CONFIG)
    assert select_route(config.routes[:3], "+15559999999", "+1") is None


async def test_webhook_routes_calls_and_the_plan_uses_the_routes_providers_and_overrides() -> None:
    async with running_server(CONFIG) as server:
        twilio = server.twilio()
        cases = {
            "+15550001000": ("+15557770009", "vip", "vip_line"),
            "+15550002000": ("+15557770009", "sales", "sales_line"),
            "+447700900123": ("+15557770009", "uk", "uk_line"),
            "+15550003000": ("+15557770009", "default", "default_line"),
        }
        for to, (from_, route, provider) in cases.items():
            call_sid = "CA" + secrets.token_hex(16)
            response = await twilio.webhook(to, from_, call_sid)
            assert parse_stream_twiml(response.text)
            plan = next(p for p in server.runtime.handoff.pending.values() if p.call_sid == call_sid)
            assert (plan.route.name, plan.providers[0].name) == (route, provider)
        sales = next(p for p in server.runtime.handoff.pending.values() if p.route.name == "sales")
        assert sales.session_context().greeting == "Sales, hello!"
        uk = next(p for p in server.runtime.handoff.pending.values() if p.route.name == "uk")
        assert [p.name for p in uk.providers] == ["uk_line", "default_line"]
        assert uk.session_context().language == "en-GB"


async def test_unrouted_number_gets_a_polite_message_not_a_stream() -> None:
    config = CONFIG.split('[[routes]]\nname = "default"')[0]
    async with running_server(config) as server:
        response = await server.twilio().webhook("+15559999999", "+15551112222", "CA" + "1" * 32)
        assert response.status_code == 200
        assert "<Stream" not in response.text and "<Say>" in response.text and "<Hangup />" in response.text


def test_shadowed_routes_are_found() -> None:
    config = load_config_text(
        CONFIG
        + """
[[routes]]
name = "too-late"
to = "+44207*"
providers = ["uk_line"]
"""
    )
    shadowed = {(s.route.name, s.by.name) for s in shadowed_routes(config.routes)}
    assert shadowed == {("too-late", "uk")}
    # vip is narrower than sales (same To, From restricted): not shadowed, and sales is not
    # shadowed by vip (it also takes other callers).
    assert not {name for name, _ in shadowed} & {"vip", "sales", "uk"}


def test_bad_number_patterns_are_config_errors() -> None:
    bad = CONFIG.replace('to = "+44*"', 'to = "+4*4"')
    with pytest.raises(ConfigError) as err:
        load_config_text(bad)
    assert "routes[3].to" in str(err.value) and "bad number pattern" in str(err.value)


async def test_max_call_seconds_ends_the_stream_and_frees_the_slot() -> None:
    limited = CONFIG.replace('name = "default"\n', 'name = "default"\nmax_call_seconds = 1.0\n')
    async with running_server(limited) as server, server.twilio().call(to="+15559999999") as call:
        started = call.now_ms()
        await asyncio.wait_for(call.closed.wait(), 4)
        assert 900 <= call.now_ms() - started <= 2000
        await call.wait_for(lambda: not server.runtime.active, timeout=3)
        assert await server.run_on_server(server.runtime.slots.count("default_line")) == 0
