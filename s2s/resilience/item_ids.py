"""Item ids that stay unique across the sessions of one call.

Sessions opened after the first have their ``item_id``s prefixed ``r<N>:`` so the bridge's
per-item bookkeeping (dropped items, marks) never confuses two sessions that number items the
same way; an id on its way back (``truncate``) is stripped of the prefix, and one of another
session is refused (None), since that session is gone."""

from __future__ import annotations

import dataclasses

from s2s.events import AudioOut, ProviderEvent, SpeechStarted, Transcript, TurnDone


def outward(generation: int, event: ProviderEvent) -> ProviderEvent:
    """The event as the bridge sees it."""
    if generation == 1:
        return event
    if isinstance(event, AudioOut | TurnDone | SpeechStarted | Transcript) and event.item_id is not None:
        return dataclasses.replace(event, item_id=f"r{generation}:{event.item_id}")
    return event


def inward(generation: int, item_id: str) -> str | None:
    """The session's own id for an outward id, or None if it belongs to another session."""
    if generation == 1:
        return None if item_id.startswith("r") and ":" in item_id else item_id
    prefix = f"r{generation}:"
    return item_id[len(prefix) :] if item_id.startswith(prefix) else None
