"""What a call cost, end to end: phone calls through the running server to the provider
fakes, each reporting usage in its provider's own format (OpenAI Realtime ``response.done``
tokens, Gemini ``usageMetadata``, Nova ``usageEvent``, GPT-Live ``session.usage.updated``
seconds). The cost is priced from the ``[pricing]`` tables and shows up on ``GET /calls``, in
the tape's end record and on ``GET /metrics``; ``max_cost_usd`` ends a call with a goodbye."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from s2s.events import Usage
from s2s.nova_sonic.transport import register_stream_factory, unregister_stream_factory
from telephony.call_state import CallOutcome
from tests.fakes.gemini_live_fake import GeminiLiveFake
from tests.fakes.gpt_live_fake import FakeLiveServer, LiveFakeOptions
from tests.fakes.nova_sonic_fake import FakeNovaModel, FakeNovaService
from tests.fakes.openai_cascade_fake import ChatReply, FakeOpenAIHttp, FakeTranscription
from tests.fakes.openai_realtime_fake import FakeOptions, FakeRealtimeServer
from tests.support.audio import to_mulaw, tone
from tests.support.server import AUTH_TOKEN, running_server
from tests.test_cascade_call import call_config
from tests.test_telemetry import scrape, value
from voicebot.devtools.calls import calls_command
from voicebot.devtools.tape.replay import finished_tape

OPS_TOKEN = "ops-" + "x" * 24
GEMINI_ENV = {"GOOGLE_API_KEY": "test-key"}


def config(fake: FakeRealtimeServer, route: str, tapes: Path, route_keys: str = "") -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[ops]
token = "{OPS_TOKEN}"

[recording]
dir = "{tapes}"

[providers.s2s]
type = "openai_realtime"
api_key = "test-key"
base_url = "{fake.base_url}"

[[routes]]
name = "{route}"
providers = ["s2s"]
recording = true
{route_keys}
"""


def hand_priced(usage_sent: list[dict[str, Any]]) -> float:
    """The shipped gpt-realtime-2.1 list prices (USD per million tokens), applied by hand to
    every usage report the fake sent: text in $4, audio in $32, cached $0.40, text out $24,
    audio out $64."""
    usd = 0.0
    for u in usage_sent:
        given, made = u["input_token_details"], u["output_token_details"]
        cached = given["cached_tokens"]
        usd += (given["text_tokens"] - cached) * 4.0 + given["audio_tokens"] * 32.0 + cached * 0.4
        usd += made["text_tokens"] * 24.0 + made["audio_tokens"] * 64.0
    return usd / 1e6


async def end_record(tapes: Path, call_sid: str) -> dict[str, Any]:
    """The tape's last line as written, once the writer has closed it."""
    tape = await finished_tape(tapes, call_sid)
    lines = (await asyncio.to_thread(Path(tape.path).read_text)).splitlines()
    end: dict[str, Any] = json.loads(lines[-1])
    assert end["k"] == "end"
    return end


