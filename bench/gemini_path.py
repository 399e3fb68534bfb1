"""Gemini Live path figures: what the provider path adds per direction on top of the resamplers.

- CPU per 20 ms of audio, client side, no network. Inbound: mu-law 8 kHz -> PCM16 16 kHz
  transcode plus the SDK's ``send_realtime_input`` (Blob validation, URL-safe base64, JSON)
  into a socket that discards the frame. Outbound: the SDK's parse of one ``serverContent``
  audio message (JSON, pydantic, base64) plus ``LiveEventMapper.feed`` plus the PCM16 24 kHz ->
  mu-law 8 kHz transcode; the fake and (as far as seen) the service send 40 ms chunks, so the
  figure is per chunk / 2.
- Latency over loopback TLS, through the real SDK against the fake Live server
  (tests/fakes/gemini_live_fake.py) in the same process and event loop. Inbound: from a caller
  frame being handed to the transcoder to the fake having decoded it. Outbound: from the fake
  sending a chunk to its mu-law being ready for Twilio. The resampler's own filter delay
  (``Transcoder.delay_ms``) is listed separately; network time to Google is not included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from pydantic import SecretStr

from bench.report import markdown_table
from s2s.events import AudioOut
from s2s.gemini_live import GeminiLiveConfig, GeminiLiveProvider
from s2s.gemini_live.protocol import LiveEventMapper
from s2s.gemini_live.session import make_client
from s2s.gemini_live.setup import INPUT_MIME
from s2s.provider import SessionContext
from tests.fakes.gemini_live_fake import GeminiLiveFake
from transcoding.formats import MULAW_8K, PCM16_16K, PCM16_24K
from transcoding.mulaw import pcm16_to_mulaw
from transcoding.pipeline import make_transcoder

FRAME_MS = 20
CHUNK_MS = 40


def _tone(freq: float, ms: float, rate: int) -> bytes:
    n = np.arange(int(rate * ms / 1000))
    return np.rint(8000 * np.sin(2 * np.pi * freq * n / rate)).astype("<i2").tobytes()


class _NullSocket:
    """Stands in for the SDK's WebSocket: ``send`` discards, ``recv`` replays one frame."""

    def __init__(self, frame: bytes = b"") -> None:
        self.frame = frame

    async def send(self, message: str) -> None:
        pass

    async def recv(self, decode: bool = False) -> bytes:
        return self.frame


