"""Counting and logging the malformed Media Streams frames of one connection, rate-limited.

A peer can send garbage as fast as the socket carries it. Logged line by line, 200,000 bad
frames were 33 MB of log and seconds of event-loop time that every other call waited
through. So each connection logs its first few bad frames with what was wrong (enough to
debug a real Twilio change), counts the rest silently, logs one summary when it ends, and is
ended itself once it reaches :data:`MAX_BAD_FRAMES`: before ``start`` (a connection that
only holds an upgrade signature) as after it (a live call).
"""

from __future__ import annotations

import logging

from telephony.media_stream import ProtocolError

log = logging.getLogger(__name__)

# A stream that keeps sending garbage is ended rather than parsed forever.
MAX_BAD_FRAMES = 50
# Bad frames of one connection logged in full; the rest are only in the summary.
LOGGED_IN_FULL = 3


class BadFrames:
    """The bad-frame tally of one connection; ``where`` names it in log lines ("call CA...")."""

    def __init__(self, where: str, limit: int = MAX_BAD_FRAMES, logged: int = LOGGED_IN_FULL) -> None:
        self.where = where
        self.limit = limit
        self.logged = logged
        self.count = 0

    def note(self, error: ProtocolError) -> bool:
        """Count one bad frame (logging it if it is among the first few); True once the
        connection has sent ``limit`` of them and should be ended."""
        self.count += 1
        if self.count <= self.logged:
            more = " (further ones are counted, not logged)" if self.count == self.logged else ""
            log.warning("%s: ignored a bad Media Streams frame: %s%s", self.where, error, more)
        if self.count == self.limit:
            log.error("%s: %d bad Media Streams frames; ending the stream", self.where, self.count)
        return self.count >= self.limit

    def report(self) -> None:
        """The summary line, when some bad frames were not logged one by one."""
        if self.logged < self.count < self.limit:
            log.warning("%s: %d bad Media Streams frames in all on this stream", self.where, self.count)
