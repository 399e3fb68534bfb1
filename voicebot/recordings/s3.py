"""An S3 bucket (AWS, or any S3-compatible service by ``endpoint_url``) as the tape store.

boto3 resolves credentials through its standard chain (environment, shared config and
profile, SSO, container and instance roles); none are ever taken from the config. Its own
retries are kept to a couple of quick ones with bounded connect and read timeouts: the
uploader (:mod:`voicebot.recordings.upload`) owns the patient retry with backoff, so a bucket
that is down or hanging holds an upload thread for seconds, never the call path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

if TYPE_CHECKING:
    from voicebot.config import S3Store

# One multipart stream per upload: the uploader's worker count is the whole parallelism.
SERIAL = TransferConfig(use_threads=False)


class S3TapeStore:
    """Puts tape files into one bucket under one prefix, with the configured encryption and
    storage class. Thread-safe: a boto3 client may be shared by threads."""

    def __init__(self, settings: S3Store) -> None:
        self.settings = settings
        session = boto3.session.Session(profile_name=settings.profile)
        self._client = session.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            config=Config(
                connect_timeout=settings.connect_timeout_s,
                read_timeout=settings.read_timeout_s,
                retries={"mode": "standard", "max_attempts": 2},
            ),
        )
        extra: dict[str, Any] = {"StorageClass": settings.storage_class}
        if settings.server_side_encryption:
            extra["ServerSideEncryption"] = settings.server_side_encryption
        if settings.kms_key_id:
            extra["SSEKMSKeyId"] = settings.kms_key_id
        self._extra = extra

    def key(self, name: str) -> str:
        """``PREFIX + YYYY-MM-DD/ + name`` for a tape name that starts with its UTC time
        (``20260124T221530123Z_CA….jsonl``, voicebot.devtools.tape.recorder.tape_filename),
        so a lifecycle rule or a listing can pick a day; ``PREFIX + name`` otherwise."""
        stamp = name[:8]
        day = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}/" if stamp.isdigit() and name[8:9] == "T" else ""
        return f"{self.settings.prefix}{day}{name}"

    def put(self, path: Path, name: str, content_type: str) -> str:
        """Upload ``path`` as ``name``; returns the key. Raises on any failure (boto3's
        ``ClientError``, ``BotoCoreError``, ``OSError``)."""
        key = self.key(name)
        self._client.upload_file(
            str(path), self.settings.bucket, key, ExtraArgs={**self._extra, "ContentType": content_type}, Config=SERIAL
        )
        return key

    def describe(self) -> str:
        where = f" at {self.settings.endpoint_url}" if self.settings.endpoint_url else ""
        return f"s3://{self.settings.bucket}/{self.settings.prefix}{where}"
