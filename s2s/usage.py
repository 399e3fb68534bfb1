"""Running totals of one provider session, for providers that report use per response
(OpenAI Realtime ``response.done``), per message (Gemini ``usageMetadata``) or per turn (a
cascade's parts): each report is added here and the session's cumulative
:class:`~s2s.events.Usage` comes out, the form every consumer expects (a later report of a
session replaces the earlier one)."""

from __future__ import annotations

from s2s.events import Usage


class UsageTally:
    def __init__(self, session_id: str) -> None:
        self.total = Usage(session_id)

    def add(self, **counts: float) -> Usage:
        """Add one report (:class:`~s2s.events.Usage` field name -> amount); the session's
        totals so far."""
        self.total = self.total.added(**counts)
        return self.total
