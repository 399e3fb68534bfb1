"""The provider modes of ``python -m bench load``: one entry of :data:`MODES` per provider path.

A mode starts its loopback provider fake (from ``tests/fakes``, the same fakes the test suite
drives the production SDK clients against) in the benchmark's client process and says:

- the ``[providers.bench]`` TOML table that points ``voicebot serve`` at it;
- the arguments of the featureless floor relay (``bench.floor``) for the same fake, if any;
- the environment the server process needs (a CA to trust, dummy cloud credentials);
- per provider connection, when each audio message arrived / left the fake and where its
  audio starts or ends in that direction's stream, with the byte rate of each direction, so
  the harness can pair them with the caller's frames.

Every fake answers a caller turn with a 2 s reply (a 440 Hz tone) streamed in 40 ms chunks
8x faster than real time. Adding a path (gpt_live, a cascade) is one function and one entry.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import trustme

REPLY_MS = 2000
CHUNK_MS = 40
SPEEDUP = 8.0


@dataclass(frozen=True)
class SessionLog:
    """One provider connection as the fake saw it (times: ``time.monotonic()``)."""

    audio_in: bytes | bytearray  # the caller audio received, in the input format
    in_at: Sequence[float]
    in_ends: Sequence[int]  # bytes of caller audio received up to and including each message
    out_at: Sequence[float]
    out_starts: Sequence[int]  # bytes of bot audio sent before each chunk


@dataclass
class ProviderFake:
    provider_toml: str
    in_mulaw: bool = True  # the caller audio reaches the fake as mu-law (else PCM16)
    in_bytes_per_s: int = 8000
    out_bytes_per_s: int = 8000
    floor: list[str] | None = None  # ``bench.floor`` arguments after PORT: PROVIDER URL [CA_FILE]
    env: dict[str, str] = field(default_factory=dict)
    sessions: Callable[[], Sequence[SessionLog]] = list
    reply_ms: int = REPLY_MS
    provider_socket: bool = True  # False: no provider connection to wait for or time (echo)


@contextlib.asynccontextmanager
async def openai_fake() -> AsyncIterator[ProviderFake]:
    """OpenAI Realtime GA through the official ``openai`` SDK, mu-law passthrough both ways."""
    from tests.fakes.openai_realtime_fake import FakeOptions, FakeRealtimeServer

    options = FakeOptions(api_key="bench", response_ms=REPLY_MS, chunk_ms=CHUNK_MS, speedup=SPEEDUP)
    async with FakeRealtimeServer(options) as fake:
        yield ProviderFake(
            provider_toml=f'type = "openai_realtime"\napi_key = "bench"\nbase_url = "{fake.base_url}"',
            floor=["openai", fake.base_url],
            sessions=lambda: [
                SessionLog(c.audio_in, c.audio_in_at, c.audio_in_ends, c.audio_out_at, c.audio_out_starts)
                for c in fake.connections
            ],
        )


@contextlib.asynccontextmanager
async def gpt_live_fake() -> AsyncIterator[ProviderFake]:
    """OpenAI's Live API (``client.live``) through the official ``openai`` SDK, mu-law both ways.
    Its sessions are paced (bot audio is released to Twilio at real time), so the fake streams
    at real time too: a faster stream would make "provider -> Twilio" the pacing hold, by design."""
    from tests.fakes.gpt_live_fake import FakeLiveServer, LiveFakeOptions

    options = LiveFakeOptions(api_key="bench", response_ms=REPLY_MS, chunk_ms=CHUNK_MS, speedup=1.0)
    async with FakeLiveServer(options) as fake:
        yield ProviderFake(
            provider_toml=f'type = "gpt_live"\napi_key = "bench"\nbase_url = "{fake.base_url}"',
            sessions=lambda: [
                SessionLog(c.audio_in, c.audio_in_at, c.audio_in_ends, c.audio_out_at, c.audio_out_starts)
                for c in fake.connections
            ],
        )


@contextlib.asynccontextmanager
async def gemini_fake() -> AsyncIterator[ProviderFake]:
    """Gemini Live through ``google-genai`` over loopback TLS: 16 kHz in, 24 kHz out."""
    from tests.fakes.gemini_live_fake import GeminiLiveFake

    async with GeminiLiveFake(
        reply_ms=REPLY_MS, reply_freqs=(440.0,), chunk_ms=CHUNK_MS, chunk_interval_s=CHUNK_MS / 1000 / SPEEDUP
    ) as fake:
        yield ProviderFake(
            provider_toml=(
                f'type = "gemini_live"\napi_key = "bench"\nbase_url = "{fake.base_url}"\nca_file = "{fake.ca_file}"'
            ),
            in_mulaw=False,
            in_bytes_per_s=32000,
            out_bytes_per_s=48000,
            floor=["gemini", fake.base_url, fake.ca_file],
            sessions=lambda: [
                SessionLog(c.audio_in, c.audio_in_at, c.audio_in_ends, c.audio_out_at, c.audio_out_starts)
                for c in fake.connections
            ],
        )


def _trust_bundle(ca: trustme.CA, directory: Path) -> str:
    """awscrt trusts ``SSL_CERT_FILE``: the system bundle plus the throwaway CA."""
    system = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    bundle = directory / "ca-bundle.pem"
    bundle.write_bytes((system.read_bytes() if system.exists() else b"") + ca.cert_pem.bytes())
    return str(bundle)


@contextlib.asynccontextmanager
async def nova_fake() -> AsyncIterator[ProviderFake]:
    """Amazon Nova 2 Sonic through aws-sdk-bedrock-runtime (HTTP/2 over loopback TLS), 8 kHz PCM16."""
    from tests.fakes.nova_sonic_fake import FakeNovaModel
    from tests.fakes.nova_sonic_h2 import NovaH2Fake

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_tls)
    server_tls.set_alpn_protocols(["h2"])
    with tempfile.TemporaryDirectory(prefix="bench-nova-") as tmp:
        env = {
            "SSL_CERT_FILE": _trust_bundle(ca, Path(tmp)),
            "AWS_ACCESS_KEY_ID": "AKIDBENCH",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

        def model() -> FakeNovaModel:
            return FakeNovaModel(reply_hz=440.0, reply_ms=REPLY_MS, chunk_ms=CHUNK_MS, speed=SPEEDUP)

        async with NovaH2Fake(server_tls, make_model=model) as fake:
            yield ProviderFake(
                provider_toml=f'type = "nova_sonic"\nregion = "us-east-1"\nendpoint_url = "{fake.url}"',
                in_mulaw=False,
                in_bytes_per_s=16000,
                out_bytes_per_s=16000,
                floor=["nova", fake.url],
                env=env,
                sessions=lambda: [
                    SessionLog(m.caller_audio, m.audio_in_at, m.audio_in_ends, m.audio_out_at, m.audio_out_starts)
                    for m in fake.models
                ],
            )


@contextlib.asynccontextmanager
async def cascade_fake() -> AsyncIterator[ProviderFake]:
    """A cascade through the official ``openai`` package: the realtime transcription session
    (mu-law in, the provider connection), then a streamed chat completion and the speech
    endpoint (24 kHz PCM out) over loopback HTTP. Each turn's transcript names its call, the
    chat fake answers with 8 words, and the speech fake speaks them (250 ms a word: a 2 s
    reply) 8x faster than real time, so the reply's audio is traced back to its call."""
    from tests.fakes.openai_cascade_fake import SPEECH_RATE, FakeOpenAIHttp, FakeTranscription

    async with (
        FakeTranscription(label_calls=True) as stt,
        FakeOpenAIHttp(speedup=SPEEDUP, default_reply="{user}: one two three four five six.") as http,
    ):

        def sessions() -> list[SessionLog]:
            logs = []
            for index, conn in enumerate(stt.connections):
                streams = [s for s in http.speech_streams if s.text.startswith(f"call {index}:")]
                out_at: list[float] = []
                out_starts: list[int] = []
                offset = 0
                for stream in streams:
                    out_at += stream.chunk_times
                    out_starts += [offset + start for start in stream.chunk_starts]
                    offset += stream.bytes_sent
                logs.append(SessionLog(conn.audio_in, conn.audio_in_at, conn.audio_in_ends, out_at, out_starts))
            return logs

        parts = (
            f'stt = {{ type = "openai_realtime", api_key = "test-key", base_url = "{stt.base_url}" }}\n'
            f'llm = {{ type = "openai_chat", api_key = "test-key", base_url = "{http.base_url}" }}\n'
            f'tts = {{ type = "openai_speech", api_key = "test-key", base_url = "{http.base_url}" }}'
        )
        yield ProviderFake(
            provider_toml=f'type = "cascade"\n{parts}', out_bytes_per_s=SPEECH_RATE * 2, sessions=sessions
        )


