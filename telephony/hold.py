"""Hold audio at the phone edge while the caller waits on a slow tool or agent.

A waiting tool asks for it (:meth:`telephony.call_handle.CallHandle.start_hold`); the bridge
plays it, from its own task, only while the bot is silent (no bot audio queued at Twilio),
and looped from a clip (:mod:`telephony.hold_audio`). It stops the instant something else
must be heard:

- bot audio: queued hold audio is dropped with a ``clear`` before the bot's first chunk goes
  out (Twilio Media Streams *clear* message:
  https://www.twilio.com/docs/voice/media-streams/websocket-messages#send-a-clear-message), and
  the hold resumes once the bot's audio has played if the wait goes on;
- the caller's speech (a barge-in signal): dropped the same way, and not resumed for the rest
  of the wait, since the caller has something to say and the model will answer it;
- the tool's answer: the waiting tool stops it before its result goes to the model.

Hold audio has its own :class:`~telephony.playout.PlayoutTracker` with its own mark names, so
the bot's tracker never sees it: what the caller heard of an answer, barge-in truncation and
"bot audio pending" count bot audio only. Like :class:`~telephony.pacing.PacedPlayout` it is
paced by Twilio's mark echoes, at most ``lead_ms`` ahead of the caller, so stopping drops
little and a clear is all it takes; without echoes it goes on a chunk per ``stall_s``.

One lock orders hold chunks against clears and the bot's first chunk: a hold chunk (media and
its mark) is never split by a clear, and none can slip in between a clear and the bot audio
it makes room for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from telephony.media_stream import StreamFrames
from telephony.observer import ToTwilio
from telephony.playout import PlayoutTracker
from transcoding.formats import MULAW_8K

log = logging.getLogger(__name__)

HOLD_CHUNK_MS = 20  # one Twilio frame per mark: a clear leaves nothing half-heard to account for
HOLD_LEAD_MS = 200.0  # covers the mark round trip on a loaded machine; a clear drops it at once
HOLD_STALL_S = 1.0
HOLD_ITEM = "hold"

SendFrame = Callable[[ToTwilio, str], Awaitable[None]]


class HoldPlayer:
    """Loops ``audio`` (mu-law 8 kHz) to Twilio while a hold is wanted and ``bot_busy()`` is false.

    :meth:`run` is its task. The bridge reports mark echoes (:meth:`echoed`), bot playout going
    idle (:meth:`wake`), caller speech (:meth:`caller_spoke`) and wraps the bot's audio in
    :meth:`bot_speaking`."""

    def __init__(
        self,
        audio: bytes,
        send: SendFrame,
        frames: StreamFrames,
        bot_busy: Callable[[], bool],
        clock: Callable[[], float],
        *,
        lead_ms: float = HOLD_LEAD_MS,
        stall_s: float = HOLD_STALL_S,
    ) -> None:
        if not audio:
            raise ValueError("hold audio is empty")
        self.playout = PlayoutTracker(mark_prefix="h")
        self._chunk_bytes = MULAW_8K.nbytes(HOLD_CHUNK_MS)
        self._audio = audio * -(-self._chunk_bytes // len(audio))  # at least one chunk long
        self._pos = 0  # where in the loop the next chunk starts: a paused hold resumes there
        self._send = send
        self._frames = frames
        self._bot_busy = bot_busy
        self._clock = clock
        self.lead_ms = max(lead_ms, 2.0 * HOLD_CHUNK_MS)
        self.stall_s = stall_s
        self._wanted = 0  # waits that want hold audio now
        self._silenced = False  # the caller spoke during this hold
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stall_reported = False
        self.sent_ms = 0.0  # hold audio sent over the call (dropped audio included)

    @property
    def wanted(self) -> bool:
        """A wait wants hold audio, or some is still queued at Twilio."""
        return self._wanted > 0 or self.playout.pending

    @property
    def sounding(self) -> bool:
        """Hold audio is queued at Twilio or playing."""
        return self.playout.pending

    def start(self) -> None:
        """A wait wants hold audio (heard whenever the bot is silent) until :meth:`stop`."""
        self._wanted += 1
        self._silenced = False
        self._wake.set()

    async def stop(self) -> None:
        """That wait is over; the last one to stop silences the hold at once."""
        self._wanted = max(0, self._wanted - 1)
        if self._wanted == 0:
            await self._drop_queued()

    async def caller_spoke(self) -> None:
        """Silence the hold for the rest of the waits in progress."""
        if self.wanted:
            self._silenced = True
            await self._drop_queued()

    @contextlib.asynccontextmanager
    async def bot_speaking(self) -> AsyncIterator[None]:
        """Around sending bot audio: queued hold audio is cleared first, and no hold chunk goes
        out until the bot's audio has (after which ``bot_busy()`` keeps the hold paused)."""
        async with self._lock:
            await self._clear_locked()
            yield

    def wake(self) -> None:
        """Bot playout went idle: the hold may resume."""
        self._wake.set()

    def echoed(self, name: str, now: float) -> bool:
        """A mark echo: True when it was one of ours."""
        if not self.playout.echoed(name, now):
            return False
        self._wake.set()
        return True

    async def _drop_queued(self) -> None:
        async with self._lock:
            await self._clear_locked()

    async def _clear_locked(self) -> None:
        if self.playout.pending:
            self.playout.clear()  # the echoes Twilio sends for the cleared marks are then unknown
            await self._send(ToTwilio.CLEAR, self._frames.clear)

    def _may_play(self) -> bool:
        return self._wanted > 0 and not self._silenced and not self._bot_busy()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            if not self._may_play():
                await self._wake.wait()
                continue
            if self.playout.pending_ms + HOLD_CHUNK_MS > self.lead_ms and await self._woken_within(self.stall_s):
                continue  # an echo (room) or a change: look again
            async with self._lock:
                if self._may_play():
                    await self._send_chunk()

    async def _woken_within(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()
        except TimeoutError:
            if not self._stall_reported:
                self._stall_reported = True
                log.warning("no mark echo from Twilio for %.1f s during hold audio; sending it unpaced", timeout_s)
            return False
        return True

    async def _send_chunk(self) -> None:
        n = self._chunk_bytes
        chunk = self._audio[self._pos : self._pos + n]
        if len(chunk) < n:  # round the end of the loop
            chunk += self._audio[: n - len(chunk)]
        self._pos = (self._pos + n) % len(self._audio)
        ms = MULAW_8K.duration_ms(n)
        mark = self.playout.sent(HOLD_ITEM, ms, self._clock())
        self.sent_ms += ms
        await self._send(ToTwilio.HOLD, self._frames.media(chunk))
        await self._send(ToTwilio.MARK, self._frames.mark(mark))