def voicebot_calls(url: str) -> str:
    """What ``voicebot calls --url URL`` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert calls_command(argparse.Namespace(url=url, token=OPS_TOKEN, json=False)) == 0
    return out.getvalue()


async def calls(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url + "/calls", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()["calls"]
    return rows


async def test_a_calls_cost_is_priced_from_the_providers_usage_and_shown_everywhere(tmp_path: Path) -> None:
    route = "cost-" + secrets.token_hex(4)
    async with (
        FakeRealtimeServer(FakeOptions(tone_hz=440.0, response_ms=600)) as fake,
        running_server(config(fake, route, tmp_path)) as server,
    ):
        async with server.twilio().call() as call:
            for n in range(2):  # two answers: the second has cached instruction tokens
                await call.pause(200)
                await call.say(to_mulaw(tone(1000, 500)))
                await call.wait_for(lambda n=n: len(fake.last.usage_sent) > n, timeout=8)
            conn = fake.last
            await call.wait_for(lambda: bool(server.runtime.active), timeout=5)
            (row,) = await calls(server.url)
            assert row["cost_usd"] == pytest.approx(hand_priced(conn.usage_sent), abs=1e-6)
            assert row["usage"]["audio_out_tokens"] == sum(
                u["output_token_details"]["audio_tokens"] for u in conn.usage_sent
            )
            table = await asyncio.to_thread(voicebot_calls, server.url)
            assert "COST_USD" in table.splitlines()[0]
            assert f"{row['cost_usd']}" in table.splitlines()[1]
        await call.wait_for(lambda: not server.runtime.active, timeout=5)
        expected = hand_priced(conn.usage_sent)
        assert expected > 0 and conn.usage_sent[1]["input_token_details"]["cached_tokens"] == 32
        after = await scrape(server.url)
    end = await end_record(tmp_path, call.call_sid)
    assert end["usage"]["cost_usd"] == pytest.approx(expected, abs=1e-6)
    (session,) = end["usage"]["sessions"]
    assert (session["provider"], session["type"]) == ("s2s", "openai_realtime")
    total = end["usage"]["total"]
    assert total["cached_text_in_tokens"] == 32
    assert total["audio_in_s"] >= 1.4  # the caller's line: two 0.5 s tones and the pauses around them
    assert total["audio_out_s"] == pytest.approx(2 * 0.6, abs=0.05)  # two 600 ms answers
    assert value(after, "voicebot_call_cost_usd_count", route=route) == 1
    assert value(after, "voicebot_call_cost_usd_sum", route=route) == pytest.approx(expected, abs=1e-9)
    assert value(after, "voicebot_usage_total", provider="openai_realtime", kind="audio_out_tokens") >= sum(
        u["output_token_details"]["audio_tokens"] for u in conn.usage_sent
    )


async def test_max_cost_usd_ends_the_call_with_a_goodbye(tmp_path: Path) -> None:
    route = "budget-" + secrets.token_hex(4)
    keys = 'max_cost_usd = 0.0001\nmax_cost_goodbye = "That is all the time we have. Goodbye."'
    async with (
        FakeRealtimeServer(FakeOptions(tone_hz=440.0, response_ms=600)) as fake,
        running_server(config(fake, route, tmp_path, keys)) as server,
        server.twilio().call() as call,
    ):
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 500)))
        # The first answer's tokens cost more than $0.0001: the server hangs up after it.
        await call.wait_for(call.closed.is_set, timeout=8)
        await call.wait_for(lambda: not server.runtime.active, timeout=5)
        twiml = server.runtime.take_next_twiml(call.call_sid)
    assert twiml is not None and "That is all the time we have. Goodbye." in twiml and "<Hangup" in twiml
    end = await end_record(tmp_path, call.call_sid)
    assert end["outcome"] == CallOutcome.MAX_COST.value
    assert end["usage"]["cost_usd"] >= 0.0001


async def test_a_gemini_calls_cost_comes_from_its_usage_metadata(tmp_path: Path) -> None:
    async with GeminiLiveFake() as fake:
        config = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[ops]
token = "{OPS_TOKEN}"

[providers.gemini]
type = "gemini_live"
api_key = "${{GOOGLE_API_KEY}}"
base_url = "{fake.base_url}"
ca_file = "{fake.ca_file}"

[[routes]]
name = "cost-gemini"
providers = ["gemini"]
"""
        fake.reply_ms = 400.0
        async with running_server(config, env=GEMINI_ENV) as server, server.twilio().call() as call:
            await call.pause(200)
            await call.say(to_mulaw(tone(440, 600)))
            await call.wait_for(lambda: fake.last is not None and fake.last.turns_completed == 1, timeout=8)
            await call.wait_for(lambda: bool(server.runtime.active), timeout=5)
            await call.pause(100)  # the usageMetadata message came with turnComplete
            (row,) = await calls(server.url)
    # USAGE_PER_TURN at the shipped gemini_live rates: 20 text tokens in at $0.50, 30 audio
    # tokens in at $3, 25 audio tokens out at $12 (per million).
    tokens = {k: v for k, v in row["usage"].items() if k.endswith("_tokens")}
    assert tokens == {"text_in_tokens": 20, "audio_in_tokens": 30, "audio_out_tokens": 25}
    assert row["cost_usd"] == pytest.approx((20 * 0.5 + 30 * 3.0 + 25 * 12.0) / 1e6, abs=1e-12)


async def test_a_nova_calls_cost_comes_from_its_usage_events() -> None:
    service = FakeNovaService(lambda: FakeNovaModel(reply_ms=400, speed=4.0))
    register_stream_factory("cost-tests", service)
    config = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[ops]
token = "{OPS_TOKEN}"

[providers.nova]
type = "nova_sonic"
region = "us-east-1"
endpoint_url = "memory://cost-tests"

