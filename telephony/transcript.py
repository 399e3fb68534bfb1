"""The call's transcript as the caller experienced it.

Providers send the bot's transcript as fast as its audio, so by the time the caller talks
over an answer, its full text is usually already here. What the caller heard is shorter;
this keeps the heard part (by the fraction of the item's audio that played: words are
spoken at a roughly even rate), so renewal, recovery and external agents see the
conversation the caller had, not the one the model planned."""

from __future__ import annotations

from s2s.events import Transcript
from s2s.provider import Turn

INTERRUPTED_SUFFIX = " …"


def heard_text(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text``'s words, marked as cut off; "" if none were heard."""
    words = text.split()
    keep = round(len(words) * max(0.0, fraction))
    if keep >= len(words):
        return text
    return " ".join(words[:keep]) + INTERRUPTED_SUFFIX if keep else ""


class CallTranscript:
    def __init__(self, turns: list[Turn]) -> None:
        self.turns = turns
        self._bot_turns: dict[str, int] = {}
        self._heard_fraction: dict[str, float] = {}

    def add(self, event: Transcript) -> None:
        text = event.text.strip()
        if not event.final or not text:
            return
        if event.role == "bot" and event.item_id is not None:
            if event.item_id in self._heard_fraction:
                text = heard_text(text, self._heard_fraction[event.item_id])
                if not text:
                    return
            self._bot_turns[event.item_id] = len(self.turns)
        self.turns.append(Turn(event.role, text))

    def add_turn(self, turn: Turn) -> None:
        """A turn no provider transcribes (keypad input, as text)."""
        self.turns.append(turn)

    def interrupted(self, item_id: str, heard_ms: float, sent_ms: float) -> None:
        """The caller heard ``heard_ms`` of the ``sent_ms`` of bot item ``item_id``."""
        fraction = heard_ms / sent_ms if sent_ms > 0 else 0.0
        self._heard_fraction[item_id] = fraction
        index = self._bot_turns.get(item_id)
        if index is None:
            return
        text = heard_text(self.turns[index].text, fraction)
        if text:
            self.turns[index] = Turn("bot", text)
        else:
            del self.turns[index]
            self._bot_turns = {k: (i - 1 if i > index else i) for k, i in self._bot_turns.items() if k != item_id}
