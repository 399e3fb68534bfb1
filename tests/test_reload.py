"""Hot reload: SIGHUP and file changes apply a valid config to new calls, active calls keep
theirs, an invalid file is rejected and the old config stays."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from s2s.resilience import ResilientSession
from tests.fakes.faulty_provider import faulty_servers
from tests.support.audio import active_segments, dominant_frequency, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, running_server
from voicebot.calls.runtime import Runtime
from voicebot.config import load_config
from voicebot.devtools.twilio_sim import SimulatedCall
from voicebot.server.reload import ConfigReloader


def config(provider_table: str, provider: str, instructions: str) -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

{provider_table}

[[routes]]
name = "main"
providers = ["{provider}"]
instructions = "{instructions}"
"""


ECHO = '[providers.fresh]\ntype = "echo"\n'
INVALID = config(ECHO, "nowhere", "broken")


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_sighup_applies_a_valid_file_and_keeps_the_old_config_on_an_invalid_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "voicebot.toml"
    path.write_text(config(ECHO, "fresh", "first"))
    runtime = Runtime(load_config(path))
    # A long poll: only the signal can explain a prompt reload.
    reloader = ConfigReloader(path, runtime.apply, poll_s=60)
    watcher = asyncio.ensure_future(reloader.run())
    try:
        await asyncio.sleep(0.05)
        path.write_text(config(ECHO, "fresh", "second"))
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(lambda: runtime.config.routes[0].instructions == "second", timeout=2)

        path.write_text(INVALID)
        with caplog.at_level(logging.ERROR, logger="voicebot.server.reload"):
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_until(lambda: reloader.rejected == 1, timeout=2)
        assert runtime.config.routes[0].instructions == "second"
        assert "unknown provider 'nowhere'" in caplog.text and "running config stays" in caplog.text
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def answered(call: SimulatedCall, freq: float, ms: int) -> None:
    said_at = call.now_ms()
    await call.say(to_mulaw(tone(freq, ms)))

    def heard() -> bool:
        pcm = call.heard_pcm()
        for start, end in active_segments(pcm, 8000, -35):
            if start > said_at + ms and end - start >= ms - 100 and end * 8 < pcm.size - 80:
                return abs(dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) - freq) < 20
        return False

    await call.wait_for(heard, timeout=6)


async def test_file_change_under_an_active_call(tmp_path: Path) -> None:
    async with faulty_servers("ok") as (old_provider,):
        old_table = f'[providers.old]\ntype = "loopback"\nurl = "{old_provider.url}"\n'
        path = tmp_path / "voicebot.toml"
        path.write_text(config(old_table, "old", "before"))
        async with running_server(load_config(path)) as server:
            reloader = ConfigReloader(path, server.runtime.apply, poll_s=0.1)
            watcher = asyncio.run_coroutine_threadsafe(reloader.run(handle_sighup=False), server.loop)
            try:
                twilio = server.twilio()
                async with twilio.call() as active:
                    await active.pause(100)
                    await answered(active, 600, 500)

                    path.write_text(config(ECHO, "fresh", "after"))
                    await wait_until(lambda: reloader.reloads == 1)
                    assert server.runtime.config.routes[0].providers == ["fresh"]

                    # The call in progress keeps its provider and goes on working.
                    await answered(active, 900, 500)
                    session = server.runtime.active[active.call_sid].session
                    assert isinstance(session, ResilientSession)
                    assert session.provider_name == "old" and len(old_provider.connections) == 1

                    # A new call uses the new route.
                    async with twilio.call() as fresh:
                        await fresh.pause(100)
                        await answered(fresh, 1100, 500)
                        bridge = server.runtime.active[fresh.call_sid]
                        assert isinstance(bridge.session, ResilientSession)
                        assert bridge.session.provider_name == "fresh"
                        assert bridge.session.ctx.instructions == "after"
                    assert len(old_provider.connections) == 1

                # An invalid file is rejected; the last good config stays for new calls.
                path.write_text(INVALID)
                await wait_until(lambda: reloader.rejected == 1)
                assert server.runtime.config.routes[0].instructions == "after"
                async with twilio.call() as third:
                    await third.pause(100)
                    await answered(third, 700, 400)
            finally:
                watcher.cancel()
