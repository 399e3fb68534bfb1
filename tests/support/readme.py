"""The README's fenced blocks, for the tests that run them as written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
README = ROOT / "README.md"
COMMAND_LANGUAGES = ("sh", "bash", "shell", "console")


@dataclass(frozen=True, slots=True)
class Block:
    language: str
    text: str
    line: int
    """line of README.md where the block's text starts"""

    @property
    def commands(self) -> list[str]:
        """The command lines, without comments."""
        lines = (line.split(" #")[0].strip() for line in self.text.splitlines())
        return [line for line in lines if line and not line.startswith("#")]


def blocks(languages: tuple[str, ...] = COMMAND_LANGUAGES) -> list[Block]:
    text = README.read_text()
    found = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if match.group(1) in languages:
            found.append(Block(match.group(1), match.group(2), text.count("\n", 0, match.start(2)) + 1))
    return found
