"""Namespace primitive: unshare, join (setns) and identify namespaces by inode."""

from __future__ import annotations

import os

from minipod import explain
from minipod.kernel import _libc

FLAGS = {
    "mnt": _libc.CLONE_NEWNS,
    "uts": _libc.CLONE_NEWUTS,
    "ipc": _libc.CLONE_NEWIPC,
    "pid": _libc.CLONE_NEWPID,
    "net": _libc.CLONE_NEWNET,
    "cgroup": _libc.CLONE_NEWCGROUP,
}
ALL = ("net", "ipc", "uts", "pid", "mnt", "cgroup")


def unshare(*types: str) -> None:
    flags = 0
    for t in types:
        flags |= FLAGS[t]
    _libc.unshare(flags)
    if explain.ON:
        # A new pid namespace is made with the next child (pid_for_children is empty until
        # then): its inode comes with the container's start.
        new = explain.inodes("self", [t for t in types if t != "pid"])
        fork = " --fork" if "pid" in types else ""
        explain.say("new namespaces " + " ".join(f"{t}:[{i}]" for t, i in new.items())
                    + (" and a pid namespace for the next child" if "pid" in types else ""),
                    f"unshare({'|'.join(explain.CLONE[t] for t in types)})",
                    f"unshare {' '.join(explain.NS_OPTS[t] for t in types)}{fork}",
                    inodes=new)


def join(pid: int, types: list[str]) -> None:
    """setns() into the given namespaces of `pid`, in the order given.

    All namespace files are opened first: once we join a mount namespace, /proc/<pid> may no
    longer resolve (it is the other namespace's /proc, or none). Callers put "mnt" last for the
    same reason, and must be single-threaded (the kernel refuses setns(mnt) for a thread that
    shares its fs_struct). Joining "pid" only affects children forked afterwards.
    """
    _join([(t, f"/proc/{pid}/ns/{t}") for t in types], pid)


def join_files(files: list[tuple[str, str]]) -> None:
    """setns() into namespaces given as files, [(type, path)], in that order: pinned ones (a
    bind mount of a /proc/PID/ns file) or /proc/PID/ns/TYPE itself. As join(), every file is
    opened before the first setns."""
    _join(files, None)


def _join(files: list[tuple[str, str]], pid: int | None) -> None:
    fds = []
    try:
        for t, path in files:
            fds.append((t, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
        if explain.ON:
            theirs = {t: os.fstat(fd).st_ino for t, fd in fds}
        for (t, fd), (_, path) in zip(fds, files):
            _libc.setns(fd, FLAGS[t], what=f"setns {t} of pid {pid}" if pid is not None
                        else f"setns {t} {path}")
        if explain.ON:
            held = " ".join(f"{t}:[{i}]" for t, i in theirs.items())
            calls = "; ".join(f"setns(open({path}), {explain.CLONE[t]})" for t, path in files)
            if pid is not None:
                explain.say(f"join the namespaces of PID {pid}: {held}", calls,
                            f"nsenter --target {pid} "
                            + " ".join(explain.NS_OPTS[t] for t, _ in files),
                            target=pid, inodes=theirs)
            else:
                explain.say(f"join the namespaces pinned at {', '.join(p for _, p in files)}: "
                            f"{held}", calls,
                            "nsenter " + " ".join(f"{explain.NS_OPTS[t]}={p}" for t, p in files),
                            files=dict(files), inodes=theirs)
    finally:
        for _, fd in fds:
            os.close(fd)


def inode(pid: int | str, t: str) -> int | None:
    """The namespace's inode number, as `ls -l /proc/PID/ns` shows it; None if pid is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/{t}").st_ino
    except OSError:
        return None


def inodes(pid: int | str, types: tuple[str, ...] = ALL) -> dict[str, int | None]:
    return {t: inode(pid, t) for t in types}
