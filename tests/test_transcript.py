from __future__ import annotations

from s2s.events import Transcript
from s2s.provider import Turn
from telephony.transcript import CallTranscript, heard_text


def test_heard_text_keeps_the_heard_fraction_of_words() -> None:
    text = "one two three four five six seven eight nine ten"
    assert heard_text(text, 1.0) == text
    assert heard_text(text, 0.3) == "one two three …"
    assert heard_text(text, 0.0) == ""


def test_bot_turn_is_cut_to_what_the_caller_heard_whichever_comes_first() -> None:
    turns: list[Turn] = []
    t = CallTranscript(turns)
    t.add(Transcript("caller", "hi there"))
    t.add(Transcript("bot", "a b c d e f g h i j", item_id="x"))
    t.interrupted("x", heard_ms=500, sent_ms=1000)
    t.interrupted("y", heard_ms=0, sent_ms=800)
    t.add(Transcript("bot", "never heard at all", item_id="y"))
    t.add(Transcript("bot", "partial", final=False, item_id="z"))
    assert turns == [Turn("caller", "hi there"), Turn("bot", "a b c d e …")]
