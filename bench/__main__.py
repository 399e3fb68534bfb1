"""``python -m bench`` runs every benchmark; ``python -m bench transcoding`` runs just that one.

Each benchmark is a module ``bench/<name>.py`` with ``main(argv: list[str]) -> int``; list it in
``BENCHMARKS`` (in the order ``python -m bench`` runs them). Arguments after the name go to it."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("transcoding", "gemini_path", "nova_path", "cascade_path", "vad", "load")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: python -m bench [{'|'.join(BENCHMARKS)}] [benchmark options]")
        return 0
    if argv and argv[0] not in BENCHMARKS:
        print(f"unknown benchmark {argv[0]!r}; available: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    selected, options = ([argv[0]], argv[1:]) if argv else (list(BENCHMARKS), [])
    status = 0
    for name in selected:
        status = importlib.import_module(f"bench.{name}").main(options) or status
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
