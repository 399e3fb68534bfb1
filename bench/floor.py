"""The featureless floor for ``python -m bench load``: the least a Twilio <-> provider relay can do.

Written for the benchmark only, on voicebot's stack (starlette + uvicorn with the sans-I/O
websockets implementation, no per-message deflate, the loop uvicorn picks: uvloop when
installed), so ``bench load`` can print every voicebot figure as a ratio to what the same
stack costs with no features: no signature checks, no routing, admission, barge-in, marks,
playout tracking, recovery, telemetry or logs. Per call it answers the webhook with a
``<Connect><Stream>``, takes the stream's ``start``, opens the provider socket with plain
``websockets`` and then only moves audio: caller frames out as the provider's append message,
provider audio back as Twilio ``media``. Where the provider's rates differ from the line's it
converts with voicebot's own ``transcoding`` (the same work any relay must do); on the mu-law
OpenAI path the base64 payload passes through untouched.

``python -m bench.floor PROVIDER PORT URL [CA_FILE]``; ``/healthz`` answers when it is up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from transcoding.formats import MULAW_8K, PCM16_16K, PCM16_24K
from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw
from transcoding.pipeline import make_transcoder


class Relay:
    """One call: the Twilio socket, its stream, and where the provider is."""

    def __init__(self, twilio: WebSocket, stream_sid: str, url: str, ssl_context: ssl.SSLContext | None) -> None:
        self.twilio = twilio
        self.stream_sid = stream_sid
        self.url = url
        self.ssl = ssl_context

    async def pump(self, upstream: Callable[[], Awaitable[None]], on_payload: Callable[[str], Awaitable[None]]) -> None:
        """Runs the provider reader beside the caller loop; either side ending ends the call."""
        reader = asyncio.ensure_future(upstream())
        try:
            while True:
                message = json.loads(await self.twilio.receive_text())
                event = message["event"]
                if event == "media":
                    await on_payload(message["media"]["payload"])
                elif event == "stop":
                    return
        except WebSocketDisconnect:
            return
        finally:
            reader.cancel()

    async def to_twilio(self, payload: str) -> None:
        await self.twilio.send_text(
            f'{{"event":"media","streamSid":"{self.stream_sid}","media":{{"payload":"{payload}"}}}}'
        )


async def openai_relay(relay: Relay) -> None:
    """OpenAI Realtime GA, audio/pcmu both ways: payloads pass through as base64 strings."""
    async with websockets.connect(
        relay.url + "/realtime?model=gpt-realtime",
        additional_headers={"Authorization": "Bearer bench"},
        compression=None,
        max_size=16 * 2**20,
    ) as provider:
        pcmu = {"format": {"type": "audio/pcmu"}}
        session = {"type": "realtime", "audio": {"input": pcmu, "output": pcmu}}
        await provider.send(json.dumps({"type": "session.update", "session": session}))

        async def from_provider() -> None:
            async for raw in provider:
                message = json.loads(raw)
                if message["type"] == "response.output_audio.delta":
                    await relay.to_twilio(message["delta"])

        async def to_provider(payload: str) -> None:
            await provider.send(f'{{"type":"input_audio_buffer.append","audio":"{payload}"}}')

        await relay.pump(from_provider, to_provider)


async def gemini_relay(relay: Relay) -> None:
    """Gemini Live: 8 kHz mu-law -> 16 kHz PCM16 in, 24 kHz PCM16 -> 8 kHz mu-law out."""
    inbound = make_transcoder(MULAW_8K, PCM16_16K)
    outbound = make_transcoder(PCM16_24K, MULAW_8K)
    path = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent?key=bench"
    async with websockets.connect(
        relay.url.replace("https://", "wss://") + path, ssl=relay.ssl, compression=None, max_size=None
    ) as provider:
        setup = {"model": "models/gemini-2.5-flash-native-audio", "generationConfig": {"responseModalities": ["AUDIO"]}}
        await provider.send(json.dumps({"setup": setup}))
        await provider.recv()  # setupComplete

        async def from_provider() -> None:
            async for raw in provider:
                content = json.loads(raw).get("serverContent") or {}
                for part in (content.get("modelTurn") or {}).get("parts", ()):
                    mulaw = outbound.convert(base64.b64decode(part["inlineData"]["data"]))
                    await relay.to_twilio(base64.b64encode(mulaw).decode())
                if content.get("turnComplete"):
                    tail = outbound.flush()
                    if tail:
                        await relay.to_twilio(base64.b64encode(tail).decode())

        async def to_provider(payload: str) -> None:
            pcm = base64.b64encode(inbound.convert(base64.b64decode(payload))).decode()
            await provider.send(f'{{"realtimeInput":{{"audio":{{"data":"{pcm}","mimeType":"audio/pcm;rate=16000"}}}}}}')

        await relay.pump(from_provider, to_provider)


_nova_factories: dict[str, Any] = {}  # one SDK client per process, as voicebot keeps one per provider


async def nova_relay(relay: Relay) -> None:
    """Nova 2 Sonic, 8 kHz PCM16 both ways. The wire is HTTP/2 event streams signed with SigV4, so
    the relay uses voicebot's thin SDK stream (``s2s.nova_sonic.sdk_stream``: open/send/receive
    of raw events over aws-sdk-bedrock-runtime) and the pure event builders of
    ``s2s.nova_sonic.protocol``; none of the session's features (barge-in, history, recovery)."""
    from s2s.nova_sonic.config import NovaSonicConfig
    from s2s.nova_sonic.protocol import NovaProtocol, PromptSettings
    from s2s.nova_sonic.sdk_stream import SdkStreamFactory

    config = NovaSonicConfig(endpoint_url=relay.url, region="us-east-1")
    factory = _nova_factories.setdefault(relay.url, SdkStreamFactory(config))
    protocol = NovaProtocol(PromptSettings("You relay audio.", "tiffany", 8000, 8000))
    stream = factory()
    protocol.open()
    await stream.open(config.model_id, protocol.data_to_send())

    async def from_provider() -> None:
        while (event := await stream.receive()) is not None:
            audio = event.get("event", {}).get("audioOutput")
            if audio is not None:
                mulaw = pcm16_to_mulaw(base64.b64decode(audio["content"]))
                await relay.to_twilio(base64.b64encode(mulaw).decode())

    async def to_provider(payload: str) -> None:
        protocol.send_audio(mulaw_to_pcm16(base64.b64decode(payload)))
        for event in protocol.data_to_send():
            await stream.send(event)

    try:
        await relay.pump(from_provider, to_provider)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stream.close(), 2.0)


