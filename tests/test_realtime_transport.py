"""The realtime providers' send path (s2s.realtime_protocol.transport): frames written straight
onto the websockets connection arrive whole and in order, the usual path takes over when a
direct write is not possible, and the installed openai SDK's connection takes the direct path."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from s2s.openai_realtime import OpenAIRealtimeConfig, OpenAIRealtimeProvider
from s2s.openai_realtime.session import SdkTransport
from s2s.provider import SessionContext
from s2s.realtime_protocol.session import RealtimeSession
from s2s.realtime_protocol.transport import FrameWriter
from tests.fakes.openai_realtime_fake import FakeRealtimeServer


async def test_frames_written_directly_arrive_whole_and_in_order_and_a_closed_socket_raises() -> None:
    received: list[str | bytes] = []
    got_all = asyncio.Event()

    async def collect(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(message)
            if len(received) == 200:
                got_all.set()

    async with serve(collect, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None)
        writer = FrameWriter(ws)
        frames = [json.dumps({"n": n, "audio": "A" * (200 + n)}) for n in range(200)]
        assert all(writer.send_now(frame) for frame in frames)
        await asyncio.wait_for(got_all.wait(), 5)
        assert received == frames  # text frames, as sent
        await ws.close()
        assert not writer.send_now("late")  # not open: the caller must await send()
        with pytest.raises(ConnectionClosed):
            await writer.send("late")


async def test_the_installed_openai_sdk_sends_through_the_direct_writer() -> None:
    async with FakeRealtimeServer() as fake:
        config = OpenAIRealtimeConfig.model_validate(
            {"type": "openai_realtime", "api_key": "test-key", "base_url": fake.base_url, "connect_timeout_s": 2.0}
        )
        session = await OpenAIRealtimeProvider("openai", config).open_session(SessionContext("CA1"))
        assert isinstance(session, RealtimeSession)
        transport = session._transport
        assert isinstance(transport, SdkTransport)
        assert transport.writer is not None, "the SDK no longer exposes its websockets connection: sends are slow"
        await session.send_audio(b"\xff" * 160)
        await fake.wait_for(lambda: len(fake.last.audio_in) == 160)
        await session.close()
