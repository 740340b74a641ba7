"""Pull progress on a terminal: one line per blob, redrawn in place (docker-style).

    a3ed95caeb02: Downloading   1.2 MB / 3.4 MB
    5f70bf18a086: Unpacking
    0bd9a6e3aac1: Already exists

`for_stream(f)` gives a `Progress` when `f` is a TTY and a `Quiet` (which prints nothing)
otherwise, so scripts and logs never see cursor movement. Both are thread-safe: layers are
downloaded in parallel.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Quiet:
    def start(self, key: str, total: int | None, status: str = "Waiting") -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def status(self, key: str, status: str) -> None:
        pass

    def note(self, line: str) -> None:
        pass

    def close(self) -> None:
        pass


class Progress(Quiet):
    """Redraws at most 10 times a second; `close()` leaves the final state on screen."""

    def __init__(self, out: IO[str], interval: float = 0.1) -> None:
        self.out = out
        self.interval = interval
        self._lock = threading.Lock()
        self._rows: dict[str, list] = {}  # key -> [status, done, total]
        self._drawn = 0  # lines currently on screen that we own
        self._last = 0.0

    def start(self, key: str, total: int | None, status: str = "Waiting") -> None:
        with self._lock:
            self._rows[key] = [status, 0, total]
            self._draw(force=True)

    def advance(self, key: str, n: int) -> None:
        with self._lock:
            row = self._rows.setdefault(key, ["Downloading", 0, None])
            row[0] = "Downloading"
            row[1] += n
            self._draw()

    def status(self, key: str, status: str) -> None:
        with self._lock:
            self._rows.setdefault(key, [status, 0, None])[0] = status
            self._draw(force=True)

    def note(self, line: str) -> None:
        with self._lock:
            self._clear()
            self.out.write(line + "\n")
            self._draw(force=True)

    def close(self) -> None:
        with self._lock:
            self._draw(force=True)
            self._drawn = 0

    def _line(self, key: str, row: list) -> str:
        status, done, total = row
        text = f"{key[7:19] if key.startswith('sha256:') else key}: {status}"
        if status == "Downloading":
            text += f" {human(done):>9}" + (f" / {human(total)}" if total else "")
        return text

    def _clear(self) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # up N lines, clear to the end
            self._drawn = 0

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self._clear()
        for key, row in self._rows.items():
            self.out.write(self._line(key, row) + "\x1b[K\n")
        self._drawn = len(self._rows)
        self.out.flush()


def for_stream(out: IO[str] | None = None) -> Quiet:
    out = sys.stderr if out is None else out
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    return Progress(out) if tty else Quiet()
