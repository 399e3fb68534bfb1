"""The webhook and the media stream refuse what Twilio did not sign, and survive bad input."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from tests.support.audio import dominant_frequency, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, echo_line_config, running_server
from voicebot.devtools.twilio_sim import parse_stream_twiml

PARAMS = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "0" * 32, "From": "+15557654321", "To": "+15550001111"}


def signed(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


async def test_webhook_answers_signed_call_with_connect_stream_twiml() -> None:
    async with running_server() as server, httpx.AsyncClient() as client:
        url = server.url + "/twilio/voice"
        response = await client.post(url, data=PARAMS, headers=signed(url, PARAMS))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/xml")
        stream_url, parameters = parse_stream_twiml(response.text) or ("", {})
        assert stream_url == server.url.replace("http://", "ws://") + "/twilio/media"
        assert "?" not in stream_url
        assert set(parameters) == {"token"} and len(parameters["token"]) >= 16
        assert "<Redirect" in response.text and "/twilio/stream-ended" in response.text
        # Stream failures reach /twilio/status (Twilio's <Stream statusCallback>).
        assert f'statusCallback="{server.url}/twilio/status"' in response.text
        assert 'statusCallbackMethod="POST"' in response.text


async def test_public_url_builds_wss_stream_url_and_is_what_signatures_cover() -> None:
    config = echo_line_config(sections='[server]\npublic_url = "https://voice.example.com"')
    async with running_server(config) as server, httpx.AsyncClient() as client:
        public = "https://voice.example.com/twilio/voice"
        ok = await client.post(server.url + "/twilio/voice", data=PARAMS, headers=signed(public, PARAMS))
        assert ok.status_code == 200
        assert 'url="wss://voice.example.com/twilio/media"' in ok.text
        local = server.url + "/twilio/voice"
        refused = await client.post(server.url + "/twilio/voice", data=PARAMS, headers=signed(local, PARAMS))
        assert refused.status_code == 403


async def test_forwarded_headers_rebuild_the_signed_url_when_public_url_is_unset() -> None:
    async with running_server() as server, httpx.AsyncClient() as client:
        external = "https://tunnel.example.org/twilio/voice"
        headers = signed(external, PARAMS) | {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tunnel.example.org"}
        response = await client.post(server.url + "/twilio/voice", data=PARAMS, headers=headers)
        assert response.status_code == 200
        assert 'url="wss://tunnel.example.org/twilio/media"' in response.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl"}],
    ids=["unsigned", "forged"],
)
async def test_unsigned_or_forged_webhook_is_refused(headers: dict[str, str]) -> None:
    async with running_server() as server, httpx.AsyncClient() as client:
        response = await client.post(server.url + "/twilio/voice", data=PARAMS, headers=headers)
        assert response.status_code == 403
        assert not server.runtime.handoff.pending


async def test_webhook_signed_with_another_token_is_refused() -> None:
    async with running_server() as server, httpx.AsyncClient() as client:
        url = server.url + "/twilio/voice"
        response = await client.post(url, data=PARAMS, headers=signed(url, PARAMS, token="someone-elses-token"))
        assert response.status_code == 403


async def test_unparseable_and_oversized_bodies() -> None:
    async with running_server() as server, httpx.AsyncClient() as client:
        url = server.url + "/twilio/voice"
        bad = await client.post(
            url, content=b"\xff\xfe=&&==", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert bad.status_code == 400
        huge = await client.post(url, data={"CallSid": "CA1", "Junk": "x" * 200_000})
        assert huge.status_code == 413


async def test_status_callback_and_health() -> None:
    async with running_server() as server, httpx.AsyncClient() as client:
        url = server.url + "/twilio/status"
        params = {"CallSid": PARAMS["CallSid"], "StreamEvent": "stream-started", "AccountSid": PARAMS["AccountSid"]}
        assert (await client.post(url, data=params, headers=signed(url, params))).status_code == 204
        assert (await client.post(url, data=params)).status_code == 403
        health = await client.get(server.url + "/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"


async def test_a_stream_error_on_the_status_callback_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    from tests.test_telemetry import scrape, value

    async with running_server() as server, httpx.AsyncClient() as client:
        before = value(await scrape(server.url), "voicebot_errors_total", code="twilio-stream-error")
        url = server.url + "/twilio/status"
        params = {
            "CallSid": PARAMS["CallSid"],
            "AccountSid": PARAMS["AccountSid"],
            "StreamSid": "MZ" + "2" * 32,
            "StreamEvent": "stream-error",
            "StreamError": "Stream - WebSocket - Connection Refused",
        }
        with caplog.at_level("WARNING", logger="telephony.webhook"):
            assert (await client.post(url, data=params, headers=signed(url, params))).status_code == 204
        assert any(
            r.levelname == "WARNING" and "Connection Refused" in r.getMessage() and PARAMS["CallSid"] in r.getMessage()
            for r in caplog.records
        )
        after = value(await scrape(server.url), "voicebot_errors_total", code="twilio-stream-error")
        assert after == before + 1


async def _stream_url_and_token(server_url: str, client: httpx.AsyncClient) -> tuple[str, str]:
    url = server_url + "/twilio/voice"
    response = await client.post(url, data=PARAMS, headers=signed(url, PARAMS))
    stream_url, params = parse_stream_twiml(response.text) or ("", {})
    return stream_url, params["token"]


async def test_unsigned_or_forged_media_stream_upgrade_is_refused() -> None:
    async with running_server() as server, httpx.AsyncClient() as client:
        stream_url, _ = await _stream_url_and_token(server.url, client)
        for headers in ({}, {"X-Twilio-Signature": "Zm9yZ2Vk"}, signed(stream_url.replace("ws://", "http://"), {})):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(stream_url, additional_headers=headers)
            assert refused.value.response.status_code == 403


async def test_stream_with_unknown_token_is_closed_with_policy_violation() -> None:
    async with running_server() as server, httpx.AsyncClient() as client:
        stream_url, _ = await _stream_url_and_token(server.url, client)
        async with websockets.connect(stream_url, additional_headers=signed(stream_url, {})) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            stream_sid = "MZ" + "2" * 32
            start = {
                "streamSid": stream_sid,
                "callSid": PARAMS["CallSid"],
                "accountSid": PARAMS["AccountSid"],
                "customParameters": {"token": "not-the-token"},
            }
            await ws.send(
                json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": start})
            )
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert (ws.close_code, ws.close_reason) == (1008, "unknown stream token")


async def test_malformed_frames_are_dropped_and_do_not_disturb_a_concurrent_call() -> None:
    async with running_server() as server:
        twilio = server.twilio()
        async with twilio.call() as noisy, twilio.call() as clean:
            garbage: list[str | bytes] = [
                "not json at all",
                "[1, 2, 3]",
                json.dumps({"no": "event"}),
                json.dumps({"event": "media", "streamSid": "x", "media": {"payload": "@@not base64@@"}}),
                json.dumps({"event": "media", "streamSid": "x", "media": {"payload": 5}}),
                json.dumps({"event": "mark", "streamSid": "x"}),
                json.dumps({"event": "something-new", "streamSid": "x"}),
                json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 70_000).decode()}}),
                b"\x00\x01binary",
                json.dumps({"event": "start", "start": {"callSid": "CA9", "streamSid": "MZ9"}}),
            ]
            for frame in garbage:
                await noisy.send_raw(frame)
            await asyncio.gather(noisy.say(to_mulaw(tone(700, 600))), clean.say(to_mulaw(tone(1200, 600))))
            for call in (noisy, clean):
                await call.wait_for(lambda c=call: c.received_media_ms() >= 550, timeout=8)
                await call.wait_for(lambda c=call: c.queued_ms == 0, timeout=5)
            noisy_bridge = server.runtime.active[noisy.call_sid]
            assert noisy_bridge.summary.bad_frames == len(garbage) - 1  # "something-new" is tolerated
            for call, freq in ((noisy, 700), (clean, 1200)):
                heard = call.heard_pcm()
                loud = heard[abs(heard.astype(int)) > 1000]
                assert loud.size > 3000
                assert dominant_frequency(heard, 8000) == pytest.approx(freq, abs=15)
            assert not noisy.closed.is_set()
