"""The seam between Nova sessions and the wire: a small project-owned stream interface.

Production streams go through :mod:`s2s.nova_sonic.sdk_stream` (aws-sdk-bedrock-runtime over
awscrt HTTP/2), imported lazily so configs without Nova never load the SDK. The session only
sees :class:`NovaStream`, which is why the same session code runs against the in-memory fake
in unit and full-call tests and against a loopback HTTP/2 fake through the real SDK.

``endpoint_url = "memory://NAME"`` in a provider table selects a factory registered in this
process with :func:`register_stream_factory` instead of the SDK. It is the explicit,
config-level injection point for tests that run the whole server (and for tape replay);
nothing else in production uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from s2s.errors import VoicebotError
from s2s.nova_sonic.config import NovaSonicConfig

MEMORY_SCHEME = "memory://"


class NovaStreamError(VoicebotError):
    """The stream failed. ``code`` is stable for logs and metrics: ``model_timeout`` (the ~8
    min limit), ``throttled``, ``validation``, ``unavailable``, ``internal``, ``model_stream``,
    ``refused`` (HTTP refusal on open), ``credentials``, ``transport``."""

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


class NovaStream(Protocol):
    """One ``InvokeModelWithBidirectionalStream`` call.

    ``open`` returns once the service has accepted the request (response headers seen), so a
    refusal surfaces there and not as a silent drop later. ``receive`` returns the next
    output event, or ``None`` when the stream ended; a session that did not ask for the end
    treats ``None`` as a drop. Service error events raise :class:`NovaStreamError`.
    ``close`` must be bounded by the caller: an old stream whose peer reset it can block."""

    async def open(self, model_id: str, first_events: list[dict[str, Any]]) -> None: ...

    async def send(self, event: dict[str, Any]) -> None: ...

    async def receive(self) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


StreamFactory = Callable[[], NovaStream]

_memory_factories: dict[str, StreamFactory] = {}


def register_stream_factory(name: str, factory: StreamFactory) -> None:
    """Make ``endpoint_url = "memory://NAME"`` open streams from ``factory`` (tests, replay)."""
    _memory_factories[name] = factory


def unregister_stream_factory(name: str) -> None:
    _memory_factories.pop(name, None)


def stream_factory_for(config: NovaSonicConfig) -> StreamFactory:
    """The factory a provider built from ``config`` opens its streams with."""
    url = config.endpoint_url or ""
    if url.startswith(MEMORY_SCHEME):
        name = url.removeprefix(MEMORY_SCHEME)
        factory = _memory_factories.get(name)
        if factory is None:
            raise NovaStreamError("transport", f"no in-process stream factory registered as {name!r}")
        return factory
    from s2s.nova_sonic.sdk_stream import SdkStreamFactory  # lazy: loads the SDK and awscrt

    return SdkStreamFactory(config)
