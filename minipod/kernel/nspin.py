"""Namespaces pinned by bind mounts, with no process in them.

A namespace lives as long as something refers to it: a process in it, an open descriptor of it,
or a bind mount of its /proc/PID/ns file. `ip netns add` keeps a network namespace that way,
`unshare --net=FILE` too, and CRI-O's pinns keeps a pod's net, ipc and uts namespaces so and
runs no pause process (its `drop_infra_ctr`). Once pinned, the process that made them may exit:
the namespaces go when the last bind mount is unmounted (and nothing else holds them).

The pins of one owner sit in one directory that is a mount of its own, made unbindable
(make_dir):
- no propagation: a pin mounted there is not copied into the mount namespaces that share
  /run's mounts with the host (its peers and slaves), where nobody would unmount it;
- unbindable: a recursive bind of a directory above it (a hostPath volume of /run) skips it.
A mount namespace made by unshare(CLONE_NEWNS) while pins exist still begins with copies of
them (the kernel copies every mount): a fresh namespace that needs none of them must detach
them (detach_copies), or it keeps those namespaces alive after their owner unpinned them.

A primitive: mount(2), umount2(2) and the filesystem; no pod code.
"""

from __future__ import annotations

import errno
import os
import re

from minipod import explain
from minipod.kernel import _libc
from minipod.kernel._libc import MNT_DETACH, MS_BIND, MS_UNBINDABLE

MOUNTINFO = "/proc/self/mountinfo"


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(top: str, mountinfo: str = MOUNTINFO) -> list[str]:
    """Mount points at or below `top`, in mount order (a parent before what is mounted on it)."""
    top = top.rstrip("/") or "/"
    out = []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split(" - ", 1)[0].split()
            if len(fields) > 4:
                point = _unescape(fields[4])
                if point == top or point.startswith(top + "/"):
                    out.append(point)
    return out


def _umount(point: str) -> None:
    try:
        _libc.umount2(point, MNT_DETACH)  # detach: a busy mount must not stop the removal
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more), gone
            raise


def make_dir(d: str) -> None:
    """Make `d` (created if missing) a mount of its own, unbindable: a place for pins.

    Refused if `d` is a mount point already: its pins belong to someone else (or to a pod that
    was not cleaned up: its removal unmounts them)."""
    os.makedirs(d, 0o700, exist_ok=True)
    if d.rstrip("/") in mounts_under(d):
        raise OSError(errno.EBUSY, f"{d}: already a mount point (pins left by an earlier owner?)")
    _libc.mount(d, d, None, MS_BIND)
    try:
        _libc.mount(None, d, None, MS_UNBINDABLE)
    except BaseException:
        _umount(d)
        raise
    if explain.ON:
        explain.say(f"{d}: a mount of its own, unbindable (its pins never propagate, and no "
                    "recursive bind takes them along)",
                    f"mount({d!r}, {d!r}, NULL, MS_BIND); mount(NULL, {d!r}, NULL, "
                    "MS_UNBINDABLE)",
                    f"mkdir -p {d} && mount --bind {d} {d} && mount --make-unbindable {d}",
                    dir=d)


def pin(source: str, target: str) -> int:
    """Bind the namespace file `source` (/proc/PID/ns/TYPE, or another pin) onto a new empty
    file `target`; the namespace's inode. O_EXCL: an existing file belongs to someone else."""
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
    os.close(fd)
    try:
        _libc.mount(source, target, None, MS_BIND)
    except BaseException:
        os.unlink(target)
        raise
    ino = os.stat(target).st_ino  # the namespace's inode now: the nsfs file over ours
    if explain.ON:
        kind = os.path.basename(source)
        explain.say(f"{kind}:[{ino}] pinned at {target}",
                    f"open({target!r}, O_CREAT|O_EXCL); mount({source!r}, {target!r}, NULL, "
                    "MS_BIND)",
                    f"touch {target} && mount --bind {source} {target}",
                    source=source, target=target, inode=ino)
    return ino


def unpin(target: str) -> None:
    """Unmount the pin (or any mount in a pin directory) and remove its file or directory: the
    namespace goes once nothing else holds it. Gone = done."""
    if not target:
        return
    _umount(target)
    try:
        os.rmdir(target) if os.path.isdir(target) else os.unlink(target)
    except FileNotFoundError:
        pass


def remove_dir(d: str, mountinfo: str = MOUNTINFO) -> None:
    """Unpin everything in `d`, then unmount and remove `d` itself. Gone = done."""
    if not d or not os.path.lexists(d):
        return
    for point in reversed(mounts_under(d, mountinfo)):  # deepest (latest) first
        _umount(point)
    for name in os.listdir(d):
        p = os.path.join(d, name)
        try:
            os.rmdir(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(d)
    except FileNotFoundError:
        pass


def detach_copies(top: str, keep: str = "", mountinfo: str = MOUNTINFO) -> None:
    """In a freshly copied mount namespace: detach every mount below `top` but those at or
    below `keep`, so this namespace holds nobody else's pins."""
    keep = keep.rstrip("/")
    for point in reversed(mounts_under(top, mountinfo)):
        if point == top.rstrip("/") or keep and (point == keep or point.startswith(keep + "/")):
            continue
        _umount(point)


def inode(path: str) -> int | None:
    """The inode of the namespace pinned at `path` (what `ls -li` and /proc/PID/ns show)."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
