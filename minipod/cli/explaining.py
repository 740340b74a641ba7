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


class Stepper:
    """`minipod run --step`: the CLI's end of stepping.py's pipes. Each stop is printed, then
    we wait for a line on stdin (EOF: go on without waiting) and let the supervisor go."""

    def __init__(self, out, stdin):
        self.out, self.stdin = out, stdin
        self._msg_r, self.msg_w = os.pipe()
        self.go_r, self._go_w = os.pipe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def env(self) -> str:
        return f"{self.msg_w},{self.go_r}"

    def fds(self) -> tuple[int, int]:
        return self.msg_w, self.go_r

    def __enter__(self) -> "Stepper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for fd in (self.msg_w, self.go_r):  # the daemons hold their own copies
            os.close(fd)
        self._thread.join()
        os.close(self._go_w)

    def _serve(self) -> None:
        import select

        from minipod import stepping

        buf = b""
        eof_stdin = False
        with os.fdopen(self._msg_r, "rb", buffering=0) as r:
            while not self._stop.is_set():
                if not select.select([r], [], [], 0.1)[0]:
                    continue
                chunk = r.read(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    print(stepping.render(json.loads(line)), file=self.out, flush=True)
                    if not eof_stdin:
                        eof_stdin = self.stdin.readline() == ""
                    try:
                        os.write(self._go_w, b"\n")
                    except OSError:
                        return
