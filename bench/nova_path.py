"""Nova Sonic path figures: what the provider path adds per direction, at 8 kHz and 16k/24k.

- CPU per 20 ms of audio, client side, no network. Inbound: the mu-law 8 kHz -> PCM16
  transcode at the configured input rate, ``NovaProtocol.audio_input`` (base64), the JSON the
  SDK stream sends and the SDK's input-chunk shape. Outbound: ``json.loads`` of one output
  chunk, ``NovaProtocol.receive`` (base64 decode) and the PCM16 -> mu-law 8 kHz transcode; the
  fake sends 40 ms chunks, so the figure is per chunk / 2. The SDK's event-stream framing and
  per-frame SigV4 signing are not in these figures (they are in the latency run).
- Latency over loopback TLS + HTTP/2 through the real aws-sdk-bedrock-runtime/awscrt stack,
  against the event-stream fake (tests/fakes/nova_sonic_h2.py) in the same process. Inbound:
  caller frame handed to the transcoder -> the fake has decoded its ``audioInput``. Outbound:
  the fake emits an ``audioOutput`` -> its mu-law is ready for Twilio. Resampler filter delay
  (none at 8 kHz) is listed separately; network time to AWS is not included.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tempfile
from pathlib import Path

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
from s2s.nova_sonic import NovaSonicConfig, NovaSonicProvider
from s2s.nova_sonic.protocol import NovaProtocol, PromptSettings
from s2s.provider import SessionContext
from transcoding.formats import MULAW_8K, AudioFormat
from transcoding.mulaw import pcm16_to_mulaw
from transcoding.pipeline import make_transcoder

RATES = ((8000, 8000), (16000, 24000))


async def cpu_figures(frames: int, in_rate: int, out_rate: int) -> list[tuple[str, float, float]]:
    from aws_sdk_bedrock_runtime import models as m

    proto = NovaProtocol(PromptSettings("bench", "matthew", in_rate, out_rate))
    proto.open()
    proto.data_to_send()
    caller = pcm16_to_mulaw(tone(440, FRAME_MS, 8000))
    inbound_tc = make_transcoder(MULAW_8K, AudioFormat("pcm16", in_rate))

    async def inbound() -> None:
        proto.send_audio(inbound_tc.convert(caller))
        [event] = proto.data_to_send()
        m.InvokeModelWithBidirectionalStreamInputChunk(
            value=m.BidirectionalInputPayloadPart(bytes_=json.dumps(event).encode())
        )

    chunk = tone(600, CHUNK_MS, out_rate)
    proto.receive({"event": {"contentStart": {"contentId": "a", "type": "AUDIO", "role": "ASSISTANT"}}})
    wire = json.dumps(
        {"event": {"audioOutput": {"contentId": "a", "content": base64.b64encode(chunk).decode()}}}
    ).encode()
    outbound_tc = make_transcoder(AudioFormat("pcm16", out_rate), MULAW_8K)

    async def outbound() -> None:
        proto.receive(json.loads(wire))
        for event in proto.events_received():
            if isinstance(event, AudioOut):
                outbound_tc.convert(event.audio)

    in_median, in_mean = await timed(inbound, frames)
    out_median, out_mean = await timed(outbound, frames // 2)
    per_frame = CHUNK_MS / FRAME_MS
    return [
        (f"in: mu-law 8k -> {in_rate // 1000}k + audioInput event", in_median, in_mean),
        (f"out: parse + map + {out_rate // 1000}k -> mu-law 8k", out_median / per_frame, out_mean / per_frame),
    ]


def _trust_throwaway_ca() -> ssl.SSLContext:
    """Server TLS for the fake, and SSL_CERT_FILE (which awscrt honours) naming a bundle of the
    system CAs plus the throwaway CA. Set for this benchmark process only."""
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    server.set_alpn_protocols(["h2"])
    system = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    bundle = Path(tempfile.mkdtemp()) / "bundle.pem"
    bundle.write_bytes((system.read_bytes() if system.exists() else b"") + ca.cert_pem.bytes())
    os.environ["SSL_CERT_FILE"] = str(bundle)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIDBENCH")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    return server


async def latency_figures(turns: int) -> dict[str, list[float]]:
    from tests.fakes.nova_sonic_fake import FakeNovaModel
    from tests.fakes.nova_sonic_h2 import NovaH2Fake

    tls = _trust_throwaway_ca()
    model = lambda: FakeNovaModel(reply_ms=1000, chunk_ms=CHUNK_MS, speed=2.0)  # noqa: E731
    async with NovaH2Fake(tls, make_model=model) as fake:
        provider = NovaSonicProvider("nova", NovaSonicConfig(endpoint_url=fake.url, region="us-east-1"))
        session = await provider.open_session(SessionContext(call_sid="CA-bench"))
        times = await drive_turns(session, turns, lambda answered, _: answered == turns)
        nova = fake.models[0]
    return {"in": delays_ms(times.handed, nova.audio_in_at), "out": delays_ms(nova.audio_out_at, times.ready)}


def main(argv: list[str]) -> int:
    args = parse_args("nova_path", __doc__, argv)

    print(f"## Nova Sonic path: CPU per 20 ms of audio, client side ({args.frames} frames)\n")
    rows = []
    for in_rate, out_rate in RATES:
        cpu = asyncio.run(cpu_figures(args.frames, in_rate, out_rate))
        rows += cpu_rows(cpu)
    print(markdown_table(CPU_HEADERS, rows))

    latency = asyncio.run(latency_figures(args.turns))
    print("\n## Added latency over loopback TLS + HTTP/2 through aws-sdk-bedrock-runtime (fake, same process)\n")
    pcm8k = AudioFormat("pcm16", 8000)
    directions = (
        ("in", "caller -> Nova (8k mu-law -> 8k PCM16)", make_transcoder(MULAW_8K, pcm8k).delay_ms),
        ("out", "Nova -> caller (8k PCM16 -> 8k mu-law)", make_transcoder(pcm8k, MULAW_8K).delay_ms),
    )
    print(latency_table(latency, directions))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