RELAYS: dict[str, Callable[[Relay], Awaitable[None]]] = {
    "openai": openai_relay,
    "gemini": gemini_relay,
    "nova": nova_relay,
}


def create_app(provider: str, port: int, url: str, ca_file: str | None) -> Starlette:
    run_relay = RELAYS[provider]
    ssl_context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    twiml = f'<Response><Connect><Stream url="ws://127.0.0.1:{port}/media"/></Connect></Response>'

    async def voice(request: Request) -> Response:
        return Response(twiml, media_type="text/xml")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def media(twilio: WebSocket) -> None:
        await twilio.accept()
        try:
            while True:
                message = json.loads(await twilio.receive_text())
                if message["event"] == "start":
                    break
        except WebSocketDisconnect:
            return
        await run_relay(Relay(twilio, message["start"]["streamSid"], url, ssl_context))
        await twilio.close()

    return Starlette(
        routes=[
            Route("/twilio/voice", voice, methods=["POST"]),
            Route("/healthz", healthz),
            WebSocketRoute("/media", media),
        ]
    )


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or argv[0] not in RELAYS:
        print(f"usage: python -m bench.floor {{{','.join(RELAYS)}}} PORT URL [CA_FILE]", file=sys.stderr)
        return 2
    provider, port, url = argv[0], int(argv[1]), argv[2]
    app = create_app(provider, port, url, argv[3] if len(argv) == 4 else None)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=1024 * 1024,
        log_level="warning",
        lifespan="off",
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
