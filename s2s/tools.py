"""Provider-neutral tool declarations.

A tool is declared once here (name, description, JSON-Schema parameters); each provider
module maps it to its own wire shape (OpenAI/Grok flat function tools, Gemini function
declarations, Nova ``toolSpec`` with the schema as a JSON string).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
