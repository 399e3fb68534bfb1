"""Slowloris over real sockets: clients that trickle a request are cut off at the header and
body deadlines, and their number is bounded, while Twilio's calls go through."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import pytest

from tests.support.audio import dominant_frequency, to_mulaw, tone
from tests.support.server import echo_line_config, running_server

LIMITS = "[server]\nheader_timeout_s = 2.0\nbody_timeout_s = 2.0\nmax_unauthenticated_connections = 20"


async def trickle(url: str, head: bytes, closed: asyncio.Event) -> None:
    """Open a connection, send ``head``, then one more byte every 200 ms until the server
    closes it (which sets ``closed``)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head)
        while True:
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1024), 0.2) == b"":
                    break
            except TimeoutError:
                writer.write(b"x")
    except ConnectionError:
        pass
    finally:
        closed.set()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_trickled_headers_and_bodies_are_cut_off_and_bounded_while_calls_go_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_server(echo_line_config(sections=LIMITS)) as server:
        header_clients = [asyncio.Event() for _ in range(50)]
        body_clients = [asyncio.Event() for _ in range(5)]
        tasks = [
            asyncio.create_task(trickle(server.url, b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nX-A: ", event))
            for event in header_clients
        ]
        body_head = b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nCallSid="
        tasks += [asyncio.create_task(trickle(server.url, body_head, event)) for event in body_clients]
        # At most 20 may wait for a complete request at once: the 35 oldest are evicted at once.
        async with server.twilio().call() as call:
            await call.wait_for(lambda: sum(e.is_set() for e in header_clients + body_clients) >= 35, timeout=1.5)
            await call.say(to_mulaw(tone(700, 600)))
            await call.wait_for(lambda: call.received_media_ms() >= 550, timeout=8)
            await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
            assert dominant_frequency(call.heard_pcm(), 8000) == pytest.approx(700, abs=15)
            # The rest are cut off at the deadlines, although they keep sending.
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in header_clients + body_clients)), 10)
        await asyncio.gather(*tasks)
    closures = [r.getMessage() for r in caplog.records if "closed slow HTTP connection(s)" in r.getMessage()]
    assert len(closures) == 1  # a summary (the next one would come 10 s later), not a line per connection
    assert "evicted (too many connections without a complete request)" in closures[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
