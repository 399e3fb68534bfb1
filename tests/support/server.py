"""Run the real app under uvicorn on an ephemeral loopback port, in its own thread and
event loop, the way it runs in production (tests talk to it over real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from voicebot.calls.runtime import Runtime
from voicebot.config import AppConfig, load_config_text
from voicebot.devtools.twilio_sim import SimulatedTwilio
from voicebot.server.run import local_server

AUTH_TOKEN = "test-auth-token-0123456789abcdef"


def echo_line_config(
    route: str = "default", *, parrot: str = "", route_extra: str = "", twilio: str = "", sections: str = ""
) -> str:
    """A config with signed webhooks (``AUTH_TOKEN``) and one route ``route`` to the echo
    provider ``parrot``. The keyword arguments are TOML lines added to the ``[twilio]``,
    ``[providers.parrot]`` and ``[[routes]]`` tables (``route_extra`` may go on with the route's
    sub-tables, e.g. ``[routes.dtmf]``); ``sections`` holds further top-level tables."""
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true
{twilio}

{sections}

[providers.parrot]
type = "echo"
{parrot}

[[routes]]
name = "{route}"
providers = ["parrot"]
{route_extra}
"""


ECHO_CONFIG = echo_line_config()


@dataclass
class RunningServer:
    url: str
    runtime: Runtime
    auth_token: str
    loop: asyncio.AbstractEventLoop
    app: Starlette

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
    token = app_config.twilio.auth_token.get_secret_value() if app_config.twilio.auth_token else ""
    async with local_server(app_config) as server:
        yield RunningServer(server.url, server.runtime, token, server.loop, server.app)
