"""One event log for provider-session tests, instead of a collector per provider test file."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from s2s.events import AudioOut, ProviderEvent
from s2s.provider import ProviderSession


class EventLog:
    """Drains a provider session's ``events()`` in the background, like the bridge's outbound
    task, so tests can wait on what arrived."""

    def __init__(self, session: ProviderSession) -> None:
        self.events: list[ProviderEvent] = []
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._drain(session))

    async def _drain(self, session: ProviderSession) -> None:
        async for event in session.events():
            self.events.append(event)
            self._changed.set()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def audio(self) -> bytes:
        """All bot audio so far, in the session's output format."""
        return b"".join(e.audio for e in self.of(AudioOut))

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> Any:
        """The first event matching ``predicate`` (waiting for it if needed)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no matching event within {timeout}s; got {[type(e).__name__ for e in self.events]}"
                )
            await asyncio.sleep(0.01)

    async def wait(self, kind: type, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """Every event of ``kind`` once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        while len(self.of(kind)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind.__name__} #{count} in {timeout} s; got {self.events[-5:]}")
            await asyncio.sleep(0.01)
        return self.of(kind)

    async def until(self, predicate: Callable[[list[ProviderEvent]], bool], timeout: float = 5.0) -> None:
        """Returns once ``predicate`` holds for the whole log; ``TimeoutError`` after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                self._changed.clear()
                await self._changed.wait()

    async def ended(self, timeout: float = 5.0) -> None:
        """The session's ``events()`` has finished."""
        await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
