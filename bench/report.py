"""Plain-text tables for benchmark output: readable in a terminal and valid Markdown to paste."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], text_columns: int = 1) -> str:
    """Pads columns to equal width; the first ``text_columns`` are left-aligned, the rest (figures)
    right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        padded = (v.ljust(w) if i < text_columns else v.rjust(w) for i, (v, w) in pairs)
        return "| " + " | ".join(padded) + " |"

    dashes = ("-" * (w + 2) if i < text_columns else "-" * (w + 1) + ":" for i, w in enumerate(widths))
    rule = "|" + "|".join(dashes) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])
