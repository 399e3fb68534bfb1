"""Recordings that outlive the pod: ``[recording] store = "s3"`` against moto's standalone S3
server on loopback, through boto3 exactly as production talks to AWS (``endpoint_url``).

Calls are signed and streamed as Twilio does; what is checked is what lands in the bucket
(key, server-side encryption, storage class, the bytes of the tape and its WAV rendering),
what stays on disk meanwhile, and that a dead or hanging store never holds up a call."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from scipy.io import wavfile

from tests.support.audio import dominant_frequency, to_mulaw, tone
from tests.support.server import RunningServer, echo_line_config, running_server
from tests.test_telemetry import scrape, value
from voicebot.devtools.tape.format import TapeHeader, dumps_line, encode_header, read_tape
from voicebot.devtools.tape.recorder import tape_filename
from voicebot.devtools.tape.replay import finished_tape
from voicebot.recordings.upload import UPLOADED_LIST, UploadResult

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def aws_chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials come from the standard chain (here: its environment variables), never the
    config; no shared files of this machine, and no instance-metadata lookup off loopback."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MotoS3:
    """moto's S3 REST server on 127.0.0.1 (stoppable and restartable on the same port: its
    buckets live in this process, so they survive a restart, like a real outage)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.url, region_name=REGION)

    def new_bucket(self) -> str:
        bucket = "tapes-" + secrets.token_hex(6)
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def objects(self, bucket: str) -> dict[str, dict[str, Any]]:
        client = self.client()
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {o["Key"]: client.head_object(Bucket=bucket, Key=o["Key"]) for o in listed}

    def body(self, bucket: str, key: str) -> bytes:
        data: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return data


