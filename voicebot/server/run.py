"""Running the app under uvicorn with the settings a phone server needs, in production
(``voicebot serve``) or in-process on a loopback port (``voicebot replay``, the tests): the
caller side and the server then talk over real sockets exactly as Twilio and a deployed
server do."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from voicebot.calls.runtime import Runtime
from voicebot.config import AppConfig
from voicebot.server.app import create_app
from voicebot.server.slow_clients import SlowClientLimits, guarded_h11

# The transport-level cap on one WebSocket frame. The Media Streams protocol enforces its own
# smaller limit per frame (server.max_message_bytes) and drops offenders with a log line; this
# cap only stops a peer from making uvicorn buffer megabytes first.
WS_MAX_FRAME_BYTES = 1024 * 1024


def uvicorn_config(app: Starlette, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    server = app.state.runtime.config.server
    limits = SlowClientLimits(server.header_timeout_s, server.body_timeout_s, server.max_unauthenticated_connections)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_h11(limits),
        ws="websockets-sansio",
        ws_max_size=WS_MAX_FRAME_BYTES,
        # Twilio does not compress; deflate would only cost CPU per frame.
        ws_per_message_deflate=False,
        log_config=None,
        log_level=log_level,
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips="*",
    )


def freeze_startup_heap() -> None:
    """Move everything start-up left alive (modules, SDK clients, pydantic schemas: ~190k
    objects) out of the garbage collector's reach, just before serving.

    A full (generation 2) collection walks every tracked object and stops every call's audio
    while it runs. Those objects live as long as the process, so walking them is pointless;
    after ``gc.freeze()`` (https://docs.python.org/3/library/gc.html#gc.freeze) a collection
    walks only what calls allocated. Measured with ``bench load`` at 40 calls: a full
    collection took 127 ms of CPU before, 6 ms after (at 100 calls one took 220 ms of wall
    time, which was the whole of the bridge's p99 latency). The garbage start-up made is
    collected first, so none of it is kept forever."""
    gc.collect()
    gc.freeze()


START_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class LocalServer:
    url: str
    runtime: Runtime
    loop: asyncio.AbstractEventLoop
    app: Starlette


@contextlib.asynccontextmanager
async def local_server(config: AppConfig, log_level: str = "warning") -> AsyncIterator[LocalServer]:
    runtime = Runtime(config)
    app = create_app(runtime)
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, log_level))
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
        yield LocalServer(f"http://127.0.0.1:{port}", runtime, loops[0], app)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        runtime.close()
