"""Dependencies run one way: transcoding <- s2s <- telephony <- voicebot.

Every module of the lower layers is parsed and each import it makes, anywhere in the file
(including function bodies and ``if TYPE_CHECKING:`` blocks), must name its own layer, a
lower one, or something outside the project."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("transcoding", "s2s", "telephony", "voicebot")


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports(layer: str, source: str) -> list[tuple[int, str]]:
    higher = LAYERS[LAYERS.index(layer) + 1 :]
    return [(line, module) for line, module in imported_modules(source) if module.split(".")[0] in higher]


def test_the_checker_sees_imports_anywhere_in_a_module() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import s2s.events\n"
        "if TYPE_CHECKING:\n"
        "    from telephony.bridge import CallBridge\n"
        "def f():\n"
        "    import voicebot.config\n"
    )
    assert upward_imports("s2s", source) == [(4, "telephony.bridge"), (6, "voicebot.config")]
    assert upward_imports("telephony", source) == [(6, "voicebot.config")]
    assert upward_imports("transcoding", source) == [(2, "s2s.events"), (4, "telephony.bridge"), (6, "voicebot.config")]


def test_no_module_imports_a_higher_layer() -> None:
    offenders = []
    checked = 0
    for layer in LAYERS[:-1]:
        for path in sorted((ROOT / layer).rglob("*.py")):
            checked += 1
            for line, module in upward_imports(layer, path.read_text()):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert checked > 30  # the layers were found
    assert offenders == []
