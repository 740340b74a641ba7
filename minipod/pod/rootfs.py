"""Build a container's root filesystem. Runs in the container's own mount namespace, as the
process that becomes the container's PID 1 (so /proc shows its PID namespace).

Order matters: every mount goes under the new root *before* pivot_root (paths are host paths
then), masking needs the final /proc and /dev/null (after pivot_root), and read-only remounts
come last because they would stop us from creating mount points.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from minipod.kernel import mounts
from minipod.kernel._libc import (MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY,
                                  MS_REMOUNT, MS_STRICTATIME)

if TYPE_CHECKING:
    from minipod.pod.plan import ContainerPlan

# runc/containerd defaults (see shared reference runtime-defaults.md).
MASKED = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
          "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
             ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))


def secure_join(root: str, path: str) -> str:
    """Resolve `path` inside `root` as if root were '/': symlinks in the image can't lead out.

    An image may contain /etc -> /host/etc or ../../..; mounting onto the naive join would
    mount onto the host. (The idea of runc's securejoin, written for our needs.)
    """
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        cur = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise OSError(40, f"too many symlinks resolving {path} in the image")
            target = os.readlink(cur)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _ensure_file(path: str) -> None:
    _mkdirs(os.path.dirname(path))
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _dev(root: str) -> None:
    dev = os.path.join(root, "dev")
    _mkdirs(dev)
    mounts.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        p = os.path.join(dev, name)
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(p, 0o666)  # mknod honours the umask
    for name, target in DEV_LINKS:
        os.symlink(target, os.path.join(dev, name))
    for d in ("pts", "shm", "mqueue"):
        os.mkdir(os.path.join(dev, d))
    mounts.mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
                 "newinstance,ptmxmode=0666,mode=0620,gid=5")
    # The pod's /dev/shm: this mount namespace is a copy of the sandbox's, whose /dev/shm is
    # the pod's tmpfs. Binding it here is what makes IPC sharing real for POSIX shm.
    mounts.bind("/dev/shm", os.path.join(dev, "shm"), recursive=False)
    mounts.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue",
                 MS_NOSUID | MS_NOEXEC | MS_NODEV)


def build(c: ContainerPlan) -> None:
    """Mount container `c`'s root and pivot into it."""
    root = c.rootfs
    lower = list(reversed(c.layers))  # overlayfs lists the top layer first
    mounts.overlay(lower, c.upper, c.work, root)
    proc = os.path.join(root, "proc")
    _mkdirs(proc)
    mounts.mount("proc", proc, "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV)
    _dev(root)
    sys_ = os.path.join(root, "sys")
    _mkdirs(sys_)
    ro = 0 if c.privileged else MS_RDONLY
    mounts.mount("sysfs", sys_, "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV | ro)
    for m in c.mounts:
        target = secure_join(root, m.target)
        if m.kind == "file":
            _ensure_file(target)
        else:
            _mkdirs(m.source)  # an emptyDir subPath is created on first use, as the kubelet does
            _mkdirs(target)
        mounts.bind(m.source, target, readonly=m.readonly)
    mounts.pivot_root(root)
    if not c.privileged:
        for p in MASKED:
            mounts.mask(p)
        for p in READONLY:
            mounts.readonly(p)
    if c.readonly_rootfs:
        mounts.mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def lookup_user(user: str) -> tuple[int, int, list[int]]:
    """Resolve an image/pod user ("1000", "1000:1000", "nobody", "app:staff") in /etc/passwd
    and /etc/group of the container (we have pivoted already)."""
    name, _, group = (user or "0").partition(":")
    uid = gid = None
    home_gid = 0
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 4 and (fields[0] == name or fields[2] == name):
                    uid, home_gid = int(fields[2]), int(fields[3])
                    break
    except OSError:
        pass
    if uid is None:
        if not name.isdigit():
            raise OSError(2, f'user "{name}" not found in the image\'s /etc/passwd')
        uid = int(name)
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            try:
                with open("/etc/group") as f:
                    for line in f:
                        fields = line.split(":")
                        if fields[0] == group:
                            gid = int(fields[2])
                            break
            except OSError:
                pass
            if gid is None:
                raise OSError(2, f'group "{group}" not found in the image\'s /etc/group')
    else:
        gid = home_gid
    return uid, gid, [gid]
