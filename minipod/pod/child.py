"""Forked children that cannot run on the host by mistake.

A child does namespace and mount work, then execs. It never returns into the parent's code: every
path ends in exec or os._exit, and errors travel to the parent over a close-on-exec pipe, so
"EOF with no message" means the exec succeeded. A second pipe carries "go" bytes from the parent:
the child waits on it where the parent must act first (join it to a cgroup, finish the network).

Report protocol, one line per message:  P <pid>  (a grandchild's PID)   R  (ready to exec)
                                         E <stage>: <error>
"""

from __future__ import annotations

import os
import signal
from typing import Callable, NoReturn

from minipod.errors import MinipodError
from minipod.kernel import _libc


class ChildError(MinipodError):
    """The child failed; the message names the stage and the kernel's answer."""


def describe(e: BaseException) -> str:
    if isinstance(e, OSError):
        msg = e.strerror or str(e)
        return f"{e.filename}: {msg}" if e.filename else msg
    return str(e) or type(e).__name__


def exec_error(argv0: str, e: BaseException) -> str:
    """runc's words for an exec that failed."""
    if isinstance(e, FileNotFoundError):
        if "/" in argv0:
            return f'exec: "{argv0}": stat {argv0}: no such file or directory'
        return f'exec: "{argv0}": executable file not found in $PATH'
    if isinstance(e, PermissionError):
        return f'exec: "{argv0}": permission denied'
    if isinstance(e, OSError) and e.strerror:
        return f'exec: "{argv0}": {e.strerror[0].lower()}{e.strerror[1:]}'
    return f'exec: "{argv0}": {describe(e)}'


class Channel:
    """The child's end: report to the parent, wait for its go."""

    def __init__(self, report_w: int, go_r: int):
        self.report_w = report_w
        self.go_r = go_r
        self.stage = "start"

    def send(self, line: str) -> None:
        os.write(self.report_w, (line.replace("\n", " ") + "\n").encode()[:4096])

    def wait_go(self) -> None:
        if os.read(self.go_r, 1) != b"g":
            os._exit(1)  # the parent closed the pipe: it gave up on us (rollback)

    def wait_go_payload(self) -> str:
        """wait_go() for a go that carries one line of data (Handle.go(payload))."""
        self.wait_go()
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(self.go_r, 4096)
            if not chunk:
                os._exit(1)
            data += chunk
        return data[:-1].decode()

    def keep_fds(self) -> tuple[int, ...]:
        return (self.report_w, self.go_r)


def fork(body: Callable[[Channel], object]) -> "Handle":
    """Fork a child running body(channel); body must exec or exit."""
    report_r, report_w = os.pipe()  # Python's pipes are O_CLOEXEC: exec closes them for us
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        os.close(go_w)
        ch = Channel(report_w, go_r)
        try:
            # A child must not run the parent's signal handlers (they write to the parent's
            # wakeup pipe) and must die on SIGINT/SIGTERM until it execs.
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
                signal.signal(s, signal.SIG_DFL)
            body(ch)
            ch.send(f"E {ch.stage}: returned without exec")
        except BaseException as e:  # noqa: BLE001 - report everything, then exit
            try:
                ch.send(f"E {ch.stage}: {describe(e)}")
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(127)
    os.close(report_w)
    os.close(go_r)
    return Handle(pid, report_r, go_w)


class Handle:
    """The parent's end of a forked child."""

    def __init__(self, pid: int, report_r: int, go_w: int):
        self.pid = pid
        self.report_r = report_r
        self.go_w = go_w
        self._buf = b""

    def go(self, payload: str | None = None) -> None:
        """Let the child go on; a payload (one line) is for a child in wait_go_payload()."""
        os.write(self.go_w, b"g" if payload is None else b"g" + payload.encode() + b"\n")

    def read(self) -> str | None:
        """The next report line, or None at EOF (the child exec'd or exited)."""
        while b"\n" not in self._buf:
            chunk = os.read(self.report_r, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode(errors="replace")
        if text.startswith("E "):
            raise ChildError(text[2:])
        return text

    def expect(self, prefix: str) -> str:
        line = self.read()
        if line is None:
            raise ChildError("the process exited before it was ready")
        if not line.startswith(prefix):
            raise ChildError(f"unexpected report {line!r}")
        return line[len(prefix):].strip()

    def kill(self) -> None:
        """SIGKILL the child and reap it, on a failed start; gone already = done."""
        try:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def close(self) -> None:
        for fd in (self.report_r, self.go_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.report_r = self.go_w = -1


def close_fds_except(keep: tuple[int, ...]) -> None:
    """Close every fd >= 3 but `keep`: a container's PID 1 must hold only 0, 1 and 2 (a leaked
    fd to a host directory is how CVE-2024-21626 escaped runc)."""
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 1 << 16)


def die_with_parent(expected_parent: int | None) -> None:
    """SIGKILL us when the supervisor dies, so a killed supervisor leaves no process behind.

    Set only once our parent is the supervisor itself: the kernel sends the signal when the
    parent at the time exits, and an intermediate child that exits on purpose would fire it.
    """
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    # (PID 1 of a new PID namespace sees getppid() == 0 and cannot check; the janitor covers
    # the tiny window there.)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # it died before the prctl took effect


def set_oom_score_adj(value: int) -> bool:
    """Best effort: lowering the score needs CAP_SYS_RESOURCE, which some hosts withhold."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
        return True
    except OSError:
        return False


def exit_now(code: int = 127) -> NoReturn:
    os._exit(code)
