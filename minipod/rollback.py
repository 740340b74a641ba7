"""An undo stack for multi-step setup: each step registers its undo right after it succeeds.

Warnings go straight to stderr (the supervisor's log, or the terminal of `run` in the
foreground), not through `logging`: its import is ~1.4 MB RSS in every pod's supervisor.
"""

from __future__ import annotations

import sys
from typing import Callable


class Rollback:
    """Undo a multi-step setup newest-first unless committed.

    Undo errors are logged and never hide the original error: the exception that made us roll
    back is what the user needs to see.
    """

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, undo: Callable[[], object]) -> None:
        self._undo.append((what, undo))

    def commit(self) -> None:
        self._undo.clear()

    def run(self) -> None:
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as e:  # noqa: BLE001 - see class docstring
                print(f"minipod: rollback: could not undo {what}: {e}", file=sys.stderr)

    def __enter__(self) -> "Rollback":
        return self

    def __exit__(self, *exc: object) -> None:
        self.run()
