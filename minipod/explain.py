"""The explain hook behind `minipod run --explain`: the code that does each step says what it
did, with the real values, the system call, and a shell command a student could type for it.

Off by default, and then free: `ON` is False and every call site is guarded by `if
explain.ON:`, so not even the message is built. `minipod run --explain` sets $MINIPOD_EXPLAIN
to a file for the daemon it starts; this module, imported by the supervisor before it forks
anything, opens it once (O_APPEND, close-on-exec) and forgets the variable, so pause and the
containers never see it in their environment. Every process forked from then on -- the
network agent, the sandbox, the containers' set-up children, even after pivot_root -- writes
through the inherited descriptor, one JSON line per write(2): O_APPEND makes each line land
whole and in the order the steps happened, across processes. The descriptor is close-on-exec,
so no workload ever holds it. The CLI reads the file as it grows and prints it (render()).
"""

from __future__ import annotations

import json
import os
import time

ENV = "MINIPOD_EXPLAIN"
_fd = -1
_stage = ""


def _open() -> None:
    global _fd
    path = os.environ.pop(ENV, "")
    if path:
        try:
            _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            _fd = -1  # the CLI has gone and removed it: nobody to explain to


_open()
ON = _fd >= 0


def fileno() -> int:
    """The explain file's descriptor (-1 when off), for code that closes every other fd."""
    return _fd


_host_pid = (0, 0)  # (os.getpid(), the PID the host sees) of the last process that asked


def _pid() -> int:
    """The host's PID even inside a new pid namespace: read from /proc/self while /proc is
    still the host's (a container's first line comes before its pivot_root) and kept."""
    global _host_pid
    me = os.getpid()
    if _host_pid[0] != me:
        try:
            _host_pid = (me, int(os.readlink("/proc/self")))
        except (OSError, ValueError):
            _host_pid = (me, me)
    return _host_pid[1]


def stage(name: str) -> None:
    """The orchestrator names the stage the next steps belong to (inherited by forks)."""
    global _stage
    _stage = name
    if ON:
        _write({"stage": name, "begin": True})


def say(what: str, syscall: str = "", shell: str = "", **values) -> None:
    """One step that has just succeeded. `values`: the real numbers, for -o json and tests."""
    if ON:
        _write({"stage": _stage, "what": what, "syscall": syscall, "shell": shell,
                "values": values})


def _write(rec: dict) -> None:
    rec = {"time": round(time.time(), 6), "pid": _pid(), **rec}
    try:
        os.write(_fd, (json.dumps(rec, default=str) + "\n").encode())
    except OSError:
        pass  # explaining never breaks a pod


# --- shell spellings shared by the hooks --------------------------------------------------

NS_OPTS = {"net": "--net", "ipc": "--ipc", "uts": "--uts", "pid": "--pid", "mnt": "--mount",
           "cgroup": "--cgroup", "user": "--user", "time": "--time"}
CLONE = {"net": "CLONE_NEWNET", "ipc": "CLONE_NEWIPC", "uts": "CLONE_NEWUTS",
         "pid": "CLONE_NEWPID", "mnt": "CLONE_NEWNS", "cgroup": "CLONE_NEWCGROUP"}


def inodes(pid: int | str, types) -> dict[str, int]:
    out = {}
    for t in types:
        try:
            out[t] = os.stat(f"/proc/{pid}/ns/{t}").st_ino
        except OSError:
            pass
    return out


# --- the reader (the CLI) -----------------------------------------------------------------


def render(rec: dict) -> str:
    """A record as the lines `run --explain` prints."""
    if rec.get("begin"):
        return f"── {rec['stage']}"
    out = [f"  {rec['what']}  [pid {rec['pid']}]"]
    if rec.get("syscall"):
        out.append(f"      syscall: {rec['syscall']}")
    if rec.get("shell"):
        out.append(f"      $ {rec['shell']}")
    return "\n".join(out)


class Reader:
    """Follows the explain file: new complete lines each time it is polled."""

    def __init__(self, path: str):
        self.path = path
        self._f = open(path, "rb")
        self._buf = b""

    def poll(self) -> list[dict]:
        self._buf += self._f.read()
        *lines, self._buf = self._buf.split(b"\n")
        out = []
        for ln in lines:
            try:
                out.append(json.loads(ln))
            except ValueError:
                continue
        return out

    def close(self) -> None:
        self._f.close()
