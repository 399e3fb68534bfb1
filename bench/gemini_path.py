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

import asyncio
import base64
import json

from pydantic import SecretStr

from bench.provider_path import (
    CHUNK_MS,
    CPU_HEADERS,
    FRAME_MS,
    cpu_rows,
    delays_ms,
    drive_turns,
    latency_table,
    parse_args,
    timed,
    tone,
)
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


class _NullSocket:
    """Stands in for the SDK's WebSocket: ``send`` discards, ``recv`` replays one frame."""

    def __init__(self, frame: bytes = b"") -> None:
        self.frame = frame

    async def send(self, message: str) -> None:
        pass

    async def recv(self, decode: bool = False) -> bytes:
        return self.frame


async def cpu_figures(frames: int) -> list[tuple[str, float, float]]:
    from google.genai.live import AsyncSession

    client = make_client(GeminiLiveConfig(api_key=SecretStr("bench")))
    caller = pcm16_to_mulaw(tone(440, FRAME_MS, 8000))
    inbound_tc = make_transcoder(MULAW_8K, PCM16_16K)
    sender = AsyncSession(api_client=client._api_client, websocket=_NullSocket())  # type: ignore[arg-type]

    async def inbound() -> None:
        pcm = inbound_tc.convert(caller)
        await sender.send_realtime_input(audio={"data": pcm, "mime_type": INPUT_MIME})

    chunk = tone(600, CHUNK_MS, PCM16_24K.sample_rate)
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

    in_median, in_mean = await timed(inbound, frames)
    out_median, out_mean = await timed(outbound, frames // 2)
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
        # an interrupted reply also ends in TurnDone, so count chunks: done once every reply is out
        times = await drive_turns(session, turns, lambda _, chunks: chunks >= turns * (1000 // CHUNK_MS))
        conn = fake.last
    return {"in": delays_ms(times.handed, conn.audio_in_at), "out": delays_ms(conn.audio_out_at, times.ready)}


def main(argv: list[str]) -> int:
    args = parse_args("gemini_path", __doc__, argv)

    cpu = asyncio.run(cpu_figures(args.frames))
    print(f"## Gemini Live path: CPU per 20 ms of audio, client side ({args.frames} frames)\n")
    print(markdown_table(CPU_HEADERS, cpu_rows(cpu)))
    total = sum(mean for _, _, mean in cpu) * 50 / 1e4
    print(f"\nBoth directions: {total:.2f}% of one core per call.\n")

    latency = asyncio.run(latency_figures(args.turns))
    print("## Added latency over loopback TLS through the SDK (fake Live server, same process)\n")
    directions = (
        ("in", "caller -> Gemini (8k mu-law -> 16k)", make_transcoder(MULAW_8K, PCM16_16K).delay_ms),
        ("out", "Gemini -> caller (24k -> 8k mu-law)", make_transcoder(PCM16_24K, MULAW_8K).delay_ms),
    )
    print(latency_table(latency, directions))
    return 0
