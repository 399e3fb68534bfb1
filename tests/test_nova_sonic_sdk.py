"""The real aws-sdk-bedrock-runtime + awscrt stack against the loopback HTTP/2 event-stream fake.

Trust: awscrt has no CA option, but honours ``SSL_CERT_FILE``; the fixture points it (for this
test only, via monkeypatch) at a bundle of the system CAs plus a throwaway trustme CA.
Credentials: dummy keys in the environment, resolved through boto3's chain as in production.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trustme

from s2s.events import Closed, ProviderError, Transcript, TurnDone
from s2s.nova_sonic import NovaSonicConfig, NovaSonicProvider
from s2s.nova_sonic.session import NovaSonicSession
from s2s.provider import ProviderConnectError, SessionContext
from tests.fakes.nova_sonic_fake import FakeNovaModel, dominant_hz, sine_pcm16
from tests.fakes.nova_sonic_h2 import NovaH2Fake
from tests.support.session_events import EventLog
from tests.test_nova_sonic_session import speak


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    server.set_alpn_protocols(["h2"])
    system = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes((system.read_bytes() if system.exists() else b"") + ca.cert_pem.bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return server


async def open_via_sdk(fake: NovaH2Fake, **config: object) -> NovaSonicSession:
    provider = NovaSonicProvider(
        "nova", NovaSonicConfig(endpoint_url=fake.url, region="us-east-1", connect_timeout_s=10, **config)
    )
    return await provider.open_session(SessionContext("CA-sdk"))


async def h2_fake(tls: ssl.SSLContext, make_model: Callable[[], FakeNovaModel], **kw: object) -> NovaH2Fake:
    return NovaH2Fake(tls, make_model=make_model, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def fake(tls: ssl.SSLContext) -> AsyncIterator[NovaH2Fake]:
    async with NovaH2Fake(tls, make_model=lambda: FakeNovaModel(reply_hz=440, reply_ms=500)) as server:
        yield server


@pytest.mark.timeout(60)
async def test_real_sdk_full_turn_over_http2_event_stream(fake: NovaH2Fake) -> None:
    session = await open_via_sdk(fake)
    rec = EventLog(session)
    try:
        await speak(session, sine_pcm16(700, 300, 8000) + bytes(2 * 8000 * 300 // 1000))
        await rec.until(lambda ev: any(isinstance(e, Transcript) and e.role == "bot" and e.final for e in ev), 15)
        model = fake.models[0]
        assert [p.split("?")[0] for p in fake.paths] == [
            "/model/amazon.nova-2-sonic-v1%3A0/invoke-with-bidirectional-stream"
        ]
        assert fake.headers[0]["content-type"] == "application/vnd.amazon.eventstream"
        assert fake.headers[0]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAKE/")
        assert "/us-east-1/bedrock/aws4_request" in fake.headers[0]["authorization"]
        assert model.model_id == "amazon.nova-2-sonic-v1:0" and model.errors == []
        assert abs(dominant_hz(bytes(model.caller_audio), 8000) - 700) < 15
        assert rec.of(Transcript)[0] == Transcript("caller", "tone 700 Hz")
        audio = rec.audio()
        assert len(audio) == 2 * 8000 * 500 // 1000 and abs(dominant_hz(audio, 8000) - 440) < 15
        assert len(rec.of(TurnDone)) == 1
    finally:
        await asyncio.wait_for(session.close(), 5)
        await rec.stop()
    await fake_wait(lambda: fake.models[0].ended)
    tail = [next(iter(e["event"])) for e in fake.models[0].inputs[-3:]]
    assert tail == ["contentEnd", "promptEnd", "sessionEnd"]


async def fake_wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling a fake's plain attribute
            await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
async def test_real_sdk_model_timeout_exception_closes_with_error(tls: ssl.SSLContext) -> None:
    async with NovaH2Fake(tls, make_model=lambda: FakeNovaModel(limit_s=0.3)) as fake:
        session = await open_via_sdk(fake)
        rec = EventLog(session)
        try:
            await rec.until(lambda ev: any(isinstance(e, Closed) for e in ev), 15)
            errors = rec.of(ProviderError)
            assert errors and errors[0].code == "model_timeout" and errors[0].fatal
            assert rec.of(Closed) == [Closed("nova ended the session", error=True)]
        finally:
            await asyncio.wait_for(session.close(), 5)
            await rec.stop()


@pytest.mark.timeout(60)
async def test_real_sdk_stream_reset_is_a_drop(tls: ssl.SSLContext) -> None:
    async with NovaH2Fake(tls) as fake:
        session = await open_via_sdk(fake)
        rec = EventLog(session)
        try:
            fake.models[0].drop()
            await rec.until(lambda ev: any(isinstance(e, Closed) for e in ev), 15)
            assert rec.of(Closed)[0].error is True
            assert rec.of(ProviderError)[0].fatal
        finally:
            await asyncio.wait_for(session.close(), 5)
            await rec.stop()


@pytest.mark.timeout(60)
async def test_real_sdk_http_refusal_is_a_connect_error(tls: ssl.SSLContext) -> None:
    async with NovaH2Fake(tls, status=503) as fake:
        with pytest.raises(ProviderConnectError) as info:
            await open_via_sdk(fake)
        assert "open failed" in str(info.value)


@pytest.mark.timeout(60)
async def test_sessions_of_one_provider_share_one_http2_connection(fake: NovaH2Fake) -> None:
    """Renewal opens a second stream while the first still serves the call: both ride the
    provider's one SDK client and its HTTP/2 connection (no new TLS handshake)."""
    provider = NovaSonicProvider(
        "nova", NovaSonicConfig(endpoint_url=fake.url, region="us-east-1", connect_timeout_s=10)
    )
    first = await provider.open_session(SessionContext("CA-a"))
    second = await provider.open_session(SessionContext("CA-b"))
    try:
        assert len(fake.models) == 2 and fake.connections == 1
        # open() returns on the response headers; the opening events may still be in flight.
        await fake_wait(lambda: all(m.input_rate == 8000 for m in fake.models))
        assert all(m.errors == [] for m in fake.models)
    finally:
        await asyncio.wait_for(first.close(), 5)
        await asyncio.wait_for(second.close(), 5)


@pytest.mark.timeout(60)
async def test_a_corrupt_chunk_is_reported_and_the_call_goes_on(fake: NovaH2Fake) -> None:
    session = await open_via_sdk(fake)
    rec = EventLog(session)
    try:
        fake.models[0].output.put_nowait(b"\x00not json at all")  # type: ignore[arg-type]
        await rec.until(lambda ev: any(isinstance(e, ProviderError) for e in ev), 10)
        assert rec.of(ProviderError)[0].code == "bad_event" and not rec.of(ProviderError)[0].fatal
        await speak(session, sine_pcm16(700, 300, 8000) + bytes(2 * 8000 * 300 // 1000))
        await rec.until(lambda ev: any(isinstance(e, TurnDone) for e in ev), 15)
        assert not rec.of(Closed)
    finally:
        await asyncio.wait_for(session.close(), 5)
        await rec.stop()
