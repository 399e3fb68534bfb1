"""`GET /calls` (behind the `[ops] token` bearer token) and `voicebot calls --url`: the calls
in progress, with CallSid, route, provider, state, duration and barge-ins, during real calls."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.audio import to_mulaw, tone
from tests.support.server import echo_line_config, running_server
from voicebot.cli import main

OPS_TOKEN = "ops-token-0123456789abcdef"
CONFIG = echo_line_config("front-desk", parrot="speed = 50", sections=f'[ops]\ntoken = "{OPS_TOKEN}"')


async def get_calls(url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient() as client:
        return await client.get(f"{url}/calls", headers=headers)


async def test_the_calls_in_progress_are_listed_with_their_barge_ins(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_server(CONFIG) as server:
        assert (await get_calls(server.url, OPS_TOKEN)).json() == {"calls": [], "draining": False}
        async with server.twilio().call(call_sid="CA" + "1" * 32) as call:
            await call.pause(200)
            await call.say(to_mulaw(tone(600, 1500)))
            await call.wait_for(lambda: call.received_media_ms() >= 1000, timeout=8)
            await call.pause(300)
            await call.say(to_mulaw(tone(400, 600)))  # talks over the echo: one barge-in
            await call.wait_for(lambda: bool(call.clear_times), timeout=3)
            await call.pause(100)
            (row,) = (await get_calls(server.url, OPS_TOKEN)).json()["calls"]
            assert row["call_sid"] == "CA" + "1" * 32
            assert row["route"] == "front-desk"
            assert row["provider"] == "parrot"
            assert row["state"] in ("streaming", "interrupted")
            assert 0 < row["duration_s"] <= call.now_ms() / 1000 + 1
            assert row["barge_ins"] == 1
            # The command line shows the same call.
            code = await asyncio.to_thread(main, ["calls", "--url", server.url, "--token", OPS_TOKEN])
            out = capsys.readouterr().out
            assert code == 0
            assert "CALL_SID" in out and "CA" + "1" * 32 in out and "front-desk" in out and "parrot" in out
            assert "1 call(s) in progress" in out


async def test_a_missing_or_wrong_token_is_refused() -> None:
    async with running_server(CONFIG) as server:
        for token in (None, "wrong-token-0123456789", OPS_TOKEN + "x"):
            response = await get_calls(server.url, token)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
        code = await asyncio.to_thread(main, ["calls", "--url", server.url, "--token", "wrong-token-0123456789"])
        assert code == 1


async def test_without_a_configured_token_the_api_is_off() -> None:
    async with running_server(echo_line_config()) as server:
        assert (await get_calls(server.url, OPS_TOKEN)).status_code == 404
