"""Masking personal data in what a call's words leave behind (logs, traces, tapes, memory).

A route names what to mask (``redact = ["card", "phone", "digits", "email"]``) and may add its
own patterns (``redact_patterns = { member = "M-[0-9]{6}" }``). The :class:`Redactor` is
built once per route when the config is loaded (patterns compiled then) and is a pure
``str -> str`` function: each match becomes ``[card]``, ``[phone]``, ``[digits]``,
``[email]`` or ``[<pattern name>]``.

Numbers are found the way a speech transcript writes them: numerals in groups
(``4111 1111 1111 1111``, ``+44 7700 900123``, ``(555) 123-4567``) and spoken digit words
(``four one one one``, ``oh`` for zero), joined by spaces, hyphens or brackets, into one
*run*. A run is then judged by its digits:

- ``card``: 13 to 19 consecutive digits inside the run that pass the Luhn check (the check
  digit every payment card carries), so an order number of the same length is left alone
  unless it happens to pass too (about one in ten do);
- ``phone``: what is left of a run with 7 or more digits (it errs towards masking: any long
  number is treated as a phone number);
- ``digits``: what is left with 4 or more digits (account numbers, PINs, dates and prices
  written as digits alike).

Order: emails first (an address may hold digits), then the route's own patterns, then
numbers. Digits glued to letters (``CA1234…``, ``A12B``) are identifiers, not numbers, and are
left alone (a route's pattern can take them). Words such as "double four" or an email spelled
out ("jo at example dot com") are not recognised. Custom patterns run on every transcript turn: keep them linear (no
nested repetition), since Python's ``re`` has no time limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

RedactKind = Literal["card", "phone", "digits", "email"]
REDACT_KINDS: tuple[RedactKind, ...] = ("card", "phone", "digits", "email")

_DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
# A numeral glued to letters is part of an identifier (a CallSid "CA1234…", "A12B"), not a
# number someone said: it is left to the route's own patterns.
_TOKEN = r"(?:(?<![A-Za-z0-9])\d+(?![A-Za-z0-9])|\b(?:" + "|".join(_DIGIT_WORDS) + r")\b)"
# Each repetition needs a separator before its token, so a run is matched in linear time.
_RUN = re.compile(rf"(?:\+\s?|\(\s?)?{_TOKEN}(?:[\s()\-\u2013]{{1,3}}{_TOKEN})*", re.IGNORECASE)
_TOKENS = re.compile(_TOKEN, re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PATTERN_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

CARD_DIGITS = (13, 19)
PHONE_MIN_DIGITS = 7
DIGITS_MIN = 4


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of ISO/IEC 7812 card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def compile_pattern(name: str, pattern: str) -> re.Pattern[str]:
    """A route's own pattern, checked as the config is loaded (ValueError says what is wrong)."""
    if not PATTERN_NAME.match(name):
        raise ValueError(f"pattern name {name!r}: lowercase letters, digits, '_' or '-', starting with a letter")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{name}: not a valid regular expression ({exc})") from None
    if compiled.fullmatch("") is not None:
        raise ValueError(f"{name}: the pattern matches empty text, so it would mask nothing but mark everywhere")
    return compiled


class Redactor:
    """A route's masking, as one function over text. ``Redactor(())`` masks nothing."""

    def __init__(self, kinds: Iterable[RedactKind] = (), patterns: Mapping[str, str] | None = None) -> None:
        self.kinds = tuple(k for k in REDACT_KINDS if k in set(kinds))
        self.patterns = tuple((name, compile_pattern(name, p)) for name, p in (patterns or {}).items())
        self._numbers = any(k in self.kinds for k in ("card", "phone", "digits"))

    def __bool__(self) -> bool:
        return bool(self.kinds or self.patterns)

    def __repr__(self) -> str:
        return f"Redactor({list(self.kinds)}, {[name for name, _ in self.patterns]})"

    @property
    def names(self) -> tuple[str, ...]:
        """What this redactor masks (for a tape header): kinds, then pattern names."""
        return (*self.kinds, *(name for name, _ in self.patterns))

    def __call__(self, text: str) -> str:
        if not self or not text:
            return text
        if "email" in self.kinds and "@" in text:
            text = _EMAIL.sub("[email]", text)
        for name, pattern in self.patterns:
            text = pattern.sub(f"[{name}]", text)
        if self._numbers:
            text = _RUN.sub(self._number_run, text)
        return text

    def _number_run(self, match: re.Match[str]) -> str:
        run = match.group(0)
        tokens = [(m.start(), m.end(), _DIGIT_WORDS.get(m.group(0).lower(), m.group(0))) for m in _TOKENS.finditer(run)]
        if sum(len(t[2]) for t in tokens) < DIGITS_MIN:
            return run
        out: list[str] = []
        pos = 0  # where the text not yet copied to ``out`` starts
        i = 0
        pending: list[tuple[int, int, str]] = []  # tokens not in a card, judged as one group
        while i < len(tokens):
            card_end = self._card_at(tokens, i) if "card" in self.kinds else None
            if card_end is None:
                pending.append(tokens[i])
                i += 1
                continue
            pos = self._flush(run, pending, pos, out)
            out.append(run[pos : tokens[i][0]])
            out.append("[card]")
            pos = tokens[card_end][1]
            i = card_end + 1
        pos = self._flush(run, pending, pos, out)
        out.append(run[pos:])
        return "".join(out)

    @staticmethod
    def _card_at(tokens: list[tuple[int, int, str]], start: int) -> int | None:
        """The index of the last token of a Luhn-valid card number starting at ``start``."""
        digits = ""
        for j in range(start, len(tokens)):
            digits += tokens[j][2]
            if len(digits) > CARD_DIGITS[1]:
                return None
            if len(digits) >= CARD_DIGITS[0] and luhn_ok(digits):
                return j
        return None

    def _flush(self, run: str, group: list[tuple[int, int, str]], pos: int, out: list[str]) -> int:
        """Mask ``group`` (consecutive tokens outside card numbers) as a phone number or
        digits when it is long enough; returns where the uncopied text now starts."""
        if not group:
            return pos
        count = sum(len(t[2]) for t in group)
        mark = None
        if "phone" in self.kinds and count >= PHONE_MIN_DIGITS:
            mark = "[phone]"
        elif "digits" in self.kinds and count >= DIGITS_MIN:
            mark = "[digits]"
        start, end = group[0][0], group[-1][1]
        if mark is not None:
            # a leading "+" or "(" belongs to the number it starts
            if pos == 0 and not run[:start].strip(" +("):
                start = 0
            out.append(run[pos:start])
            out.append(mark)
            pos = end
        group.clear()
        return pos


NO_REDACTION = Redactor()


def redact_json(value: Any, redact: Redactor) -> Any:
    """``value`` (tool arguments, a decoded JSON document) with every string and number
    masked; a number that had something masked becomes the masked string."""
    if not redact:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        masked = redact(str(value))
        return value if masked == str(value) else masked
    if isinstance(value, dict):
        return {k: redact_json(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(v, redact) for v in value]
    return value
