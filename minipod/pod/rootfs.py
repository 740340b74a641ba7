"""Build a container's root filesystem. Runs in the container's own mount namespace, as the
process that becomes the container's PID 1 (so /proc shows its PID namespace).

Order matters: every mount goes under the new root *before* pivot_root (paths are host paths
then), masking needs the final /proc and /dev/null (after pivot_root), and read-only remounts
come last because they would stop us from creating mount points.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

from minipod.kernel import inroot, mounts
from minipod.kernel._libc import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_STRICTATIME

if TYPE_CHECKING:
    from minipod.pod.plan import ContainerPlan, Mount

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
    """The host path that `path` names inside `root`, as if root were "/": symlinks in the
    image (/etc -> /host/etc, ../../..) and ".." never lead out. What does not exist yet is
    joined as written.

    A string for messages and tests only: a path can be changed after it was resolved, so the
    mounts below use the fd that inroot.open_in_root resolved, never a string like this one.
    """
    root_fd = os.open(root, _O_DIR)
    try:
        fd, missing = inroot.lookup(root_fd, path)
    finally:
        os.close(root_fd)
    try:
        base = os.readlink(inroot.fd_path(fd))
    finally:
        os.close(fd)
    rest = os.path.normpath("/" + "/".join(missing)).lstrip("/")  # ".." cannot climb out
    return os.path.join(base, rest) if rest else base


_O_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class _At:
    """An O_PATH fd for a mount target resolved in the container's root; `.path` is what the
    mount syscalls get (/proc/self/fd/N: exactly that object, whatever the path names now)."""

    def __init__(self, root_fd: int, target: str, create: str | None = "dir"):
        self.fd = inroot.open_in_root(root_fd, target, create)
        self.path = inroot.fd_path(self.fd)

    def __enter__(self) -> "_At":
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def _dev(root_fd: int, shm: str) -> None:
    # /dev is a tmpfs of its own, mounted without MS_NODEV: the nodes below must open, and the
    # rootfs's nodev (the mount beneath) does not apply to another mount.
    with _At(root_fd, "/dev") as at:
        mounts.mount("tmpfs", at.path, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
        # The fresh tmpfs is ours alone (no other process is in this mount namespace yet), so
        # its path is safe to use from here on.
        dev = os.readlink(at.path)
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
    # The pod's /dev/shm: `shm` is the pod's tmpfs -- /dev/shm in a copy of pause's mount
    # namespace, the pinned sandbox's DIR/shm in pinned mode -- or, with hostIPC, the node's.
    # Binding it here is what makes IPC sharing real for POSIX shm.
    mounts.bind(shm, os.path.join(dev, "shm"), recursive=False)
    mounts.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue",
                 MS_NOSUID | MS_NOEXEC | MS_NODEV)


def _source(m: Mount) -> int:
    """An O_PATH fd for a mount's source on the host.

    A volume's directory is minipod's, but what is inside it is written by the pod's containers:
    a subPath is resolved inside the volume (as if it were "/"), so a symlink a container left
    there cannot make us bind a host directory. An emptyDir (and its subPath) is created on
    first use, as the kubelet does.
    """
    src, vol = m.source, m.source_root
    if m.kind == "host":  # a hostPath: the node's own path, checked by its type (volumes/)
        return os.open(src, os.O_PATH | os.O_CLOEXEC)
    if not vol:  # the kubelet's files (/etc/hosts ...), or a plan written before source_root
        if m.kind != "file":
            os.makedirs(src, 0o755, exist_ok=True)
        return os.open(src, os.O_PATH | os.O_CLOEXEC)
    os.makedirs(vol, 0o755, exist_ok=True)
    vol_fd = os.open(vol, _O_DIR)
    try:
        return inroot.open_in_root(vol_fd, os.path.relpath(src, vol), "dir")
    finally:
        os.close(vol_fd)


def _volume(root_fd: int, m: Mount, nodev: int) -> None:
    src_fd = _source(m)
    try:
        src = os.fstat(src_fd)
        # A file, socket or device (a hostPath, a subPath to one key) binds onto a file.
        create = "dir" if stat.S_ISDIR(src.st_mode) else "file"
        with _At(root_fd, m.target, create) as at:
            mounts.bind(inroot.fd_path(src_fd), at.path)
        flags = nodev | (MS_RDONLY if m.readonly else 0)
        if not flags:
            return
        # A bind ignores flags on creation: they need a remount, which must name the new mount.
        # The fd we mounted onto names the directory beneath it, so resolve the target again
        # (that crosses into our bind) and check it is our bind before changing it.
        with _At(root_fd, m.target, None) as at:
            st = os.fstat(at.fd)
            if (st.st_dev, st.st_ino) != (src.st_dev, src.st_ino):
                raise OSError(errno.EBUSY, f"{m.target}: changed while it was being mounted")
            mounts.remount_bind(at.path, flags)
    finally:
        os.close(src_fd)


def build(c: ContainerPlan, shm: str = "/dev/shm") -> None:
    """Mount container `c`'s root and pivot into it; `shm` is the pod's /dev/shm to bind.

    Every mount target is resolved inside the new root (kernel/inroot.py) and mounted through
    its fd, so neither a symlink in the image nor one a container of the pod swaps into a
    shared volume can place a mount, or create a mount point, outside the root.
    """
    root = c.rootfs
    # nodev on the image's files and on volumes: a device node there (a layer's, or one made
    # with CAP_MKNOD inside the container) cannot be opened, whatever the device cgroup allows
    # -- the second layer of defence. Privileged containers get the host's devices, as in
    # Kubernetes, so they keep device nodes working.
    nodev = 0 if c.privileged else MS_NODEV
    lower = list(reversed(c.layers))  # overlayfs lists the top layer first
    mounts.overlay(lower, c.upper, c.work, root, nodev)
    root_fd = os.open(root, _O_DIR)
    try:
        with _At(root_fd, "/proc") as at:
            mounts.mount("proc", at.path, "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV)
        _dev(root_fd, shm)
        ro = 0 if c.privileged else MS_RDONLY
        with _At(root_fd, "/sys") as at:
            mounts.mount("sysfs", at.path, "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV | ro)
        for m in c.mounts:
            try:
                _volume(root_fd, m, nodev)
            except OSError as e:  # the fd paths in the message would tell the user nothing
                raise OSError(e.errno, f"mount {m.source} on {m.target}: "
                                       f"{e.strerror or os.strerror(e.errno)}") from None
    finally:
        os.close(root_fd)
    mounts.pivot_root(root)
    if not c.privileged:
        for p in MASKED:
            mounts.mask(p)
        for p in READONLY:
            mounts.readonly(p)
    if c.readonly_rootfs:
        # Per-mount flags are set as a whole: nodev again, or the remount would clear it.
        mounts.remount_bind("/", MS_RDONLY | nodev)


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


def member_groups(uid: int, user: str) -> list[int]:
    """The groups of the image's /etc/group that list the user as a member (containerd's
    WithAdditionalGIDs): the user's name from /etc/passwd (by uid), or the name given."""
    name = (user or "0").partition(":")[0]
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 3 and fields[2] == str(uid):
                    name = fields[0]
                    break
    except OSError:
        pass
    gids: list[int] = []
    try:
        with open("/etc/group") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 4 and fields[0] != name and name in fields[3].split(",") \
                        and fields[2].isdigit():
                    gids.append(int(fields[2]))
    except OSError:
        pass
    return gids
