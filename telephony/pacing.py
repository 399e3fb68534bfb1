"""Paced playout for full-duplex providers: Twilio's buffer holds at most ``lead_ms``.

A half-duplex provider's answer can be sent to Twilio as fast as it arrives, because a
barge-in ``clear`` plus a truncate tells the model exactly what the caller heard. A
full-duplex model (GPT-Live) owns turn-taking and its context is append-only: audio sitting
in Twilio's buffer cannot be taken back from the model, and a deep buffer makes the bot talk
over a caller the model has already yielded to. So its audio is held here and released to
Twilio only while less than ``lead_ms`` is queued there.

"Queued at Twilio" is read from the playout tracker, i.e. from Twilio's own mark echoes
(reference: Twilio Media Streams, *mark* messages): a mark comes back when the audio before
it has played, so releasing a chunk only when ``pending_ms + chunk <= lead_ms`` bounds the
buffer by construction, whatever the load on either side. The lead must cover the round
trip to Twilio (echo in, next chunk out) or the caller hears gaps; ~100-200 ms does.

If Twilio stops echoing marks, the pacer would wait forever; after ``stall_s`` without an
echo it releases a chunk anyway and says so once, so a misbehaving edge degrades to choppy
audio rather than silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from telephony.playout import PlayoutTracker
from transcoding.formats import MULAW_8K

log = logging.getLogger(__name__)

# Chunks released one at a time: 20 ms (one Twilio frame), so a clear at any moment leaves
# the caller at most one chunk beyond the yield.
PACED_CHUNK_MS = 20
DEFAULT_STALL_S = 1.0

SendChunk = Callable[[bytes, str], Awaitable[None]]


class PacedPlayout:
    """Holds bot audio (mu-law 8 kHz) and feeds it to Twilio ``lead_ms`` ahead of the caller.

    ``push`` never blocks (the bridge's outbound task must keep reading provider events, a
    barge-in among them); :meth:`run` is the one task that releases audio through
    ``send_chunk`` (media + mark). The bridge calls :meth:`played` when a mark echoes and
    :meth:`drop` when it clears Twilio's buffer."""

    def __init__(
        self,
        playout: PlayoutTracker,
        send_chunk: SendChunk,
        lead_ms: float,
        *,
        chunk_ms: int = PACED_CHUNK_MS,
        stall_s: float = DEFAULT_STALL_S,
    ) -> None:
        self.playout = playout
        self.send_chunk = send_chunk
        # At least two chunks, or a chunk could only go out once Twilio ran dry.
        self.lead_ms = max(float(lead_ms), 2.0 * chunk_ms)
        self.chunk_ms = chunk_ms
        self.stall_s = stall_s
        self._chunk_bytes = MULAW_8K.nbytes(chunk_ms)
        self._backlog: deque[tuple[bytes, str]] = deque()
        self._audio = asyncio.Event()
        self._echo = asyncio.Event()
        self._stall_reported = False

    @property
    def backlog_ms(self) -> float:
        return sum(MULAW_8K.duration_ms(len(chunk)) for chunk, _ in self._backlog)

    def push(self, mulaw: bytes, item_id: str) -> None:
        for start in range(0, len(mulaw), self._chunk_bytes):
            self._backlog.append((mulaw[start : start + self._chunk_bytes], item_id))
        if self._backlog:
            self._audio.set()

    def drop(self) -> dict[str, float]:
        """Forget the held audio (the caller will never hear it): ms dropped per item."""
        dropped: dict[str, float] = {}
        for chunk, item in self._backlog:
            dropped[item] = dropped.get(item, 0.0) + MULAW_8K.duration_ms(len(chunk))
        self._backlog.clear()
        self._audio.clear()
        self._echo.set()  # Twilio's buffer was cleared too: room for the next answer at once
        return dropped

    def played(self) -> None:
        """A mark echoed: some queued audio has played, so there may be room."""
        self._echo.set()

    async def run(self) -> None:
        while True:
            if not self._backlog:
                self._audio.clear()
                await self._audio.wait()
                continue
            await self._room_for(MULAW_8K.duration_ms(len(self._backlog[0][0])))
            if not self._backlog:
                continue  # dropped while waiting
            chunk, item = self._backlog.popleft()
            await self.send_chunk(chunk, item)

    async def _room_for(self, ms: float) -> None:
        while self.playout.pending_ms + ms > self.lead_ms and self._backlog:
            self._echo.clear()
            try:
                await asyncio.wait_for(self._echo.wait(), self.stall_s)
            except TimeoutError:
                if not self._stall_reported:
                    self._stall_reported = True
                    log.warning(
                        "no mark echo from Twilio for %.1f s with %.0f ms queued; releasing bot audio unpaced",
                        self.stall_s,
                        self.playout.pending_ms,
                    )
                return
