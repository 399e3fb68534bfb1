""":class:`~s2s.nova_sonic.transport.NovaStream` over aws-sdk-bedrock-runtime (0.12 API).

boto3/botocore cannot call ``InvokeModelWithBidirectionalStream`` (botocore removes it for
lack of HTTP/2), so the stream uses the experimental AWS SDK for Python v4 with the awscrt
HTTP/2 transport; the SDK's default aiohttp transport raises ``UnsupportedTransportError``
for duplex streams (aws-sdk-bedrock-runtime ``invoke_model_with_bidirectional_stream``).
Credentials still come from boto3's provider chain, which
covers SSO, assume-role and credential_process profiles that the SDK's own chain only
handles with extra packages.

Failure behaviour this module relies on (checked against aws-sdk-bedrock-runtime 0.12 + awscrt):
an HTTP refusal (403/429/503) is raised by ``await_output()``, not by the first ``send``; an
untrusted TLS certificate fails only after ~23 s, so :meth:`SdkNovaStream.open` is bounded by
the session's connect timeout; a reset stream makes ``receive()`` return ``None`` with no
exception; the stream limit arrives as ``ModelTimeoutException`` from ``receive()``; closing a
stream the service already reset can block forever, so callers bound :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import boto3
from aws_sdk_bedrock_runtime import models as m
from aws_sdk_bedrock_runtime.client import AsyncBedrockRuntimeClient
from aws_sdk_bedrock_runtime.config import AsyncBedrockRuntimeConfig
from awscrt.exceptions import AwsCrtError
from smithy_aws_core.identity import AWSCredentialsIdentity, AWSIdentityProperties
from smithy_core.exceptions import CallError, SmithyError, SmithyIdentityError
from smithy_http.aio.crt import AWSCRTHTTPClient

from s2s.nova_sonic.config import NovaSonicConfig
from s2s.nova_sonic.transport import NovaStreamError

log = logging.getLogger(__name__)

OUTPUT_DRAIN_S = 1.0

_ERROR_CODES: tuple[tuple[type[Exception], str, bool], ...] = (
    (m.ModelTimeoutException, "model_timeout", True),
    (m.ThrottlingException, "throttled", True),
    (m.ServiceUnavailableException, "unavailable", True),
    (m.InternalServerException, "internal", True),
    (m.ModelStreamErrorException, "model_stream", True),
    (m.ValidationException, "validation", False),
    (m.AccessDeniedException, "access_denied", False),
    (m.ResourceNotFoundException, "not_found", False),
)


def stream_error(exc: BaseException) -> NovaStreamError:
    """Name an SDK/CRT failure with a stable code; anything unknown is a retryable
    transport error (the recovery layer decides what to do next)."""
    for cls, code, retryable in _ERROR_CODES:
        if isinstance(exc, cls):
            return NovaStreamError(code, str(exc) or cls.__name__, retryable=retryable)
    if isinstance(exc, SmithyIdentityError):
        return NovaStreamError("credentials", str(exc), retryable=False)
    if isinstance(exc, CallError):
        return NovaStreamError("refused", f"{type(exc).__name__}: {exc}")
    return NovaStreamError("transport", f"{type(exc).__name__}: {exc}")


class Boto3CredentialsResolver:
    """An SDK identity resolver backed by boto3's credential chain.

    boto3's ``RefreshableCredentials`` renew themselves (role/SSO sessions); the lookup may
    do blocking I/O (IMDS, STS, a credential process), hence the worker thread."""

    def __init__(self, session: boto3.Session) -> None:
        self._session = session
        self._credentials: Any = None

    def _frozen(self) -> Any:
        if self._credentials is None:
            self._credentials = self._session.get_credentials()
        if self._credentials is None:
            raise NovaStreamError(
                "credentials",
                "no AWS credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
                "the profile key, SSO, or an instance/container role)",
                retryable=False,
            )
        return self._credentials.get_frozen_credentials()

    async def get_identity(self, *, properties: AWSIdentityProperties) -> AWSCredentialsIdentity:
        frozen = await asyncio.to_thread(self._frozen)
        return AWSCredentialsIdentity(
            access_key_id=frozen.access_key, secret_access_key=frozen.secret_key, session_token=frozen.token
        )

    async def invalidate(self) -> None:
        self._credentials = None


class SdkStreamFactory:
    """Opens streams on one shared SDK client per provider (HTTP/2 multiplexes the calls)."""

    def __init__(self, config: NovaSonicConfig) -> None:
        self.config = config
        self._client: AsyncBedrockRuntimeClient | None = None
        self._lock = asyncio.Lock()

    def __call__(self) -> SdkNovaStream:
        return SdkNovaStream(self)

    async def client(self) -> AsyncBedrockRuntimeClient:
        async with self._lock:
            if self._client is None:
                session = boto3.Session(profile_name=self.config.profile)
                region = self.config.region or session.region_name or "us-east-1"
                overrides: dict[str, Any] = {}
                if self.config.endpoint_url:
                    overrides["endpoint_uri"] = self.config.endpoint_url
                sdk_config = await AsyncBedrockRuntimeConfig.resolve(
                    region=region,
                    aws_credentials_identity_resolver=Boto3CredentialsResolver(session),
                    transport=AWSCRTHTTPClient(),
                    **overrides,
                )
                self._client = AsyncBedrockRuntimeClient(config=sdk_config)
            return self._client


class SdkNovaStream:
    def __init__(self, factory: SdkStreamFactory) -> None:
        self._factory = factory
        self._stream: Any = None
        self._receiver: Any = None
        self._output_done = asyncio.Event()

    async def open(self, model_id: str, first_events: list[dict[str, Any]]) -> None:
        try:
            client = await self._factory.client()
            self._stream = await client.invoke_model_with_bidirectional_stream(
                m.InvokeModelWithBidirectionalStreamOperationInput(model_id=model_id)
            )
            for event in first_events:
                await self.send(event)
            # Sends before this succeed even when the service refuses: the refusal (and a TLS
            # failure) only surfaces here.
            _, self._receiver = await self._stream.await_output()
        except NovaStreamError:
            raise
        except (SmithyError, AwsCrtError, OSError) as exc:
            raise stream_error(exc) from exc

    async def send(self, event: dict[str, Any]) -> None:
        chunk = m.InvokeModelWithBidirectionalStreamInputChunk(
            value=m.BidirectionalInputPayloadPart(bytes_=json.dumps(event).encode())
        )
        try:
            await self._stream.input_stream.send(chunk)
        except (SmithyError, AwsCrtError, OSError) as exc:
            raise stream_error(exc) from exc

    async def receive(self) -> dict[str, Any] | None:
        while True:
            try:
                result = await self._receiver.receive()
            except (SmithyError, AwsCrtError, OSError) as exc:
                self._output_done.set()
                raise stream_error(exc) from exc
            if result is None:
                self._output_done.set()
                return None
            if isinstance(result, m.InvokeModelWithBidirectionalStreamOutputChunk):
                payload = result.value.bytes_ or b"{}"
                try:
                    decoded: dict[str, Any] = json.loads(payload)
                except ValueError:
                    # Not fatal: the protocol reports it as a bad event and the call goes on.
                    return {"undecodable": payload[:200].decode("utf-8", "replace")}
                return decoded
            error = getattr(result, "value", None)
            if isinstance(error, Exception):  # a modeled error delivered as a union member
                self._output_done.set()
                raise stream_error(error)
            log.warning("nova: ignoring unknown output stream member %r", result)

    async def close(self) -> None:
        """End our side, give the service a moment to end its own (the session's reader sees
        that end), then release the output. Closing the output while a ``receive()`` is
        pending makes awscrt resolve a cancelled future; callers bound the whole close."""
        if self._stream is None:
            return
        stream, self._stream = self._stream, None
        try:
            await stream.input_stream.close()
            if self._receiver is not None and not self._output_done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._output_done.wait(), timeout=OUTPUT_DRAIN_S)
        finally:
            if self._receiver is not None:
                await self._receiver.close()
