"""Graceful drain with a real ``voicebot serve`` process: SIGTERM during a live call."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.twilio_rest_fake import CreatedCall, TwilioRestFake
from tests.support.audio import active_segments, dominant_frequency, to_mulaw, tone
from voicebot.devtools.twilio_sim import NoStream, SimulatedCall, SimulatedTwilio, parse_stream_twiml

AUTH_TOKEN = "drain-test-token-0123456789abcdef"
APOLOGY = "We are restarting this line, sorry. Please call back."
ROOT = Path(__file__).resolve().parent.parent


def _config(drain_seconds: float, twilio_extra: str, extra: str = "") -> str:
    return f"""
[server]
drain_seconds = {drain_seconds}
drain_message = "{APOLOGY}"

[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true
{twilio_extra}

[providers.parrot]
type = "echo"
speed = 4.0

[[routes]]
name = "default"
providers = ["parrot"]
{extra}
"""


class ServeProcess:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def twilio(self) -> SimulatedTwilio:
        return SimulatedTwilio(self.url, AUTH_TOKEN)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"voicebot serve did not exit within {timeout} s; log:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)
        return code


def _spawn(config: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    command = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "voicebot.cli", *command],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


StartServe = Callable[..., Awaitable["ServeProcess"]]


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[StartServe]:
    procs: list[subprocess.Popen[bytes]] = []

    async def start(drain_seconds: float, twilio_extra: str = "", extra: str = "") -> ServeProcess:
        config = tmp_path / "voicebot.toml"
        config.write_text(_config(drain_seconds, twilio_extra, extra))
        log_path = tmp_path / "serve.log"
        # Port 0: the server picks a free port and logs it; a port chosen here could be taken
        # by another process before the server binds it.
        proc = _spawn(config, 0, log_path)
        procs.append(proc)
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            if proc.poll() is not None:
                raise RuntimeError(f"voicebot serve exited early:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"voicebot serve did not start:\n{log_path.read_text()}")
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log_path.read_text())
            port = int(found.group(1)) if found else None
            await asyncio.sleep(0.05)
        server = ServeProcess(proc, f"http://127.0.0.1:{port}", log_path)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while (await client.get(server.url + "/readyz")).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"voicebot serve did not become ready:\n{server.log()}")
                await asyncio.sleep(0.1)
        return server

    yield start
    for proc in procs:  # only the processes this test started
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


async def _echo_round_trip(call: SimulatedCall, freq: float) -> None:
    """Say a tone and hear it back: proof that audio still flows both ways."""
    before = len(call.heard) / 8.0
    await call.say(to_mulaw(tone(freq, 400)))
    await call.wait_for(lambda: call.queued_ms == 0 and _heard(call, before, freq), timeout=5)


def _heard(call: SimulatedCall, since_ms: float, freq: float) -> bool:
    pcm = call.heard_pcm(since_ms)
    segments = active_segments(pcm, 8000, -35)
    if not segments:
        return False
    start, end = max(segments, key=lambda s: s[1] - s[0])
    if end - start < 300:
        return False
    return abs(dominant_frequency(call.heard_pcm(since_ms + start + 20, since_ms + end - 20), 8000) - freq) < 20


async def _stream_ended(twilio: SimulatedTwilio, call_sid: str) -> httpx.Response:
    url = twilio.base_url + "/twilio/stream-ended"
    params = {"CallSid": call_sid, "AccountSid": twilio.account_sid, "CallStatus": "in-progress"}
    async with httpx.AsyncClient(timeout=5.0) as client:
        return await client.post(url, data=params, headers={"X-Twilio-Signature": twilio.sign(url, params)})


async def test_sigterm_refuses_new_calls_lets_the_live_call_run_then_apologises_and_exits_0(
    serve_factory: StartServe,
) -> None:
    drain_s = 3.0
    server = await serve_factory(drain_s)
    twilio = server.twilio()
    async with twilio.call() as call:
        await call.pause(100)
        await _echo_round_trip(call, 700)

        sent_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(timeout=5.0) as client:
            for _ in range(100):
                ready = await client.get(server.url + "/readyz")
                if ready.status_code == 503:
                    break
                await asyncio.sleep(0.02)
            assert ready.status_code == 503
            assert "draining" in " ".join(ready.json()["reasons"])
            assert (await client.get(server.url + "/healthz")).status_code == 200
        # A new call is refused with 503, so Twilio's fallback URL takes over.
        with pytest.raises(NoStream) as refused:
            async with twilio.call():
                pass
        assert refused.value.status == 503

        # The call in progress is untouched: the caller still hears the bot.
        await _echo_round_trip(call, 1100)
        assert not call.closed.is_set()

        # At the deadline the server ends it...
        await asyncio.wait_for(call.closed.wait(), timeout=drain_s + 5)
        closed_after = time.monotonic() - sent_at
        assert drain_s - 0.3 <= closed_after <= drain_s + 3.0
        # ...and Twilio, asking what next, gets the apology and a hang-up.
        after = await _stream_ended(twilio, call.call_sid)
        assert after.status_code == 200
        assert APOLOGY in after.text and "<Hangup" in after.text

    assert await server.wait_exit(timeout=10) == 0
    log = server.log()
    assert "draining" in log and "ending 1 call(s) with an apology" in log


async def test_drain_exits_as_soon_as_the_last_call_hangs_up(serve_factory: StartServe) -> None:
    server = await serve_factory(60.0)
    async with server.twilio().call() as call:
        await _echo_round_trip(call, 500)
        server.proc.send_signal(signal.SIGTERM)
        await call.pause(300)
        assert server.proc.poll() is None  # still serving the call
    started = time.monotonic()
    assert await server.wait_exit(timeout=10) == 0
    assert time.monotonic() - started < 30  # far before the 60 s deadline (loose: a loaded machine)
    assert "every call finished on its own" in server.log()


async def test_with_rest_credentials_the_apology_goes_through_the_rest_api(serve_factory: StartServe) -> None:
    """Fleet-safe path: Twilio gets the apology by REST, not from this (leaving) instance."""
    async with TwilioRestFake(auth_token=AUTH_TOKEN) as rest:
        twilio_extra = f'account_sid = "{rest.account_sid}"\napi_base_url = "{rest.base_url}"'
        server = await serve_factory(1.0, twilio_extra)
        async with server.twilio().call() as call:
            await _echo_round_trip(call, 800)
            server.proc.send_signal(signal.SIGTERM)
            update = await rest.wait_for_update(timeout=10)
            await asyncio.wait_for(call.closed.wait(), timeout=5)
        assert update.call_sid == call.call_sid
        assert APOLOGY in update.params["Twiml"] and "<Hangup" in update.params["Twiml"]
        assert await server.wait_exit(timeout=10) == 0
        # Nothing was left for /twilio/stream-ended (it would only hang up): no linger for it.
        assert "lingering" not in server.log() and "did not fetch the apology" not in server.log()


async def test_a_second_sigterm_stops_at_once(serve_factory: StartServe) -> None:
    server = await serve_factory(60.0)
    async with server.twilio().call() as call:
        await _echo_round_trip(call, 600)
        server.proc.send_signal(signal.SIGTERM)
        await call.pause(300)
        assert server.proc.poll() is None  # draining, call still up
        server.proc.send_signal(signal.SIGTERM)  # the operator insists
        started = time.monotonic()
        code = await server.wait_exit(timeout=10)
        await asyncio.wait_for(call.closed.wait(), timeout=5)
    assert time.monotonic() - started < 8
    assert code == -signal.SIGTERM  # uvicorn re-raises the signal it was stopped by
    # The call ended because the server stopped, not because the caller hung up (its tape and
    # metrics say the same).
    assert f"call {call.call_sid} ended: server-shutdown" in server.log()
    assert "ended: caller-hangup" not in server.log()


async def test_sigterm_just_after_a_webhook_waits_for_the_calls_stream_and_serves_it(
    serve_factory: StartServe,
) -> None:
    """Answered, stream not there yet: the drain waits for it as for a call in progress."""
    server = await serve_factory(10.0)
    twilio = server.twilio()
    call_sid = "CA" + secrets.token_hex(16)
    answer = await twilio.webhook("+15550001111", "+15557654321", call_sid)
    stream_url, params = parse_stream_twiml(answer.text) or ("", {})
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)  # the stream comes half a second after the answer, as in the field
    assert server.proc.poll() is None
    async with twilio.stream(stream_url, params, call_sid) as call:
        await _echo_round_trip(call, 700)
    assert await server.wait_exit(timeout=10) == 0
    assert "every call finished on its own" in server.log()


async def test_at_the_drain_deadline_an_answered_call_without_a_stream_gets_the_apology(
    serve_factory: StartServe,
) -> None:
    server = await serve_factory(1.0)
    twilio = server.twilio()
    call_sid = "CA" + secrets.token_hex(16)
    answer = await twilio.webhook("+15550001111", "+15557654321", call_sid)
    stream_url, params = parse_stream_twiml(answer.text) or ("", {})
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while "still without a stream" not in server.log():
        assert time.monotonic() < deadline, server.log()
        await asyncio.sleep(0.05)
    # The stream, if it still comes, is refused; Twilio then asks what next and hears the apology.
    async with twilio.stream(stream_url, params, call_sid) as late:
        await asyncio.wait_for(late.closed.wait(), timeout=5)
    assert late.close_code == 1008
    after = await _stream_ended(twilio, call_sid)
    assert APOLOGY in after.text and "<Hangup" in after.text
    assert await server.wait_exit(timeout=10) == 0


OPS = "drain-ops-token-0123456789abcdef"
# The route places calls too (voicebot.calls.outbound); the bot speaks as soon as the callee answers.
OUTBOUND = f"""
[routes.outbound]
caller_id = "+15550001111"
machine_detection = false

[ops]
token = "{OPS}"
"""


async def _place(server: ServeProcess, to: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0) as client:
        return await client.post(
            server.url + "/calls", json={"to": to, "route": "default"}, headers={"Authorization": f"Bearer {OPS}"}
        )


async def _outbound_call_streams(
    rest: TwilioRestFake, server: ServeProcess, created: CreatedCall, calls: contextlib.AsyncExitStack
) -> SimulatedCall:
    """The callee picks up: Twilio fetches the answer and opens the stream it names."""
    answer = await rest.answer(created)
    assert answer.status_code == 200, answer.text
    parsed = parse_stream_twiml(answer.text)
    assert parsed is not None, answer.text
    return await calls.enter_async_context(server.twilio().stream(parsed[0], parsed[1], created.sid))


async def test_drain_covers_outbound_calls_in_progress_and_still_ringing(serve_factory: StartServe) -> None:
    """SIGTERM with one outbound call talking and one ringing: no new call is placed, the
    ringing one is answered and served while draining, and at the deadline both get the
    apology like inbound calls."""
    drain_s = 4.0
    async with TwilioRestFake(auth_token=AUTH_TOKEN) as rest:
        twilio_extra = f'account_sid = "{rest.account_sid}"\napi_base_url = "{rest.base_url}"'
        server = await serve_factory(drain_s, twilio_extra, OUTBOUND)
        assert (await _place(server, "+15551230001")).status_code == 201
        talking = rest.created[-1]
        assert (await _place(server, "+15551230002")).status_code == 201
        ringing = rest.created[-1]
        async with contextlib.AsyncExitStack() as calls:
            first = await _outbound_call_streams(rest, server, talking, calls)
            await _echo_round_trip(first, 700)
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while "draining: refusing new calls" not in server.log():
                assert time.monotonic() < deadline, server.log()
                await first.pause(20)
            refused = await _place(server, "+15551230003")
            assert refused.status_code == 503 and "draining" in refused.json()["error"]
            assert len(rest.created) == 2  # nothing dialled while draining
            # The callee of the ringing call picks up: the draining server still takes the call.
            second = await _outbound_call_streams(rest, server, ringing, calls)
            await _echo_round_trip(second, 900)
            await _echo_round_trip(first, 1100)  # the first call is untouched too
            # At the deadline both are ended with the apology, through the REST API.
            await asyncio.wait_for(first.closed.wait(), timeout=drain_s + 5)
            await asyncio.wait_for(second.closed.wait(), timeout=5)
        apologies = {u.call_sid for u in rest.updates if APOLOGY in u.params.get("Twiml", "")}
        assert apologies == {talking.sid, ringing.sid}
        assert await server.wait_exit(timeout=10) == 0
        assert f"outbound call {talking.sid} ended: server-shutdown" in server.log()


async def test_a_drain_waits_for_a_ringing_outbound_call_and_cancels_it_at_the_deadline(
    serve_factory: StartServe,
) -> None:
    """Nobody else can take its answer (in-process call store): the drain waits for it, and at
    the deadline asks Twilio to stop ringing rather than leave the callee to an answer nobody serves."""
    async with TwilioRestFake(auth_token=AUTH_TOKEN) as rest:
        twilio_extra = f'account_sid = "{rest.account_sid}"\napi_base_url = "{rest.base_url}"'
        server = await serve_factory(1.5, twilio_extra, OUTBOUND)
        assert (await _place(server, "+15551230004")).status_code == 201
        created = rest.created[-1]
        assert (await rest.status(created, "ringing")).status_code == 204
        sent_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        update = await rest.wait_for_update(timeout=10)
        assert time.monotonic() - sent_at >= 1.0  # held for the deadline, not cut at once
        assert update.call_sid == created.sid and update.params == {"Status": "canceled"}
        assert await server.wait_exit(timeout=10) == 0
        assert "1 outbound call(s) still ringing, 1 canceled" in server.log()
