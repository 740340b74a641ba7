"""Timestamps for finding where `run` spends its time: MINIPOD_TRACE=FILE appends one line per
mark (epoch seconds, PID, label); unset, a mark costs one attribute lookup. bench/ uses it."""

from __future__ import annotations

import os
import time

PATH = os.environ.get("MINIPOD_TRACE", "")


def mark(label: str) -> None:
    if PATH:
        with open(PATH, "a") as f:
            f.write(f"{time.time():.6f} {os.getpid()} {label}\n")