@pytest.fixture
def s3() -> Iterator[MotoS3]:
    server = MotoS3(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def s3_config(tapes: Path, endpoint: str, bucket: str, extra: str = "") -> str:
    return echo_line_config(
        route_extra="recording = true",
        sections=f"""
[recording]
dir = "{tapes}"
store = "s3"
retry_initial_s = 0.05
retry_max_s = 0.2
{extra}

[recording.s3]
bucket = "{bucket}"
prefix = "calls/"
endpoint_url = "{endpoint}"
region = "{REGION}"
server_side_encryption = "AES256"
storage_class = "STANDARD_IA"
connect_timeout_s = 1
read_timeout_s = 2
""",
    )


class Uploads:
    """The server's upload results, awaited from the test's loop (no polling)."""

    def __init__(self, server: RunningServer) -> None:
        assert server.runtime.tape_uploads is not None
        self.results: list[UploadResult] = []
        self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def heard(result: UploadResult) -> None:
            self.results.append(result)
            loop.call_soon_threadsafe(self._changed.set)

        server.runtime.tape_uploads.listeners.append(heard)

    async def until(self, predicate: Any, timeout: float = 15.0) -> None:
        """Wait until ``predicate()`` holds, checked now and after each upload result."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


async def a_call(server: RunningServer, hz: float = 700.0) -> str:
    """One signed call: the caller says a tone, the echo line says it back, the caller hangs up."""
    async with server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(hz, 600)))
        await call.wait_for(lambda: call.received_media_ms() >= 600, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
    return call.call_sid


async def test_a_calls_tape_and_its_wav_land_in_the_bucket_encrypted_in_the_storage_class(
    tmp_path: Path, s3: MotoS3
) -> None:
    bucket = await asyncio.to_thread(s3.new_bucket)
    async with running_server(s3_config(tmp_path, s3.url, bucket, "upload_wav = true")) as server:
        uploads = Uploads(server)
        call_sid = await a_call(server)
        await uploads.until(lambda: any(r.kind == "tape" and r.ok for r in uploads.results))
        metrics = await scrape(server.url)
    (tape_result,) = [r for r in uploads.results if r.kind == "tape"]
    name = tape_result.tape
    assert name.endswith(f"_{call_sid}.jsonl")
    day = f"{name[:4]}-{name[4:6]}-{name[6:8]}"
    key = f"calls/{day}/{name}"
    wav_key = key.removesuffix(".jsonl") + ".wav"
    objects = await asyncio.to_thread(s3.objects, bucket)
    assert set(objects) == {key, wav_key}
    for head in objects.values():
        assert head["ServerSideEncryption"] == "AES256"
        assert head["StorageClass"] == "STANDARD_IA"
    assert objects[wav_key]["ContentType"] == "audio/wav"

    # The tape in the bucket is the whole call, and the local copy is gone once it is there.
    body = await asyncio.to_thread(s3.body, bucket, key)
    lines = body.decode().splitlines()
    assert json.loads(lines[0])["call_sid"] == call_sid and json.loads(lines[-1])["k"] == "end"
    assert not (tmp_path / name).exists()
    # The WAV is the call as heard: the caller's tone on the left, the bot's echo of it on the right.
    rate, stereo = wavfile.read(io.BytesIO(await asyncio.to_thread(s3.body, bucket, wav_key)))
    assert rate == 8000 and stereo.shape[1] == 2
    assert dominant_frequency(stereo[:, 0].astype("float64"), rate) == pytest.approx(700, abs=15)
    assert dominant_frequency(stereo[:, 1].astype("float64"), rate) == pytest.approx(700, abs=15)
    assert value(metrics, "voicebot_tape_uploads_total", kind="tape", outcome="ok") == 1
    assert value(metrics, "voicebot_tape_uploads_total", kind="wav", outcome="ok") == 1
    assert value(metrics, "voicebot_tape_upload_backlog") == 0


async def test_a_store_down_at_first_gets_the_tape_later_and_it_stays_on_disk_meanwhile(tmp_path: Path) -> None:
    s3 = MotoS3(free_port())
    s3.start()
    bucket = await asyncio.to_thread(s3.new_bucket)
    s3.stop()  # the outage: connections to the endpoint are refused
    try:
        async with running_server(s3_config(tmp_path, s3.url, bucket, "keep_local = true")) as server:
            uploads = Uploads(server)
            call_sid = await a_call(server)
            await uploads.until(lambda: sum(1 for r in uploads.results if not r.ok) >= 2)  # tried, failed, tried again
            (name,) = {r.tape for r in uploads.results}
            tape = await asyncio.to_thread(read_tape, tmp_path / name)
            assert tape.header.call_sid == call_sid and tape.complete  # kept whole on disk
            assert server.runtime.tape_uploads is not None and server.runtime.tape_uploads.backlog == 1
            during = await scrape(server.url)
            assert value(during, "voicebot_tape_upload_backlog") == 1
            assert value(during, "voicebot_tape_uploads_total", kind="tape", outcome="failed") >= 2

            await asyncio.to_thread(s3.start)  # the store is back
            await uploads.until(lambda: any(r.ok for r in uploads.results))
            assert server.runtime.tape_uploads.backlog == 0
        objects = await asyncio.to_thread(s3.objects, bucket)
        assert [key.rsplit("/", 1)[1] for key in objects] == [name]
        assert await asyncio.to_thread(s3.body, bucket, next(iter(objects))) == (tmp_path / name).read_bytes()
        # keep_local: still here, and listed as sent so the next start does not send it again
        assert (tmp_path / UPLOADED_LIST).read_text().split() == [name]
    finally:
        s3.stop()


async def test_tapes_left_by_a_crashed_run_are_uploaded_at_start(tmp_path: Path, s3: MotoS3) -> None:
    bucket = await asyncio.to_thread(s3.new_bucket)
    # What a killed process leaves: a tape cut off mid-call (no end record), and one finished
    # whose upload never happened.
    cut = tmp_path / tape_filename("CAcrashed")
    cut.write_text(dumps_line(encode_header(TapeHeader("CAcrashed"))) + '{"k": "tw", "t": 1.0, "d": "in", "m": "{')
    done = tmp_path / tape_filename("CAfinished")
    done.write_text(
        dumps_line(encode_header(TapeHeader("CAfinished")))
        + json.dumps({"k": "end", "t": 5.0, "outcome": "caller-hangup"})
        + "\n"
    )
    async with running_server(s3_config(tmp_path, s3.url, bucket, "upload_wav = true")) as server:
        uploader = server.runtime.tape_uploads
        assert uploader is not None
        uploads = Uploads(server)  # the leftovers may be sent before it listens: wait on the backlog
        await uploads.until(lambda: uploader.backlog == 0)
    objects = await asyncio.to_thread(s3.objects, bucket)
    names = {key.rsplit("/", 1)[1] for key in objects}
    # the cut tape cannot be rendered as WAV: it is uploaded as it is, alone
    assert names == {cut.name, done.name, done.name.removesuffix(".jsonl") + ".wav"}
    assert await asyncio.to_thread(s3.body, bucket, f"calls/{cut.name[:4]}-{cut.name[4:6]}-{cut.name[6:8]}/{cut.name}")
    assert not cut.exists() and not done.exists()


class HangingEndpoint:
    """A loopback server that accepts connections and never answers (a hung S3 front end)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def hanging() -> Iterator[HangingEndpoint]:
    endpoint = HangingEndpoint()
    try:
        yield endpoint
    finally:
        endpoint.close()


async def test_a_hanging_store_does_not_hold_up_calls(tmp_path: Path, hanging: HangingEndpoint) -> None:
    """The first call's upload is stuck inside the store's request; the next calls are
    answered, echoed and taped all the same, and their tapes wait on disk."""
    async with running_server(s3_config(tmp_path, hanging.url, "tapes-hung")) as server:
        first = await a_call(server, hz=600.0)
        assert await asyncio.to_thread(hanging.accepted.wait, 10)  # the upload is in the hung request
        later = [await a_call(server, hz=hz) for hz in (800.0, 1000.0)]
        for call_sid in later:
            tape = await finished_tape(tmp_path, call_sid)
            assert tape.header.call_sid == call_sid and tape.complete
        assert server.runtime.tape_uploads is not None and server.runtime.tape_uploads.backlog == 3
        assert server.runtime.tape_uploads.counts().get(("tape", "ok"), 0) == 0
    assert await asyncio.to_thread(lambda: list(tmp_path.glob(f"*_{first}.jsonl")))  # never sent: still on disk
