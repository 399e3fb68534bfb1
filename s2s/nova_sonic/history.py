"""Shape a call's transcript into the history Nova accepts when a stream is (re)opened.

Nova's rules (AWS, https://docs.aws.amazon.com/nova/latest/nova2-userguide/sonic-chat-history.html):
history is sent once,
after the system prompt and before the audio content; roles are USER/ASSISTANT; the first
message must be USER; each ``textInput`` holds at most 1 KB and the whole history at most
40 KB. Same-role runs are merged (a turn split by a renewal or a barge-in is one message to the
model), and when the transcript is too long the *oldest* messages go: recent context is what
keeps the conversation coherent after a renewal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from s2s.provider import Turn

NovaRole = Literal["USER", "ASSISTANT"]

MAX_TEXT_INPUT_BYTES = 1024
MAX_HISTORY_BYTES = 40 * 1024


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    role: NovaRole
    chunks: tuple[str, ...]
    """The message text split into ``textInput`` payloads of at most 1 KB (UTF-8)."""

    @property
    def nbytes(self) -> int:
        return sum(len(c.encode()) for c in self.chunks)


def shape_history(turns: Iterable[Turn]) -> list[HistoryMessage]:
    merged: list[tuple[NovaRole, str]] = []
    for turn in turns:
        text = turn.text.strip()
        if not text:
            continue
        role: NovaRole = "USER" if turn.role == "caller" else "ASSISTANT"
        if merged and merged[-1][0] == role:
            merged[-1] = (role, f"{merged[-1][1]} {text}")
        else:
            merged.append((role, text))
    messages = [HistoryMessage(role, tuple(split_utf8(text, MAX_TEXT_INPUT_BYTES))) for role, text in merged]
    total = sum(m.nbytes for m in messages)
    while messages and (total > MAX_HISTORY_BYTES or messages[0].role != "USER"):
        total -= messages.pop(0).nbytes
    return messages


def split_utf8(text: str, limit: int) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` UTF-8 bytes, never inside a character,
    preferring to break after a space so words stay whole."""
    pieces: list[str] = []
    data = text.encode()
    while len(data) > limit:
        cut = limit
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # continuation byte: back up to a boundary
            cut -= 1
        space = data.rfind(b" ", 0, cut)
        if space > limit // 2:
            cut = space + 1
        pieces.append(data[:cut].decode())
        data = data[cut:]
    if data:
        pieces.append(data.decode())
    return pieces
