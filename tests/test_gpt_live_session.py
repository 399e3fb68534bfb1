"""GPT-Live sessions against the fake Live server through the SDK's own ``live.connect``:
the input clock pads a quiet caller stream with silence, usage is reported per session,
the session cap comes from ``expires_at``, and refusals map to connect errors."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from s2s.events import ProviderEvent, SessionExpiring, Usage
from s2s.gpt_live import GptLiveConfig, GptLiveProvider, GptLiveSession
from s2s.provider import ProviderConnectError, ProviderSession, SessionContext
from tests.fakes.gpt_live_fake import FakeLiveServer, LiveFakeOptions
from tests.support.audio import to_mulaw, tone
from voicebot.config import load_config, load_config_text


def provider(fake: FakeLiveServer, **keys: object) -> GptLiveProvider:
    config = GptLiveConfig.model_validate({"api_key": "test-key", "base_url": fake.base_url, **keys})
    return GptLiveProvider("live", config)


async def collect(session: ProviderSession, into: list[ProviderEvent]) -> None:
    events: AsyncIterator[ProviderEvent] = session.events()
    async for event in events:
        into.append(event)


async def test_a_quiet_caller_stream_is_padded_with_silence_at_real_time() -> None:
    async with FakeLiveServer(LiveFakeOptions()) as fake:
        started = time.monotonic()  # before the session's own clock starts
        session = await provider(fake, input_gap_ms=100).open_session(SessionContext("CA1"))
        assert isinstance(session, GptLiveSession)
        assert session._writer is not None  # the installed SDK's connection takes the direct send path
        try:
            caller = to_mulaw(tone(1000, 200))
            await session.send_audio(caller)  # the caller says this, then their stream goes quiet
            conn = fake.last
            await fake.wait_for(lambda: len(conn.audio_in) >= 8 * 800, timeout=5)
            elapsed_ms = (time.monotonic() - started) * 1000
            received = bytes(conn.audio_in)
            before, tone_found, after = received.partition(caller)
            assert tone_found  # the caller's audio, intact
            assert set(before + after) == {0xFF}  # μ-law silence stood in for the quiet stream
            assert len(received) / 8 <= elapsed_ms + 200  # at real time (the tone came early), not ahead
            assert conn.appends >= 5  # as time passed, not in one lump
            assert conn.invalid == []
        finally:
            await session.close()


async def test_usage_is_reported_per_session_and_the_final_figure_arrives_on_close() -> None:
    async with FakeLiveServer(LiveFakeOptions()) as fake:
        session = await provider(fake).open_session(SessionContext("CA2"))
        events: list[ProviderEvent] = []
        reader = asyncio.create_task(collect(session, events))
        await session.send_audio(b"\xff" * 8 * 1200)  # 1.2 s of input
        await fake.wait_for(lambda: any(isinstance(e, Usage) for e in events), timeout=5)
        await session.close()
        await asyncio.wait_for(reader, 5)
        usage = [e for e in events if isinstance(e, Usage)]
        assert usage[0].billable_s == 1.0 and not usage[0].final
        assert usage[0].session_id.startswith("live_sess_")
        assert usage[-1].final and usage[-1].session_id == usage[0].session_id
        assert fake.last.of_type("session.close")


async def test_renewal_is_announced_before_the_servers_expires_at() -> None:
    async with FakeLiveServer(LiveFakeOptions(expires_in_s=3)) as fake:
        live = provider(fake, session_limit_s=10.0, renew_after_s=8.0)  # renew 2 s before the cap
        session = await live.open_session(SessionContext("CA3"))
        events: list[ProviderEvent] = []
        reader = asyncio.create_task(collect(session, events))
        try:
            await fake.wait_for(lambda: any(isinstance(e, SessionExpiring) for e in events), timeout=4)
            [expiring] = [e for e in events if isinstance(e, SessionExpiring)]
            assert expiring.seconds_left is not None and expiring.seconds_left <= 3
        finally:
            await session.close()
            await asyncio.wait_for(reader, 5)


@pytest.mark.parametrize(
    ("options", "retryable"),
    [
        (LiveFakeOptions(refuse_status=503), True),
        (LiveFakeOptions(refuse_status=401), False),
        (LiveFakeOptions(reject_start="model_not_found"), False),
    ],
)
async def test_refusals_are_connect_errors_that_say_whether_to_retry(options: LiveFakeOptions, retryable: bool) -> None:
    async with FakeLiveServer(options) as fake:
        with pytest.raises(ProviderConnectError) as caught:
            await provider(fake).open_session(SessionContext("CA4"))
        assert caught.value.retryable is retryable


def test_the_readme_gpt_live_table_is_a_valid_provider_config() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [block] = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if 'type = "gpt_live"' in b]
    config = load_config_text(
        f'[twilio]\nvalidate_signatures = false\n{block}\n[[routes]]\nname = "d"\nproviders = ["live"]\n',
        {"OPENAI_API_KEY": "sk-test"},
    )
    live = config.providers["live"]
    assert isinstance(live, GptLiveConfig) and live.lead_ms == 160 and live.delegation == "client"


def test_the_gpt_live_example_config_is_valid() -> None:
    env = {"TWILIO_AUTH_TOKEN": "t", "OPENAI_API_KEY": "sk-test", "VOICEBOT_AGENT_URL": "https://agent.example/ask"}
    config = load_config(Path(__file__).resolve().parent.parent / "examples" / "gpt_live.toml", env=env)
    assert {route.name: route.providers for route in config.routes} == {
        "shop": ["live", "openai"],
        "orders": ["live-tools", "openai"],
    }
    tools = config.providers["live-tools"]
    assert isinstance(tools, GptLiveConfig) and tools.delegation == "responses"
