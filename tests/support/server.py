"""Run the real app under uvicorn on an ephemeral loopback port, in its own thread and
event loop, the way it runs in production (tests talk to it over real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn

from telephony.twilio_sim import SimulatedTwilio
from voicebot.app import create_app
from voicebot.config import AppConfig, load_config_text
from voicebot.runtime import Runtime
from voicebot.server import uvicorn_config

AUTH_TOKEN = "test-auth-token-0123456789abcdef"

ECHO_CONFIG = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.parrot]
type = "echo"

[[routes]]
name = "default"
providers = ["parrot"]
"""


@dataclass
class RunningServer:
    url: str
    runtime: Runtime
    auth_token: str
    loop: asyncio.AbstractEventLoop

    def twilio(self, speed: float = 1.0) -> SimulatedTwilio:
        return SimulatedTwilio(self.url, self.auth_token, speed=speed)

    async def run_on_server[T](self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's event loop (to poke server-side objects safely)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))


@contextlib.asynccontextmanager
async def running_server(
    config: AppConfig | str = ECHO_CONFIG, env: Mapping[str, str] | None = None
) -> AsyncIterator[RunningServer]:
    app_config = load_config_text(config, env) if isinstance(config, str) else config
    runtime = Runtime(app_config)
    server = uvicorn.Server(uvicorn_config(create_app(runtime), "127.0.0.1", 0, "warning"))
    loops: list[asyncio.AbstractEventLoop] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        loops.append(loop)
        loop.run_until_complete(server.serve())
        loop.close()

    thread = threading.Thread(target=serve, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    token = app_config.twilio.auth_token.get_secret_value() if app_config.twilio.auth_token else ""
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", runtime, token, loops[0])
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