@contextlib.asynccontextmanager
async def echo_line() -> AsyncIterator[ProviderFake]:
    """The built-in echo line: no provider socket (so no provider latencies and no floor)."""
    yield ProviderFake(provider_toml='type = "echo"', reply_ms=1000, provider_socket=False)  # repeats the tone


_CHECKS = (
    "openai_client_frame",
    "openai_server_event",
    "live_client_frame",
    "live_server_event",
    "gemini_client_message",
    "gemini_server_message",
)


@contextlib.contextmanager
def without_frame_validation() -> Iterator[None]:
    """The fakes validate every frame against the SDKs' pydantic models (``tests/fakes/
    conformance.py``): that is the tests' job, and at 150 calls it alone would take the client
    process off real time. Under the benchmark the checks pass everything."""
    from tests.fakes import conformance

    saved = {name: getattr(conformance, name) for name in _CHECKS}
    for name in _CHECKS:
        setattr(conformance, name, _no_problem)
    try:
        yield
    finally:
        for name, check in saved.items():
            setattr(conformance, name, check)


def _no_problem(frame: object) -> None:
    return None


@dataclass(frozen=True)
class Mode:
    fake: Callable[[], AbstractAsyncContextManager[ProviderFake]]
    floor: bool  # bench.floor has a relay for it


MODES: dict[str, Mode] = {
    "openai": Mode(openai_fake, floor=True),
    "gpt_live": Mode(gpt_live_fake, floor=False),
    "gemini": Mode(gemini_fake, floor=True),
    "nova": Mode(nova_fake, floor=True),
    "cascade": Mode(cascade_fake, floor=False),
    "echo": Mode(echo_line, floor=False),
}
