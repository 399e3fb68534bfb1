"""The real app under uvicorn on a loopback port, in its own thread and event loop.

``voicebot replay`` runs the server this way when no ``--url`` is given: the caller side
and the server then talk over real sockets exactly as Twilio and a deployed server do.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn

from voicebot.app import create_app
from voicebot.config import AppConfig
from voicebot.runtime import Runtime
from voicebot.server import uvicorn_config

START_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class LocalServer:
    url: str
    runtime: Runtime
    loop: asyncio.AbstractEventLoop


@contextlib.asynccontextmanager
async def local_server(config: AppConfig, log_level: str = "warning") -> AsyncIterator[LocalServer]:
    runtime = Runtime(config)
    server = uvicorn.Server(uvicorn_config(create_app(runtime), "127.0.0.1", 0, log_level))
    loops: list[asyncio.AbstractEventLoop] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        loops.append(loop)
        loop.run_until_complete(server.serve())
        loop.close()

    thread = threading.Thread(target=serve, name="voicebot-local-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the in-process voicebot server did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LocalServer(f"http://127.0.0.1:{port}", runtime, loops[0])
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
