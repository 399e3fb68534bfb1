"""Keypad digits, buffered into one sequence before anyone sees them.

Twilio sends one ``dtmf`` message per key
(https://www.twilio.com/docs/voice/media-streams/websocket-messages#dtmf-message). Handing
each to the model as its own user turn makes it answer after the first digit of an account number; so digits are
collected until the caller stops typing for ``inter_digit_timeout_ms``, presses the finish
key (``#`` by default), or reaches ``max_digits``, and the sequence is delivered once.

A route whose keypad collects secrets (``[routes.dtmf] sensitive = true``: card numbers,
PINs) keeps the digits from the model and from everything that records the call: the model
and the transcript get only how many digits were typed, the digits themselves are kept for
the call's tools (``keep``), and tapes mask them (voicebot.devtools.tape.format).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from s2s.call_context import logged_text
from voicebot.agent.config import DtmfSettings

log = logging.getLogger(__name__)


def keypad_text(digits: str, finished_with: str | None) -> str:
    """How a finished sequence is put to the model (as a caller-side text turn)."""
    if not digits and finished_with:
        return f"The caller pressed {finished_with} on the phone keypad."
    suffix = f", then {finished_with}" if finished_with else ""
    return f"The caller entered {digits}{suffix} on the phone keypad."


def secret_keypad_text(digits: str, finished_with: str | None) -> str:
    """A finished sequence of a sensitive keypad, as the model and the transcript get it."""
    if not digits:
        return keypad_text(digits, finished_with)
    suffix = f", then {finished_with}" if finished_with else ""
    count = f"{len(digits)} digit{'s' if len(digits) != 1 else ''}"
    return (
        f"The caller entered {count}{suffix} on the phone keypad. The digits are kept from you; "
        "your tools receive them."
    )


class DigitCollector:
    """One call's keypad buffer. ``press`` never blocks the inbound audio path: delivery runs
    as its own task, from the inter-digit timer or from a finish key."""

    def __init__(
        self,
        settings: DtmfSettings,
        deliver: Callable[[str], Awaitable[None]],
        call_sid: str = "",
        keep: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.deliver = deliver
        self.call_sid = call_sid
        self.keep = keep  # a sensitive keypad's digits go here, not to ``deliver``
        self._digits: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def buffered(self) -> str:
        return "".join(self._digits)

    def press(self, digit: str) -> None:
        if self.settings.finish_on and digit == self.settings.finish_on:
            self._flush(finished_with=digit)
            return
        self._digits.append(digit)
        if len(self._digits) >= self.settings.max_digits:
            self._flush()
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = self.settings.inter_digit_timeout_ms / 1000.0
        self._timer = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self, finished_with: str | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        digits = "".join(self._digits)
        self._digits.clear()
        if not digits and not finished_with:
            return
        if self.settings.sensitive:
            if digits and self.keep is not None:
                self.keep(digits)
            text = secret_keypad_text(digits, finished_with)
        else:
            text = keypad_text(digits, finished_with)
        task = asyncio.ensure_future(self._deliver(text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, text: str) -> None:
        try:
            await self.deliver(text)
        except Exception:
            log.exception(
                "call %s: keypad input %r could not be delivered; it is dropped", self.call_sid, logged_text(text)
            )

    def close(self) -> None:
        """The call ended: digits still buffered are dropped with it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._digits:
            shown = f"{len(self._digits)} key(s)" if self.settings.sensitive else logged_text(self.buffered)
            log.info("call %s: dropped unfinished keypad input %r at hang-up", self.call_sid, shown)
            self._digits.clear()
        for task in self._tasks:
            task.cancel()

    async def drain(self) -> None:
        """Wait for deliveries in flight (tests and orderly shutdown)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
