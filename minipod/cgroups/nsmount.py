"""The cgroup filesystem as a container sees it: its own cgroup as the root, at /sys/fs/cgroup.

Run in a process that has joined its cgroup(s) and then unshared its cgroup namespace: the
namespace's root is the cgroup the process was in at unshare(CLONE_NEWCGROUP), and a cgroup
filesystem mounted inside the namespace shows that cgroup as its root (the kernel picks the
namespace's root, not the hierarchy's). So `/sys/fs/cgroup/memory.max` (v2) or
`/sys/fs/cgroup/memory/memory.limit_in_bytes` (v1) is the container's own limit, and
/proc/self/cgroup reads `0::/`.

    v2:  cgroup2 at /sys/fs/cgroup
    v1:  a tmpfs at /sys/fs/cgroup, in it one directory per hierarchy named as the host names
         its mount point (memory, cpu,cpuacct, ...) with that hierarchy mounted on it, and a
         symlink per co-mounted controller (cpu -> cpu,cpuacct), as runc lays it out.

Only the v1 hierarchies the container is placed in are mounted (minipod's controllers): in any
other the namespace's root would be the runtime's cgroup, not the container's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from minipod.cgroups import fs
from minipod.kernel import _libc
from minipod.kernel._libc import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT

TARGET = "/sys/fs/cgroup"
_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC


@dataclass(frozen=True)
class Hierarchy:
    dir: str                # directory under /sys/fs/cgroup: the host mount point's basename
    options: str            # mount data: its controllers, e.g. "cpu,cpuacct" or "memory"
    links: tuple[str, ...]  # co-mounted controllers' symlinks to `dir`


def layout(root: str, controllers: tuple[str, ...],
           mountinfo: str = fs.MOUNTINFO) -> list[Hierarchy] | None:
    """None on cgroup v2 (cgroup2 at `root`); else the v1 hierarchies holding `controllers`.
    Read on the host, before the container's process leaves its mount namespace."""
    if fs.is_unified(root, mountinfo):
        return None
    points = set(fs.v1_mounts(controllers, root, mountinfo).values())
    out = []
    for point, fstype, options in fs.mounts(mountinfo):
        if fstype != "cgroup" or point not in points:
            continue
        points.discard(point)  # a hierarchy mounted twice: once
        ctrls = [o for o in options if o in controllers or o.startswith("name=")]
        name = os.path.basename(point)
        out.append(Hierarchy(name, ",".join(ctrls),
                             tuple(c for c in ctrls if c != name and "=" not in c
                                   and len(ctrls) > 1)))
    return out


def mount(hierarchies: list[Hierarchy] | None, readonly: bool, target: str = TARGET) -> None:
    """Mount the cgroup filesystem at `target` (read-only unless privileged)."""
    ro = MS_RDONLY if readonly else 0
    if hierarchies is None:
        _libc.mount("cgroup2", target, "cgroup2", _FLAGS | ro)
        return
    _libc.mount("cgroup", target, "tmpfs", _FLAGS, "mode=755")
    for h in hierarchies:
        path = os.path.join(target, h.dir)
        os.mkdir(path, 0o555)
        _libc.mount("cgroup", path, "cgroup", _FLAGS | ro, h.options)
        for link in h.links:
            if not os.path.lexists(os.path.join(target, link)):
                os.symlink(h.dir, os.path.join(target, link))
    if readonly:  # last: the directories and links above needed a writable tmpfs
        _libc.mount(None, target, None, MS_REMOUNT | _FLAGS | MS_RDONLY)
