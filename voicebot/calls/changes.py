"""A wake-up for code that waits for the calls on this instance to reach some state (the
drain: no call left, no stream still to come, every apology fetched), instead of polling.

The runtime calls :meth:`CallChanges.notify` wherever that state can move: a call ends, a
plan leaves the handoff (its stream came, or it expired or was withdrawn), Twilio fetches a
call's next TwiML. A waiter re-checks its condition on each wake-up; one that sleeps past a
change it was not told about would only wait until its own deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CallChanges:
    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()

    async def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """True once ``done()`` holds, False if it still does not after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._changed.clear()  # no await since done() was checked: no change is lost
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return done()
        return True
