"""Fallback at connect and recovery mid-call, over real sockets: the running server, a
simulated Twilio, and loopback providers that refuse, hang, go mute or crash."""

from __future__ import annotations

import time

import httpx
import pytest

from s2s.resilience import ResilientSession
from tests.fakes.faulty_provider import HangingTcpServer, dead_port, faulty_servers
from tests.fakes.twilio_rest_fake import TwilioRestFake
from tests.support.audio import active_segments, dominant_frequency, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, RunningServer, running_server
from voicebot.devtools.twilio_sim import SimulatedCall, SimulatedTwilio

INSTRUCTIONS = "You answer for Example Corp. Be brief."


def config(providers: str, chain: list[str], route_extra: str = "", resilience: str = "") -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[resilience]
{resilience}

{providers}

[[routes]]
name = "main"
providers = {chain!r}
instructions = "{INSTRUCTIONS}"
{route_extra}
"""


def loopback(name: str, url: str, extra: str = "") -> str:
    return f'[providers.{name}]\ntype = "loopback"\nurl = "{url}"\n{extra}\n'


def echo(name: str, extra: str = "") -> str:
    return f'[providers.{name}]\ntype = "echo"\ntranscribe = true\n{extra}\n'


async def session_of(server: RunningServer, call: SimulatedCall) -> ResilientSession:
    def opened() -> bool:
        bridge = server.runtime.active.get(call.call_sid)
        return bridge is not None and bridge.session is not None

    await call.wait_for(opened, timeout=5)
    session = server.runtime.active[call.call_sid].session
    assert isinstance(session, ResilientSession)
    return session


async def heard_reply(call: SimulatedCall, after_ms: float, freq: float, min_ms: float) -> None:
    """Wait until a reply at ``freq`` of at least ``min_ms`` has played after ``after_ms``."""

    def played() -> bool:
        pcm = call.heard_pcm()
        for start, end in active_segments(pcm, 8000, -35):
            finished = end * 8 < pcm.size - 80
            if start < after_ms or end - start < min_ms or not finished:
                continue
            if abs(dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) - freq) < 20:
                return True
        return False

    await call.wait_for(played, timeout=8)


async def stream_ended_twiml(twilio: SimulatedTwilio, call_sid: str) -> str:
    url = twilio.base_url + "/twilio/stream-ended"
    params = {"CallSid": call_sid, "AccountSid": twilio.account_sid, "CallStatus": "in-progress"}
    async with httpx.AsyncClient() as client:
        response = await client.post(url, data=params, headers={"X-Twilio-Signature": twilio.sign(url, params)})
    assert response.status_code == 200
    return response.text


# -- connect: fallback down the chain ---------------------------------------------------------


async def test_provider_refusing_the_handshake_falls_back_to_the_next_which_answers() -> None:
    async with faulty_servers("refuse", "ok") as (refusing, healthy):
        cfg = config(loopback("primary", refusing.url) + loopback("backup", healthy.url), ["primary", "backup"])
        async with running_server(cfg) as server, server.twilio().call() as call:
            await call.pause(100)
            await call.say(to_mulaw(tone(800, 600)))
            await heard_reply(call, 600, 800, 500)
            assert refusing.handshakes_refused >= 1
            assert len(healthy.connections) == 1
            assert healthy.connections[0].hello["instructions"] == INSTRUCTIONS
            assert (await session_of(server, call)).provider_name == "backup"


@pytest.mark.parametrize("fault", ["dead-port", "tcp-never-answers", "never-sends-first-event"])
async def test_broken_primary_costs_at_most_the_retry_budget(fault: str) -> None:
    hanging = await HangingTcpServer().start()
    async with faulty_servers("silent", "ok") as (silent, healthy):
        url = {"dead-port": dead_port(), "tcp-never-answers": hanging.url, "never-sends-first-event": silent.url}[fault]
        cfg = config(
            loopback("primary", url, "connect_timeout_s = 5.0") + loopback("backup", healthy.url),
            ["primary", "backup"],
            route_extra="retry_budget_s = 0.8",
        )
        try:
            async with running_server(cfg) as server:
                started = time.monotonic()
                async with server.twilio().call() as call:
                    await call.wait_for(lambda: bool(healthy.connections), timeout=5)
                    waited = healthy.connections[0].opened_at - started
                    # The budget ended the attempt, not the 5 s connect timeout. Webhook and stream
                    # set-up are in ``waited`` too, and a loaded machine stretches them: the bound
                    # only needs to sit clearly below the connect timeout.
                    assert waited < 5.0 - 1.5
                    if fault != "dead-port":
                        assert waited >= 0.75  # the hanging attempt was given the budget, no less
                    await call.say(to_mulaw(tone(700, 500)))
                    await heard_reply(call, 0, 700, 400)
        finally:
            await hanging.stop()
    if fault == "tcp-never-answers":
        assert hanging.accepted >= 1
    if fault == "never-sends-first-event":
        assert silent.connections and silent.connections[0].hello["instructions"] == INSTRUCTIONS


# -- mid-call loss -------------------------------------------------------------------------------


async def test_provider_crash_mid_call_reconnects_with_instructions_and_transcript() -> None:
    async with faulty_servers("ok") as (provider,):
        cfg = config(loopback("only", provider.url), ["only"])
        async with running_server(cfg) as server, server.twilio().call() as call:
            await call.pause(100)
            await call.say(to_mulaw(tone(600, 700)))
            await heard_reply(call, 700, 600, 600)
            await call.wait_for(lambda: len(server.runtime.active[call.call_sid].summary.transcript) == 2, 3)

            provider.drop_all()  # the TCP connection dies without a close frame
            await call.wait_for(lambda: len(provider.connections) == 2 and bool(provider.live), timeout=3)
            hello = provider.connections[1].hello
            assert hello["instructions"] == INSTRUCTIONS
            assert hello["history"] == [
                {"role": "caller", "text": "700 ms of speech"},
                {"role": "bot", "text": "echo of 700 ms"},
            ]
            assert hello["greeting"] is None

            # The caller's stream stayed open and the next utterance is answered.
            assert not call.closed.is_set()
            said_at = call.now_ms()
            await call.say(to_mulaw(tone(1100, 600)))
            await heard_reply(call, said_at, 1100, 500)
            assert (await session_of(server, call)).recoveries == 1
            assert provider.connections[1].audio_bytes > 0


async def test_loss_with_primary_refusing_recovers_on_the_next_provider() -> None:
    async with faulty_servers("ok") as (provider,):
        cfg = config(loopback("primary", provider.url) + echo("backup"), ["primary", "backup"])
        async with running_server(cfg) as server, server.twilio().call() as call:
            await call.pause(100)
            await call.say(to_mulaw(tone(600, 500)))
            await heard_reply(call, 500, 600, 400)
            provider.mode = "refuse"
            provider.drop_all()
            session = await session_of(server, call)
            await call.wait_for(lambda: session.provider_name == "backup", timeout=4)
            name, ctx = session.opened[-1]
            assert name == "backup"
            assert ctx.instructions == INSTRUCTIONS
            assert [t.role for t in ctx.history] == ["caller", "bot"]
            said_at = call.now_ms()
            await call.say(to_mulaw(tone(900, 600)))
            await heard_reply(call, said_at, 900, 500)


async def test_mute_provider_is_detected_by_the_watchdog_and_replaced() -> None:
    async with faulty_servers("mute") as (mute,):
        cfg = config(
            loopback("primary", mute.url) + echo("backup"),
            ["primary", "backup"],
            resilience="watchdog_s = 1.0",
        )
        async with running_server(cfg) as server, server.twilio().call() as call:
            session = await session_of(server, call)
            mute.mode = "refuse"  # the reconnect to the same provider fails too
            await call.pause(100)
            await call.say(to_mulaw(tone(500, 500)))
            said_at = call.now_ms()
            await call.wait_for(lambda: session.provider_name == "backup", timeout=4)
            recovered_at = call.now_ms()
            assert 900 <= recovered_at - said_at <= 2500
            await call.say(to_mulaw(tone(1000, 600)))
            await heard_reply(call, recovered_at, 1000, 500)


async def test_a_caller_who_keeps_talking_to_a_mute_provider_does_not_push_the_watchdog_back() -> None:
    # The provider completes its handshake and never answers; the caller says "hello?" every
    # 1.5 s, each time well within watchdog_s of the last. The watchdog measures from the first
    # unanswered turn, so recovery comes after about watchdog_s, not never.
    async with faulty_servers("mute") as (mute,):
        cfg = config(
            loopback("primary", mute.url) + echo("backup"),
            ["primary", "backup"],
            resilience="watchdog_s = 2.0",
        )
        async with running_server(cfg) as server, server.twilio().call() as call:
            session = await session_of(server, call)
            mute.mode = "refuse"  # the reconnect to the same provider fails too
            await call.pause(100)
            hellos = 0
            first_said_at = call.now_ms() + 500
            while session.provider_name != "backup" and hellos < 8:
                await call.say(to_mulaw(tone(500, 500)))
                hellos += 1
                await call.pause(1000)
            assert session.provider_name == "backup", "the caller's tries kept pushing the watchdog back"
            assert session.recoveries == 1
            # Not a false alarm: the first turn went unanswered for the whole watchdog_s.
            assert call.now_ms() - first_said_at >= 2000
            assert 2 <= hellos <= 5
            said_at = call.now_ms()
            await call.say(to_mulaw(tone(1000, 600)))
            await heard_reply(call, said_at, 1000, 500)


async def test_unrecoverable_loss_ends_the_stream_and_twilio_gets_the_apology() -> None:
    async with faulty_servers("ok") as (provider,):
        cfg = config(
            loopback("only", provider.url),
            ["only"],
            route_extra='apology = "We are very sorry, please call back."\n'
            '[routes.on_unavailable]\ndial = "+15550009999"',
            resilience="connect_attempts = 2",
        )
        async with running_server(cfg) as server:
            twilio = server.twilio()
            async with twilio.call() as call:
                await call.pause(300)
                provider.mode = "refuse"
                provider.drop_all()
                await call.closed.wait()
            twiml = await stream_ended_twiml(twilio, call.call_sid)
            assert "We are very sorry, please call back.</Say>" in twiml
            assert "<Dial>+15550009999</Dial>" in twiml
            assert provider.handshakes_refused == 2


async def test_all_providers_down_then_webhook_answers_with_on_unavailable() -> None:
    async with faulty_servers("refuse", "refuse") as (a, b):
        cfg = config(
            loopback("a", a.url) + loopback("b", b.url),
            ["a", "b"],
            route_extra='[routes.on_unavailable]\nsay = "All lines are busy."',
            resilience="connect_attempts = 2\ncircuit_failures = 2\ncircuit_cooldown_s = 60",
        )
        async with running_server(cfg) as server:
            twilio = server.twilio()
            # The first call is answered before anyone knows: the stream ends, Twilio gets the message.
            async with twilio.call() as call:
                await call.closed.wait()
            assert "All lines are busy." in await stream_ended_twiml(twilio, call.call_sid)
            # Both circuits are open now: the next call gets on_unavailable straight from the webhook.
            response = await twilio.webhook("+15550001111", "+15557654321", "CA" + "f" * 32)
            assert response.status_code == 200
            assert "<Say>All lines are busy.</Say><Hangup />" in response.text
            assert "<Stream" not in response.text
            assert a.handshakes_refused == 2 and b.handshakes_refused == 2


async def test_caller_audio_during_recovery_is_kept_and_answered_by_the_new_session() -> None:
    async with faulty_servers("ok") as (provider,):
        cfg = config(
            loopback("primary", provider.url) + echo("backup"),
            ["primary", "backup"],
            route_extra="retry_budget_s = 0.8",
        )
        async with running_server(cfg) as server, server.twilio().call() as call:
            session = await session_of(server, call)
            await call.wait_for(lambda: bool(provider.live), timeout=3)
            await call.pause(200)
            # The reconnect to the primary hangs for the whole budget; the caller talks meanwhile.
            provider.mode = "silent"
            provider.drop_all()
            said_at = call.now_ms()
            await call.say(to_mulaw(tone(650, 600)))
            assert session.provider_name == "primary", "recovery must still be in progress while the caller talks"
            await call.wait_for(lambda: session.provider_name == "backup", timeout=3)
            # What was said during recovery reached the backup, which answers it.
            await heard_reply(call, said_at + 600, 650, 500)
            assert session.recoveries == 1


async def test_unrecoverable_loss_with_rest_credentials_replaces_the_call_twiml_before_the_stream_closes() -> None:
    # On a fleet, /twilio/stream-ended may reach another instance: the apology goes by REST instead.
    async with faulty_servers("ok") as (provider,), TwilioRestFake(auth_token=AUTH_TOKEN) as rest:
        cfg = config(
            loopback("only", provider.url),
            ["only"],
            route_extra='apology = "We are very sorry, please call back."',
            resilience="connect_attempts = 1",
        ).replace(
            "validate_signatures = true",
            f'validate_signatures = true\naccount_sid = "{rest.account_sid}"\napi_base_url = "{rest.base_url}"',
        )
        async with running_server(cfg) as server:
            twilio = server.twilio()
            async with twilio.call() as call:
                await call.pause(300)
                provider.mode = "refuse"
                provider.drop_all()
                update = await rest.wait_for_update(timeout=5)
                await call.closed.wait()
                closed_at = time.monotonic()
            assert update.call_sid == call.call_sid
            assert "We are very sorry, please call back.</Say><Hangup />" in update.params["Twiml"]
            assert update.at <= closed_at
            # Twilio already has it: nothing waits on this instance for /twilio/stream-ended.
            assert "<Say>" not in await stream_ended_twiml(twilio, call.call_sid)
