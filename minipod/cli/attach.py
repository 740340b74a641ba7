"""`minipod attach`: the running container's own stdio, as `kubectl attach` gives it, through
the socket its pod's supervisor serves (the protocol: kubelet/attachproto.py).

kubectl's rules: a container with a tty is attached with one (its output has one stream);
`-t` on a container without one is an error message, then attach goes on without; the terminal
is raw only with `-i -t` and a terminal on stdin. As with docker and podman, Ctrl-P Ctrl-Q
detaches from a raw terminal (the container goes on running); the exit code is the
container's when it exits while attached, 0 after a detach.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import sys
import termios
import tty as ttymod

from minipod.errors import Conflict
from minipod.kubelet import attachproto as ap

DETACH_KEYS = b"\x10\x11"  # Ctrl-P Ctrl-Q


def split_detach(held: bytes, data: bytes, keys: bytes = DETACH_KEYS) -> tuple[bytes, bytes, bool]:
    """Scan typed bytes for the detach keys: (bytes to send now, bytes held back because they
    may begin the keys, whether the keys were typed). A held Ctrl-P that is not followed by
    Ctrl-Q is sent with what follows, as docker does."""
    buf = held + data
    i = buf.find(keys)
    if i >= 0:
        return buf[:i], b"", True
    for n in range(min(len(keys) - 1, len(buf)), 0, -1):
        if buf.endswith(keys[:n]):
            return buf[:-n], buf[-n:], False
    return buf, b"", False


def run(rec, container: str | None, stdin: bool, tty: bool, quiet: bool) -> int:
    spec, st = rec.container(container)
    name = spec["name"]
    if not rec.active or "running" not in (st.get("state") or {}):
        raise Conflict(f'container "{name}" in pod "{rec.name}" is not running')
    if tty and not spec.get("tty"):
        tty = False
        if not quiet:
            print(f"error: Unable to use a TTY - container {name} did not allocate one",
                  file=sys.stderr)
    elif spec.get("tty"):
        tty = True  # what the container writes is a terminal's output either way
    raw = tty and stdin
    if raw and not os.isatty(0):
        raw = False
        if not quiet:
            print("Unable to use a TTY - input is not a terminal or the right kind of file",
                  file=sys.stderr)
    try:
        client = ap.Client(ap.socket_path(rec.plan["run_dir"], name), stdin=stdin,
                           stderr=not raw)
    except (FileNotFoundError, ConnectionRefusedError, EOFError):
        raise Conflict(f'container "{name}" in pod "{rec.name}" is not running') from None
    except ap.Refused as e:
        raise Conflict(str(e)) from None
    if stdin and not client.stdin_open and not quiet:
        print(f"warning: container {name} has no open stdin (stdin: false, or its stdinOnce "
              "stdin was closed): input is dropped", file=sys.stderr)
    if not quiet:
        print("If you don't see a command prompt, try pressing enter.", file=sys.stderr)
    try:
        code = _relay(client, stdin, raw)
    finally:
        client.close()
    if code is None:
        if not quiet and stdin and raw:
            print(f"Session ended, resume using 'minipod attach {rec.name} -c {name} -i -t' "
                  "command when the pod is running")
        return 0
    return code


def _relay(client: ap.Client, stdin: bool, raw: bool) -> int | None:
    """Copy until the session ends: the container's exit code, or None (a detach, or the
    supervisor ended the session)."""
    saved = None
    if raw:
        def resize(*_):
            try:
                rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ,
                                                                     b"\0" * 8))
            except OSError:
                return
            client.resize(cols, rows)

        # As kubectl does: one size off, then the real one, so that a program attached to
        # again gets a SIGWINCH and redraws its screen.
        try:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ,
                                                                 b"\0" * 8))
            client.resize(cols + 1, rows + 1)
        except OSError:
            pass
        resize()
        signal.signal(signal.SIGWINCH, resize)
        saved = termios.tcgetattr(0)
        # TCSANOW, not setraw's default TCSAFLUSH: what the user typed before we got here
        # (a fast typist, a script) is kept and sent on, as kubectl keeps it.
        ttymod.setraw(0, termios.TCSANOW)
    code = None
    held = b""
    fds = [client.fileno()] + ([0] if stdin else [])
    try:
        while True:
            ready, _, _ = select.select(fds, [], [])
            if client.fileno() in ready:
                msg = client.recv()
                if msg is None:
                    return code
                kind, payload = msg
                if kind == ap.STDOUT:
                    _write_all(1, payload)
                elif kind == ap.STDERR:
                    _write_all(2, payload)
                elif kind == ap.EXIT:
                    code = ap.parse_exit(payload)
            if 0 in ready:
                data = os.read(0, ap.CHUNK)
                if not data:
                    client.close_stdin()
                    fds.remove(0)
                    continue
                if raw:
                    data, held, detached = split_detach(held, data)
                    if detached:
                        client.send_stdin(data)
                        client.detach()
                        return None
                client.send_stdin(data)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        data = data[n:]
