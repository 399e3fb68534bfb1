"""The README's first command, as written: `./dev serve` with no config is a working echo line.

(The README's second command, `./dev test`, is the suite this test belongs to.) Run on a free
loopback port rather than 0.0.0.0:8080: the machine is shared and tests stay on loopback."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.audio import active_segments, dominant_frequency, to_mulaw, tone
from tests.support.readme import blocks
from voicebot.devtools.twilio_sim import SimulatedTwilio

ROOT = Path(__file__).resolve().parent.parent


def first_command() -> str:
    serve, test = blocks()[0].commands
    assert test == "./dev test", "the README's second command is the whole suite"
    assert serve == "./dev serve", "the README's first command serves the built-in default"
    return serve


@pytest.fixture
def default_serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`voicebot serve` with no --config, no VOICEBOT_* environment, on a free loopback port."""
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VOICEBOT_", "TWILIO_"))}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [*shlex.split(first_command()), "--host", "127.0.0.1", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    yield proc, log_path
    proc.terminate()
    proc.wait(15)


async def test_serve_without_config_answers_calls_on_the_echo_line(
    default_serve: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, log_path = default_serve
    deadline = time.monotonic() + 300  # ./dev first brings .venv in step with pyproject.toml
    while not (found := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log_path.read_text())):
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        await asyncio.sleep(0.05)
    log = log_path.read_text()
    assert "built-in default route (echo provider)" in log
    assert "signature checks are OFF" in log

    twilio = SimulatedTwilio(f"http://127.0.0.1:{found.group(1)}", auth_token=None)
    async with twilio.call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(850, 700)))
        await call.wait_for(lambda: call.received_media_ms() >= 600 and call.queued_ms == 0, timeout=8)
        await call.pause(100)
    segments = active_segments(call.heard_pcm(), 8000, -35)
    start, end = max(segments, key=lambda s: s[1] - s[0])
    assert end - start == pytest.approx(700, abs=80)
    assert dominant_frequency(call.heard_pcm(start + 40, end - 40), 8000) == pytest.approx(850, abs=15)
