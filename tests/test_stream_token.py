"""A fleet: the voice webhook reaches one instance and the media stream another. The signed
stream token lets any instance take the call; forged, tampered, expired, misdirected and
replayed tokens are refused; with Redis the call holds exactly one slot fleet-wide until it
ends, also after the webhook instance stops waiting for the stream."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from tests.support.audio import dominant_frequency, to_mulaw, tone
from tests.support.redis_server import redis_server
from tests.support.server import AUTH_TOKEN, RunningServer, echo_line_config, running_server
from voicebot.calls.stream_token import (
    CLOCK_SKEW_S,
    MAX_TOKEN_CHARS,
    PARAMETER_LIMIT,
    BadStreamToken,
    StreamTicket,
    StreamTokens,
    derived_key,
)
from voicebot.config import ConfigError, load_config_text
from voicebot.devtools.twilio_sim import NoStream, SimulatedCall, SimulatedTwilio, parse_stream_twiml

SECRET = "fleet-wide-stream-token-secret-0123"
CHAIN = ("openai_realtime", "gemini_live_eu", "nova_sonic_us", "grok_voice", "openai_backup")


def sid() -> str:
    return "CA" + secrets.token_hex(16)


def ticket(call_sid: str, **changes: object) -> StreamTicket:
    base = StreamTicket(call_sid, "customer-support-emea", CHAIN, "+861234567890123", "+447911123456789", time.time())
    return replace(base, **changes)  # type: ignore[arg-type]


def fleet_config(server: str = "", sections: str = "", parrot: str = "") -> str:
    return echo_line_config(parrot=parrot, sections=f'[server]\nstream_token_secret = "{SECRET}"\n{server}\n{sections}')


# -- the token itself ---------------------------------------------------------------------


def test_a_five_provider_chain_with_long_numbers_fits_twilios_parameter_limit() -> None:
    tokens = StreamTokens(secrets.token_bytes(32))
    call_sid = sid()
    token = tokens.issue(ticket(call_sid))
    assert token is not None
    assert len("token") + len(token) < PARAMETER_LIMIT
    got = tokens.verify(token, call_sid, max_age_s=15)
    assert (got.route, got.providers, got.caller, got.called) == (
        "customer-support-emea",
        CHAIN,
        "+861234567890123",
        "+447911123456789",
    )
    assert tokens.issue(ticket(call_sid)) != token  # a retried webhook gets a distinct token


def test_an_oversized_plan_drops_caller_and_called_then_gives_up() -> None:
    tokens = StreamTokens(secrets.token_bytes(32))
    call_sid = sid()
    sip = "sip:" + "a" * 300 + "@example.com"
    token = tokens.issue(ticket(call_sid, caller=sip))
    assert token is not None and len(token) <= MAX_TOKEN_CHARS
    got = tokens.verify(token, call_sid, max_age_s=15)
    assert (got.caller, got.called, got.providers) == ("", "", CHAIN)
    assert tokens.issue(ticket(call_sid, route="r" * 400)) is None


def tamper(token: str) -> str:
    """The same MAC over a payload whose provider chain was rewritten."""
    payload, _, mac = token.rpartition(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body[3] = ["attacker"]
    forged = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return forged + "." + mac


def test_forged_tampered_misdirected_expired_and_malformed_tokens_are_refused() -> None:
    tokens = StreamTokens(secrets.token_bytes(32))
    call_sid = sid()
    issued = time.time()
    token = tokens.issue(ticket(call_sid, issued_at=issued))
    assert token is not None
    cases = {
        "bad signature": [tamper(token), StreamTokens(b"another key").issue(ticket(call_sid)) or "", token[:-2] + "AA"],
        "malformed": ["", "no-dot-here"],
        "issued for call": [token],
    }
    for reason, bad in cases.items():
        for candidate in bad:
            presented_by = "CAsomeoneelse" if reason == "issued for call" else call_sid
            with pytest.raises(BadStreamToken, match=reason):
                tokens.verify(candidate, presented_by, max_age_s=15)
    assert tokens.verify(token, call_sid, 15, now=issued + 15 + CLOCK_SKEW_S - 0.1).call_sid == call_sid
    with pytest.raises(BadStreamToken, match="expired"):
        tokens.verify(token, call_sid, 15, now=issued + 15 + CLOCK_SKEW_S + 0.1)
    with pytest.raises(BadStreamToken, match="future"):
        tokens.verify(token, call_sid, 15, now=issued - CLOCK_SKEW_S - 1)


def test_the_key_comes_from_the_secret_else_from_the_auth_token_never_the_token_itself() -> None:
    with_secret = load_config_text(fleet_config())
    from_token = load_config_text(echo_line_config())
    bare = load_config_text(echo_line_config().replace(f'auth_token = "{AUTH_TOKEN}"', "").replace("= true", "= false"))
    assert derived_key(with_secret) == SECRET.encode()
    key = derived_key(from_token)
    assert key is not None and len(key) == 32 and AUTH_TOKEN.encode() not in key
    assert key == derived_key(load_config_text(echo_line_config(route="other")))  # same on every instance
    assert derived_key(bare) is None
    empty = load_config_text(echo_line_config(sections='[server]\nstream_token_secret = ""'))
    assert empty.server.stream_token_secret is None and derived_key(empty) == key
    with pytest.raises(ConfigError, match="at least 16"):
        load_config_text(echo_line_config(sections='[server]\nstream_token_secret = "short"'))


# -- two running instances ----------------------------------------------------------------


def across(a: RunningServer, b: RunningServer) -> SimulatedTwilio:
    """Twilio as a load balancer makes it: the webhook reaches ``a``, the stream ``b``."""
    return SimulatedTwilio(a.url, AUTH_TOKEN, stream_base_url=b.url)


async def assert_echoes(call: SimulatedCall, freq: float) -> None:
    await call.say(to_mulaw(tone(freq, 600)))
    await call.wait_for(lambda: call.received_media_ms() >= 550, timeout=8)
    await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
    heard = call.heard_pcm()
    assert heard[abs(heard.astype(int)) > 1000].size > 3000
    assert dominant_frequency(heard, 8000) == pytest.approx(freq, abs=15)


async def test_the_stream_of_a_call_answered_by_one_instance_works_on_another() -> None:
    config = fleet_config()
    async with running_server(config) as a, running_server(config) as b:
        async with across(a, b).call() as call:
            await assert_echoes(call, 700)
            assert call.call_sid in b.runtime.active and call.call_sid not in a.runtime.active
            assert not call.closed.is_set()
        # A still waits for a stream that went elsewhere; B held its own slot for the call.
        assert [p.call_sid for p in a.runtime.handoff.pending.values()] == [call.call_sid]


async def refused(twilio: SimulatedTwilio, server: RunningServer, token: str, call_sid: str) -> int | None:
    stream_url = server.url.replace("http", "ws", 1) + "/twilio/media"
    async with twilio.stream(stream_url, {"token": token}, call_sid) as call:
        await asyncio.wait_for(call.closed.wait(), timeout=5)
        return call.close_code


async def test_bad_tokens_are_refused_with_1008_and_logged_and_a_token_works_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = fleet_config()
    async with running_server(config) as a, running_server(config) as b:
        twilio = across(a, b)
        call_sid = sid()
        response = await twilio.webhook("+15550001111", "+15557654321", call_sid)
        parsed = parse_stream_twiml(response.text)
        assert parsed is not None
        token = parsed[1]["token"]
        expired = a.runtime.stream_tokens.issue(ticket(call_sid, route="default", providers=("parrot",), issued_at=1.0))
        forged = StreamTokens(b"not the fleet key").issue(ticket(call_sid, route="default", providers=("parrot",)))
        bad = {
            "bad signature": [tamper(token), forged or ""],
            "expired": [expired or ""],
        }
        for reason, tokens in bad.items():
            for candidate in tokens:
                caplog.clear()
                assert await refused(twilio, b, candidate, call_sid) == 1008
                assert f"call {call_sid}: stream token refused: {reason}" in caplog.text
        caplog.clear()
        assert await refused(twilio, b, token, sid()) == 1008  # a genuine token, another call's stream
        assert "stream token refused: issued for call" in caplog.text

        async with twilio.stream(b.url.replace("http", "ws", 1) + "/twilio/media", {"token": token}, call_sid) as call:
            await assert_echoes(call, 900)
            caplog.clear()
            assert await refused(twilio, b, token, call_sid) == 1008  # replay to the same instance
            assert "refused a second media stream while the call has one" in caplog.text
            assert not call.closed.is_set()
        await call.wait_for(lambda: not b.runtime.active, timeout=5)
        caplog.clear()
        assert await refused(twilio, b, token, call_sid) == 1008  # replay after the call ended
        assert "already used on this instance (replay)" in caplog.text


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as (url, _):
        yield url


async def slots(server: RunningServer) -> int:
    return await server.run_on_server(server.runtime.slots.count("parrot"))


async def test_with_redis_one_call_holds_one_slot_fleet_wide_until_it_ends(redis_url: str) -> None:
    prefix = "vb-stream-" + secrets.token_hex(3)
    config = fleet_config(
        server="stream_connect_timeout_s = 1.0",
        sections=f'[admission]\nstore = "redis"\nredis_url = "{redis_url}"\nkey_prefix = "{prefix}"',
        parrot="max_sessions = 1",
    )
    async with running_server(config) as a, running_server(config) as b:
        async with across(a, b).call() as call:
            await call.wait_for(lambda: call.call_sid in b.runtime.active, timeout=5)
            assert await slots(a) == await slots(b) == 1  # adopted, not taken twice
            # A gives up waiting for the stream it never got: that must not free B's slot.
            deadline = time.monotonic() + 5
            while a.runtime.handoff.pending:
                assert time.monotonic() < deadline, "A never expired its reservation"
                await asyncio.sleep(0.05)
            assert await slots(a) == await slots(b) == 1
            for server in (a, b):  # the fleet's one parrot session is still taken
                with pytest.raises(NoStream) as declined:
                    async with server.twilio().call():
                        pass
                assert "busy" in declined.value.twiml
            await assert_echoes(call, 600)
        deadline = time.monotonic() + 5
        while await slots(a):
            assert time.monotonic() < deadline, "the call's slot was not released when it ended"
            await asyncio.sleep(0.05)
        async with across(b, a).call() as second:  # and the other way round
            await assert_echoes(second, 1100)
            assert await slots(b) == 1
