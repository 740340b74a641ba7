"""Container logs in the kubelet's CRI format, one file per container instance.

    <data_dir>/logs/<container>/<restartCount>.log
    2026-11-22T21:40:00.123456789Z stdout F hello world
The tag is F for a full line and P for a partial one (a line longer than the buffer, or output
cut by the container's exit without a newline), as containerd writes them. Keeping the previous
instance's file is what `logs --previous` reads.
"""

from __future__ import annotations

import os
import time

MAX_LINE = 16 * 1024


def timestamp(t: float | None = None) -> str:
    t = time.time() if t is None else t
    ns = int((t % 1) * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ns:09d}Z"


def path(log_dir: str, instance: int) -> str:
    return os.path.join(log_dir, f"{instance}.log")


class Writer:
    """Turns the bytes of one container's stdout and stderr into CRI log lines."""

    def __init__(self, log_dir: str, instance: int, echo=None):
        os.makedirs(log_dir, exist_ok=True)
        self.file = open(path(log_dir, instance), "ab", buffering=0)
        self.pending = {"stdout": b"", "stderr": b""}
        self.echo = echo  # callable(stream, bytes line) for `run` in the foreground
        # Keep this instance and the previous one (for --previous), like the kubelet.
        for name in os.listdir(log_dir):
            stem = name.removesuffix(".log")
            if stem.isdigit() and int(stem) < instance - 1:
                os.unlink(os.path.join(log_dir, name))

    def feed(self, stream: str, data: bytes) -> None:
        buf = self.pending[stream] + data
        *lines, rest = buf.split(b"\n")
        out = [self._line(stream, b"F", ln) for ln in lines]
        while len(rest) > MAX_LINE:
            out.append(self._line(stream, b"P", rest[:MAX_LINE]))
            rest = rest[MAX_LINE:]
        self.pending[stream] = rest
        if out:
            self.file.write(b"".join(out))

    def flush(self, stream: str) -> None:
        """End of stream: a last line without newline is written as a partial line."""
        if self.pending[stream]:
            self.file.write(self._line(stream, b"P", self.pending[stream]))
            self.pending[stream] = b""

    def _line(self, stream: str, tag: bytes, text: bytes) -> bytes:
        if self.echo:
            self.echo(stream, text)
        return timestamp().encode() + b" " + stream.encode() + b" " + tag + b" " + text + b"\n"

    def close(self) -> None:
        for s in self.pending:
            self.flush(s)
        self.file.close()


def parse(line: bytes) -> tuple[str, str, bool, bytes] | None:
    """(timestamp, stream, full, message) of one CRI log line."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    msg = parts[3] if len(parts) == 4 else b""
    return parts[0].decode(), parts[1].decode(), parts[2] == b"F", msg


def render(line: bytes, timestamps: bool = False) -> bytes:
    p = parse(line)
    if p is None:
        return b""
    ts, _, full, msg = p
    return (ts.encode() + b" " if timestamps else b"") + msg + (b"\n" if full else b"")


def read(file: str, tail: int = -1, timestamps: bool = False) -> bytes:
    try:
        with open(file, "rb") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return b""
    if tail >= 0:
        lines = lines[-tail:] if tail else []
    return b"".join(render(ln, timestamps) for ln in lines)


def follow(log_dir: str, instance_of, alive, out, tail: int = -1, timestamps: bool = False,
           poll: float = 0.1) -> None:
    """Print an instance's log and keep printing as it grows, moving on to the next instance
    after a restart, until alive() is false and everything was read (kubectl logs -f)."""
    inst = instance_of()
    out.write(read(path(log_dir, inst), tail, timestamps))
    out.flush()
    f = None
    pos = os.path.getsize(path(log_dir, inst)) if os.path.exists(path(log_dir, inst)) else 0
    buf = b""
    while True:
        if f is None:
            try:
                f = open(path(log_dir, inst), "rb")
                f.seek(pos)
            except FileNotFoundError:
                f = None
        chunk = f.read() if f else b""
        if chunk:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            out.write(b"".join(render(ln + b"\n", timestamps) for ln in lines))
            out.flush()
            continue
        now_inst = instance_of()
        if now_inst != inst:
            inst, pos, buf = now_inst, 0, b""
            if f:
                f.close()
            f = None
            continue
        if not alive():
            return
        time.sleep(poll)
