"""`minipod run --explain`: follow the explain file the pod's processes write (see
minipod/explain.py) and print it as it grows, while the pod is built (and, in the foreground,
for as long as the pod runs: restarts and the teardown are explained too)."""

from __future__ import annotations

import json
import os
import tempfile
import threading


class Follower:
    def __init__(self, fmt: str, out):
        self.fmt, self.out = fmt, out
        fd, self.path = tempfile.mkstemp(prefix="minipod-explain-", suffix=".jsonl")
        os.close(fd)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> "Follower":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        # The supervisor keeps its descriptor: an unlinked file costs nothing once it exits.
        os.unlink(self.path)

    def _follow(self) -> None:
        from minipod import explain

        reader = explain.Reader(self.path)
        try:
            while True:
                stopping = self._stop.wait(0.05)
                for rec in reader.poll():
                    line = json.dumps(rec) if self.fmt == "json" else explain.render(rec)
                    print(line, file=self.out, flush=True)
                if stopping:
                    return
        finally:
            reader.close()
