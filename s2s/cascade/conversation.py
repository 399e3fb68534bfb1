"""Pure pieces of a cascade turn: sentences out of a text stream, and what the caller heard.

Answers are spoken sentence by sentence, so the first audio comes as soon as the model has
written one sentence. Each sentence's audio length is known once text-to-speech has spoken
it: that is the timing "what the caller heard" is cut with. A barge-in at ``heard_ms`` keeps
every sentence that had finished playing and, of the sentence playing, the words whose time
had passed (words spread evenly over that sentence's audio), so the model's history holds the
words the caller actually heard, not the answer it planned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from s2s.cascade.parts import Message
from s2s.provider import Turn

CUT_OFF_MARK = " …"
"""Appended to an answer the caller talked over, so the model sees it was cut off."""

# A sentence ends at . ! ? … (plus closing quotes/brackets) followed by white space, or at a
# line break. A decimal point ("3.5") or an initial without a following space does not end one.
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+|\n+")
# Until a speaking rate has been measured on this call: ~170 words a minute.
DEFAULT_MS_PER_WORD = 350.0


class SentenceSplitter:
    """Feed streamed text; get back each sentence as soon as it is complete."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        sentences: list[str] = []
        start = 0
        for match in _SENTENCE_END.finditer(self._buffer):
            sentence = self._buffer[start : match.end()].strip()
            if sentence:
                sentences.append(sentence)
            start = match.end()
        self._buffer = self._buffer[start:]
        return sentences

    def flush(self) -> str | None:
        """What is left when the stream ends (an answer without final punctuation)."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None


@dataclass(slots=True)
class SpokenSentence:
    text: str
    start_ms: float
    duration_ms: float
    complete: bool  # False: synthesis was stopped part way (barge-in)


@dataclass(slots=True)
class SpokenAnswer:
    """The sentences of one bot item whose audio went out, with their place in time."""

    item_id: str
    sentences: list[SpokenSentence] = field(default_factory=list)
    _speaking: str | None = None  # the sentence being synthesised
    _speaking_ms: float = 0.0  # its audio so far

    @property
    def duration_ms(self) -> float:
        return sum(s.duration_ms for s in self.sentences)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    def spoken(self, text: str, duration_ms: float, *, complete: bool = True) -> None:
        self.sentences.append(SpokenSentence(text, self.duration_ms, duration_ms, complete))

    def begin(self, sentence: str) -> None:
        self._speaking, self._speaking_ms = sentence, 0.0

    def played(self, ms: float) -> None:
        """``ms`` more audio of the sentence being synthesised went out."""
        self._speaking_ms += ms

    def finished(self) -> None:
        """The sentence being synthesised is complete."""
        if self._speaking is not None and self._speaking_ms > 0:
            self.spoken(self._speaking, self._speaking_ms)
        self._speaking = None

    def stopped(self) -> None:
        """Synthesis was stopped part way: keep the part of the sentence that went out."""
        if self._speaking is not None and self._speaking_ms > 0:
            self.spoken(self._speaking, self._speaking_ms, complete=False)
        self._speaking = None

    def ms_per_word(self) -> float | None:
        words = sum(len(s.text.split()) for s in self.sentences if s.complete)
        ms = sum(s.duration_ms for s in self.sentences if s.complete)
        return ms / words if words else None

    def heard_text(self, heard_ms: float, ms_per_word: float | None = None) -> str:
        """The words played in the first ``heard_ms``, marked as cut off if any were not.
        Words are spread evenly over their sentence's audio; one counts once most of it played.

        A sentence whose synthesis was stopped has no full length to spread its words over;
        its words are timed at ``ms_per_word`` (this answer's or the call's measured rate)."""
        kept: list[str] = []
        for sentence in self.sentences:
            words = sentence.text.split()
            into = heard_ms - sentence.start_ms
            if sentence.complete and into >= sentence.duration_ms:
                kept.extend(words)
                continue
            # A word counts as heard once most of it has played.
            if sentence.complete:
                played = round(len(words) * max(0.0, into) / sentence.duration_ms) if sentence.duration_ms else 0
            else:
                rate = ms_per_word or self.ms_per_word() or DEFAULT_MS_PER_WORD
                played = min(len(words), round(max(0.0, into) / rate))
            kept.extend(words[:played])
            return " ".join(kept) + CUT_OFF_MARK if kept else ""
        return " ".join(kept)


def history_messages(history: tuple[Turn, ...]) -> list[Message]:
    """The conversation so far (recovery, renewal, fallback from another provider) as chat
    messages: the caller's words as user turns, the bot's as assistant turns."""
    return [Message("user" if turn.role == "caller" else "assistant", turn.text) for turn in history if turn.text]