async def _timed(run: Callable[[], Awaitable[Any]], count: int) -> tuple[float, float]:
    """Median and mean wall time of ``await run()`` in microseconds (inside one running loop,
    so loop start-up is not counted)."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples), statistics.fmean(samples)


async def cpu_figures(frames: int) -> list[tuple[str, float, float]]:
    from google.genai.live import AsyncSession

    client = make_client(GeminiLiveConfig(api_key=SecretStr("bench")))
    caller = pcm16_to_mulaw(_tone(440, FRAME_MS, 8000))
    inbound_tc = make_transcoder(MULAW_8K, PCM16_16K)
    sender = AsyncSession(api_client=client._api_client, websocket=_NullSocket())  # type: ignore[arg-type]

    async def inbound() -> None:
        pcm = inbound_tc.convert(caller)
        await sender.send_realtime_input(audio={"data": pcm, "mime_type": INPUT_MIME})

    chunk = _tone(600, CHUNK_MS, PCM16_24K.sample_rate)
    blob = {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(chunk).decode()}
    message = {"serverContent": {"modelTurn": {"parts": [{"inlineData": blob}]}}}
    receiver = AsyncSession(
        api_client=client._api_client,
        websocket=_NullSocket(json.dumps(message).encode()),  # type: ignore[arg-type]
    )
    mapper = LiveEventMapper()
    outbound_tc = make_transcoder(PCM16_24K, MULAW_8K)

    async def outbound() -> None:
        for event in mapper.feed(await receiver._receive()):
            if isinstance(event, AudioOut):
                outbound_tc.convert(event.audio)

    in_median, in_mean = await _timed(inbound, frames)
    out_median, out_mean = await _timed(outbound, frames // 2)
    per_frame = CHUNK_MS / FRAME_MS
    return [
        ("in: mu-law 8k -> 16k + send_realtime_input", in_median, in_mean),
        ("out: SDK parse + mapper + 24k -> mu-law 8k", out_median / per_frame, out_mean / per_frame),
    ]


async def latency_figures(turns: int) -> dict[str, list[float]]:
    async with GeminiLiveFake(reply_ms=1000, chunk_ms=CHUNK_MS, chunk_interval_s=CHUNK_MS / 2000) as fake:
        provider = GeminiLiveProvider(
            "gemini", GeminiLiveConfig(api_key=SecretStr("bench"), base_url=fake.base_url, ca_file=fake.ca_file)
        )
        session = await provider.open_session(SessionContext(call_sid="CA-bench"))
        inbound_tc = make_transcoder(MULAW_8K, session.input_format)
        outbound_tc = make_transcoder(session.output_format, MULAW_8K)
        handed: list[float] = []
        ready: list[float] = []
        replies_done = asyncio.Event()

        async def drain() -> None:
            async for event in session.events():
                if isinstance(event, AudioOut):
                    outbound_tc.convert(event.audio)
                    ready.append(time.monotonic())
                elif type(event).__name__ == "TurnDone" and len(ready) >= turns * (1000 // CHUNK_MS):
                    replies_done.set()

        reader = asyncio.ensure_future(drain())
        speech = pcm16_to_mulaw(_tone(440, 600, 8000) + bytes(2 * 8 * 400))
        frame_bytes = MULAW_8K.nbytes(FRAME_MS)
        for _ in range(turns):
            for start in range(0, len(speech), frame_bytes):
                handed.append(time.monotonic())
                await session.send_audio(inbound_tc.convert(speech[start : start + frame_bytes]))
                await asyncio.sleep(FRAME_MS / 1000)
            await asyncio.sleep(1.2)  # the reply plays out before the next caller turn
        await asyncio.wait_for(replies_done.wait(), 10)
        conn = fake.last
        await session.close()
        reader.cancel()
    inbound = [(arrived - sent) * 1000 for sent, arrived in zip(handed, conn.audio_in_at, strict=False)]
    outbound = [(done - sent) * 1000 for sent, done in zip(conn.audio_out_at, ready, strict=False)]
    return {"in": inbound, "out": outbound}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gemini_path", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="20 ms frames timed for the CPU figures")
    parser.add_argument("--turns", type=int, default=2, help="caller turns in the loopback latency run")
    args = parser.parse_args(argv)

    cpu = asyncio.run(cpu_figures(args.frames))
    print(f"## Gemini Live path: CPU per 20 ms of audio, client side ({args.frames} frames)\n")
    rows = [(name, f"{median:.0f}", f"{mean:.0f}", f"{mean * 50 / 1e4:.3f}") for name, median, mean in cpu]
    print(markdown_table(["direction", "µs (median)", "µs (mean)", "% of one core"], rows))
    total = sum(mean for _, _, mean in cpu) * 50 / 1e4
    print(f"\nBoth directions: {total:.2f}% of one core per call.\n")

    latency = asyncio.run(latency_figures(args.turns))
    delays = {
        "in": make_transcoder(MULAW_8K, PCM16_16K).delay_ms,
        "out": make_transcoder(PCM16_24K, MULAW_8K).delay_ms,
    }
    print("## Added latency over loopback TLS through the SDK (fake Live server, same process)\n")
    latency_rows = []
    for direction, label in (
        ("in", "caller -> Gemini (8k mu-law -> 16k)"),
        ("out", "Gemini -> caller (24k -> 8k mu-law)"),
    ):
        values = sorted(latency[direction])
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        latency_rows.append(
            (label, str(len(values)), f"{statistics.median(values):.2f}", f"{p95:.2f}", f"{delays[direction]:.1f}")
        )
    print(markdown_table(["direction", "messages", "ms (median)", "ms (p95)", "+ resampler delay ms"], latency_rows))
    return 0
