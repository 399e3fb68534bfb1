"""What the caller has actually heard, from Twilio's mark echoes. Pure; time is passed in.

Every outbound media chunk is followed by a mark. Twilio echoes a mark when all audio
queued before it has played
(https://www.twilio.com/docs/voice/media-streams/websocket-messages#mark-message), so echoed
marks give the heard position with chunk granularity. Between echoes, playback proceeds in
real time, so the position inside the chunk now playing is interpolated from the clock: it
started when the previous mark echoed (or when it was sent, if Twilio's buffer had run dry),
and cannot exceed its length.
After a ``clear``, Twilio echoes every outstanding mark at once; those echoes mean
"discarded", so :meth:`clear` forgets them and their late echoes are ignored as unknown.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class SentChunk:
    mark: str
    item_id: str
    ms: float
    sent_at: float


class PlayoutTracker:
    def __init__(self, on_change: Callable[[], None] | None = None, mark_prefix: str = "m") -> None:
        # Called when playout goes from idle to queued or back, and on a clear: what waiting
        # for "the caller heard it all" (telephony.call_handle) wakes on. Not per chunk.
        self._on_change = on_change
        # Mark names are "<prefix><n>": two trackers on one stream (bot audio, hold audio,
        # telephony.hold) each know only their own echoes.
        self._mark_prefix = mark_prefix
        self._pending: deque[SentChunk] = deque()
        self._heard: dict[str, float] = {}
        self._sent: dict[str, float] = {}
        self._seq = 0
        self._last_echo_at: float | None = None

    @property
    def pending(self) -> bool:
        """Bot audio is queued at Twilio or playing."""
        return bool(self._pending)

    @property
    def pending_ms(self) -> float:
        return sum(c.ms for c in self._pending)

    def pending_items(self) -> list[str]:
        return list(dict.fromkeys(c.item_id for c in self._pending))

    def sent(self, item_id: str, ms: float, now: float) -> str:
        """Record a chunk sent to Twilio; returns the mark name to send after it."""
        self._seq += 1
        name = f"{self._mark_prefix}{self._seq}"
        was_idle = not self._pending
        self._pending.append(SentChunk(name, item_id, ms, now))
        self._sent[item_id] = self._sent.get(item_id, 0.0) + ms
        if was_idle and self._on_change is not None:
            self._on_change()
        return name

    def echoed(self, name: str, now: float) -> bool:
        """Twilio echoed mark ``name``: it and everything before it played. False if unknown."""
        if not any(c.mark == name for c in self._pending):
            return False
        while self._pending:
            chunk = self._pending.popleft()
            self._heard[chunk.item_id] = self._heard.get(chunk.item_id, 0.0) + chunk.ms
            if chunk.mark == name:
                break
        self._last_echo_at = now
        if not self._pending and self._on_change is not None:
            self._on_change()
        return True

    def heard_ms(self, item_id: str, now: float) -> float:
        heard = self._heard.get(item_id, 0.0)
        if self._pending and self._pending[0].item_id == item_id:
            head = self._pending[0]
            started = head.sent_at if self._last_echo_at is None else max(self._last_echo_at, head.sent_at)
            heard += min(max(0.0, (now - started) * 1000.0), head.ms)
        return heard

    def sent_ms(self, item_id: str) -> float:
        return self._sent.get(item_id, 0.0)

    def clear(self) -> list[SentChunk]:
        """Twilio's buffer was cleared: the pending chunks will never play."""
        dropped = list(self._pending)
        self._pending.clear()
        self._last_echo_at = None
        if self._on_change is not None:
            self._on_change()
        return dropped
