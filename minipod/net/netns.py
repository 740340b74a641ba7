"""Named network namespaces, as `ip netns` knows them: a bind mount of /proc/PID/ns/net on an
empty file in /run/netns. `ip netns list` lists the files, `ip netns identify PID` finds the one
whose inode is PID's netns, `ip netns exec NAME` enters it.

The mount holds a reference to the namespace: it lives until the file is unmounted, whatever
happens to the process. So every pin has its unpin, and a mount namespace copied while a pin
existed holds a copy of it too -- which is why iproute2 makes /run/netns a shared mount (an
unmount on the host then reaches the copies that stayed peers or slaves), and why a copy made
private must detach its copies itself (detach_copies).

No pyroute2 here: only mount(2) and the filesystem.
"""

from __future__ import annotations

import errno
import os

from minipod.kernel import _libc
from minipod.kernel._libc import MNT_DETACH, MS_BIND, MS_REC, MS_SHARED

RUN_DIR = "/run/netns"


def _shared_dir(d: str) -> None:
    """Make `d` a shared mount, as `ip netns add` does (a bind of itself the first time; that
    mount stays, as iproute2's does, for every later pin)."""
    os.makedirs(d, 0o755, exist_ok=True)
    try:
        _libc.mount("none", d, None, MS_SHARED | MS_REC)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
        _libc.mount(d, d, None, MS_BIND | MS_REC)
        _libc.mount("none", d, None, MS_SHARED | MS_REC)


def pin(pid: int, path: str, source: str = "") -> None:
    """Give the network namespace of `pid` the name basename(path) (`ip netns attach`);
    `source`: a file of that namespace instead (another pin of it, /proc/PID/ns/net)."""
    _shared_dir(os.path.dirname(path))
    # O_EXCL: a name in use belongs to someone else (or to a pod not yet cleaned up).
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
    os.close(fd)
    try:
        _libc.mount(source or f"/proc/{pid}/ns/net", path, None, MS_BIND)
    except BaseException:
        os.unlink(path)
        raise


def unpin(path: str) -> None:
    """Remove the name (the namespace goes once nothing else holds it). Gone = done."""
    if not path:
        return
    try:
        _libc.umount2(path, MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more), gone
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _nsfs_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    points = []
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if right.split()[:1] == ["nsfs"] and len(fields) > 4:
                points.append(fields[4].replace("\\040", " ").replace("\\134", "\\"))
    return points


def detach_copies(run_dir: str = RUN_DIR) -> None:
    """In a freshly copied mount namespace: detach the copies of every pin under `run_dir`, so
    this namespace keeps no other pod's network namespace alive.

    Where run_dir's parent is a shared mount (systemd makes / and /run shared), the bind of
    run_dir on itself (_shared_dir, as iproute2 does it) is a peer of that parent, so every pin
    is mounted twice: on the bind, and on the parent beneath it, where no path reaches it. So:
    unmount the bind (this copy's: the host keeps its own) with what is on it, then what a
    path reaches, and again, until no pin is left under run_dir."""
    prefix = run_dir.rstrip("/") + "/"
    # First the bind itself: a detached mount takes every mount on top of it along, so one
    # umount2 drops the pins stacked on it. One pin at a time was one umount2 per pod on the
    # host, each a full trip through the kernel's unmount path, at every sandbox's start:
    # ~8 ms with 100 pods up (bench/ density). The loop below finds only what lies beneath.
    _detach(run_dir)
    for _ in range(8):  # a bound on binds stacked on run_dir; two rounds on systemd
        held = [p for p in _nsfs_mounts() if p.startswith(prefix)]
        if not held:
            return
        for point in reversed(held):
            _detach(point)
        if any(p.startswith(prefix) for p in _nsfs_mounts()):
            _detach(run_dir)  # the rest are under it


def _detach(point: str) -> None:
    try:
        _libc.umount2(point, MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            raise