[[routes]]
name = "cost-nova"
providers = ["nova"]
"""
    try:
        async with running_server(config) as server, server.twilio().call() as call:
            await call.pause(200)
            await call.say(to_mulaw(tone(440, 600)))
            plan = server.runtime.plan_of(call.call_sid)
            assert plan is not None
            await call.wait_for(lambda: plan.cost is not None and plan.cost.cost_usd > 0.0002, timeout=8)
            (row,) = await calls(server.url)
            assert plan.cost is not None
            exact = plan.cost.cost_usd
    finally:
        unregister_stream_factory("cost-tests")
        service.shutdown()
    # The fake's usageEvent totals at the shipped nova_sonic rates: 5 text tokens in at $0.33,
    # 10 speech tokens in at $3, 20 speech tokens out at $12 (per million).
    tokens = {k: v for k, v in row["usage"].items() if k.endswith("_tokens")}
    assert tokens == {"text_in_tokens": 5, "audio_in_tokens": 10, "audio_out_tokens": 20}
    assert exact == pytest.approx((5 * 0.33 + 10 * 3.0 + 20 * 12.0) / 1e6, abs=1e-15)
    assert row["cost_usd"] == round(exact, 6)


async def test_a_gpt_live_call_is_billed_for_the_seconds_it_reports() -> None:
    async with FakeLiveServer(LiveFakeOptions(response_ms=400)) as fake:
        config = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[pricing.gpt_live]
session_per_minute = 0.06

[providers.live]
type = "gpt_live"
api_key = "test-key"
base_url = "{fake.base_url}"

[[routes]]
name = "cost-live"
providers = ["live"]
"""
        async with running_server(config) as server, server.twilio().call() as call:
            await call.pause(200)
            await call.say(to_mulaw(tone(440, 2500)))
            plan = server.runtime.plan_of(call.call_sid)
            assert plan is not None
            # session.usage.updated comes every second of caller audio the service took in
            await call.wait_for(lambda: plan.cost is not None and plan.cost.total().reported.billable_s >= 2, timeout=8)
            assert plan.cost is not None
            total = plan.cost.total()
    billable_s = total.reported.billable_s
    assert billable_s == int(billable_s)  # whole seconds, as the fake reports them
    assert total.cost_usd == pytest.approx(billable_s / 60 * 0.06, abs=1e-15)


async def test_a_cascade_calls_cost_is_priced_from_its_parts_use() -> None:
    """Speech-to-text seconds, the chat model's tokens (from the stream's usage chunk) and the
    characters and seconds of speech synthesised, as one Usage per cascade session."""
    async with (
        FakeTranscription(["hello there", "what time is it"]) as stt,
        FakeOpenAIHttp([ChatReply("Hi. How can I help?"), ChatReply("It is nine.")]) as http,
        running_server(
            call_config(
                stt,
                http,
                sections="""
[pricing.cascade]
stt_per_minute = 0.003
text_in_per_mtok = 0.75
cached_in_per_mtok = 0.075
text_out_per_mtok = 4.5
tts_per_mchars = 15.0
""",
            )
        ) as server,
        server.twilio().call() as call,
    ):
        for sentences in (2, 3):  # the answers' sentences so far, one speech request each
            await call.pause(200)
            await call.say(to_mulaw(tone(1000, 500)))
            await call.wait_for(
                lambda n=sentences: len(http.speech_streams) == n and all(s.completed for s in http.speech_streams), 10
            )
            await call.wait_for(lambda: call.queued_ms == 0, timeout=5)

        async def snapshot() -> tuple[Usage, float, float]:
            plan = server.runtime.plan_of(call.call_sid)
            assert plan is not None and plan.cost is not None
            total = plan.cost.total()
            return total.reported, total.audio_in_s, total.cost_usd

        used, audio_in_s, usd = await server.run_on_server(snapshot())
    assert len(http.usage_sent) == 2 and http.usage_sent[1].cached > 0
    assert used.text_in_tokens == sum(u.input for u in http.usage_sent)
    assert used.cached_text_in_tokens == sum(u.cached for u in http.usage_sent)
    assert used.text_out_tokens == sum(u.output for u in http.usage_sent)
    assert used.tts_chars == sum(len(r["input"]) for r in http.speech_requests) == len("Hi.How can I help?It is nine.")
    assert used.tts_s == pytest.approx(sum(s.bytes_sent for s in http.speech_streams) / (24000 * 2), abs=1e-9)
    # caller audio sent to speech-to-text: at least both tones, at most all the caller audio so far
    assert 1.0 <= used.stt_s <= audio_in_s
    expected = (
        used.stt_s / 60 * 0.003
        + (
            (used.text_in_tokens - used.cached_text_in_tokens) * 0.75
            + used.cached_text_in_tokens * 0.075
            + used.text_out_tokens * 4.5
            + used.tts_chars * 15.0
        )
        / 1e6
    )
    assert usd == pytest.approx(expected, rel=1e-12) and usd > 0
