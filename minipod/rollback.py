"""An undo stack for multi-step setup: each step registers its undo right after it succeeds."""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger("minipod")


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
                log.warning("rollback: could not undo %s: %s", what, e)

    def __enter__(self) -> "Rollback":
        return self

    def __exit__(self, *exc: object) -> None:
        self.run()
