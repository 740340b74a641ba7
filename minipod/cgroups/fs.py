"""cgroupfs file I/O shared by the v1 and v2 drivers: mounts, reads, writes, mkdir, rmdir.

Every failure becomes a CgroupError naming the operation, the file and the value, e.g.
    write '33554432' to /sys/fs/cgroup/minipod.slice/memory.max: Invalid argument
Standard library only: detect() imports this module on every pod command.
"""

from __future__ import annotations

import errno
import os
import time

from minipod import explain
from minipod.cgroups import CgroupBusy, CgroupError

MOUNTINFO = "/proc/self/mountinfo"
CGROUP2_SUPER_MAGIC = 0x63677270  # what statfs(2) reports for a cgroup2 mount (linux/magic.h)


class FileError(CgroupError):
    """A cgroupfs syscall failed. Keeps the errno so callers can react to EINVAL, EBUSY, ..."""

    def __init__(self, message: str, path: str, err: int | None):
        super().__init__(message)
        self.path = path
        self.errno = err


def systemd_is_init(run_dir: str = "/run/systemd/system") -> bool:
    """PID 1 is systemd: the same test as sd_booted(3), which checks this directory."""
    return os.path.isdir(run_dir)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts(mountinfo: str = MOUNTINFO) -> list[tuple[str, str, list[str]]]:
    """(mount point, fstype, super options) of every mount, in mount order."""
    result = []
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise FileError(f"read {mountinfo}: {e.strerror}", mountinfo, e.errno) from None
    for line in lines:
        # 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
        # optional fields end at " - "; after it: fstype, source, super options.
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        result.append((_unescape(fields[4]), tail[0], tail[2].split(",")))
    return result


def is_unified(root: str, mountinfo: str = MOUNTINFO) -> bool:
    """Is `root` itself a cgroup2 mount (pure v2, not the hybrid layout's tmpfs of v1 mounts)?

    We read mountinfo instead of statfs(2) (magic CGROUP2_SUPER_MAGIC): Python has no statfs
    and the answer is the same. The last mount on a path is the visible one.
    """
    target = os.path.realpath(root)
    fstype = None
    for point, kind, _ in mounts(mountinfo):
        if point == target:
            fstype = kind
    return fstype == "cgroup2"


def v1_mounts(
    controllers: tuple[str, ...], root: str = "/sys/fs/cgroup", mountinfo: str = MOUNTINFO
) -> dict[str, str]:
    """Controller name -> mount point of its v1 hierarchy, for the wanted controllers.

    Co-mounted controllers (`cpu,cpuacct` on one hierarchy) map to the same mount point; we
    use the real mount point from mountinfo, never the /sys/fs/cgroup/cpu -> cpu,cpuacct
    symlinks. A controller mounted twice (bind mounts) prefers the mount under `root`.
    """
    prefix = os.path.realpath(root).rstrip("/") + "/"
    candidates: dict[str, list[str]] = {}
    for point, fstype, options in mounts(mountinfo):
        if fstype == "cgroup":
            for name in controllers:
                if name in options:
                    candidates.setdefault(name, []).append(point)
    found = {}
    for name, points in candidates.items():
        under_root = [p for p in points if p.startswith(prefix)]
        found[name] = (under_root or points)[0]
    return found


def read(path: str, missing_ok: bool = False) -> str | None:
    """Content of a control file without the trailing newline; None if missing and missing_ok."""
    try:
        with open(path) as f:
            return f.read().rstrip("\n")
    except OSError as e:
        if missing_ok and e.errno in (errno.ENOENT, errno.ENODEV):
            return None
        raise FileError(f"read {path}: {e.strerror}", path, e.errno) from None


def write(path: str, value: str | int) -> None:
    """Write one value with one write(2), as cgroupfs expects (no O_CREAT: a missing knob is
    an error, never a new regular file; O_TRUNC matters only for fake trees in tests)."""
    text = str(value)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise FileError(f"write {text!r} to {path}: {e.strerror}", path, e.errno) from None
    if explain.ON:
        explain_write(path, text)


def explain_write(path: str, text: str) -> None:
    what = (f"move PID {text} into {os.path.dirname(path)}"
            if path.endswith("/cgroup.procs") else f"{os.path.basename(path)} = {text}")
    explain.say(what, f"write(open({path!r}), {text!r})", f"echo {text} > {path}",
                path=path, value=text)


def mkdir(path: str) -> None:
    """Make one cgroup directory; existing is fine. The one place groups are born, so unit
    tests replace it with a fake kernel that fills the new directory with control files."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return
    except OSError as e:
        raise FileError(f"mkdir {path}: {e.strerror}", path, e.errno) from None
    if explain.ON:
        explain.say(f"new cgroup {path}", f"mkdir({path!r}, 0755)", f"mkdir {path}", path=path)


def makedirs(base: str, group: str) -> str:
    """mkdir every missing level of `group` under the existing hierarchy `base`."""
    path = base
    for name in split(group):
        path = os.path.join(path, name)
        mkdir(path)
    return path


def split(group: str) -> list[str]:
    """'a.slice/a-b.slice' -> ['a.slice', 'a-b.slice']; rejects paths that escape the root."""
    parts = [p for p in group.strip("/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise CgroupError(f"invalid cgroup path {group!r}")
    return parts


# Seam: unit tests replace this with a fake kernel's rmdir (a fake group directory holds
# regular files, a real one only kernel-made control files that rmdir ignores).
rmdir = os.rmdir


def rmdir_retry(path: str, timeout: float = 1.0) -> None:
    """rmdir a cgroup; gone = done. EBUSY is retried for up to `timeout` seconds: a cgroup
    stays busy until its last member (zombies too) has been reaped, which lags a kill."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            # Child groups keep it busy for good (another pod in minipod.slice): waiting only
            # helps while the blockers are processes on their way out.
            children = e.errno == errno.EBUSY and _has_children(path)
            if children:
                raise CgroupBusy(f"rmdir {path}: {e.strerror} (it holds child groups)") from None
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                members = procs_tree(path) if e.errno == errno.EBUSY else set()
                why = f" (members: {sorted(members)})" if members else ""
                raise FileError(f"rmdir {path}: {e.strerror}{why}", path, e.errno) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _has_children(path: str) -> bool:
    try:
        return any(e.is_dir() for e in os.scandir(path))
    except OSError:
        return False


def pids(path: str) -> list[int]:
    """PIDs listed in one directory's cgroup.procs; [] if the directory is gone."""
    text = read(os.path.join(path, "cgroup.procs"), missing_ok=True)
    return [int(x) for x in text.split()] if text else []


def walk(path: str) -> list[str]:
    """`path` and all cgroup directories below it, parents first ([] if it is gone)."""
    if not os.path.isdir(path):
        return []
    out = [path]
    for dirpath, dirnames, _ in os.walk(path):
        out.extend(os.path.join(dirpath, d) for d in dirnames)
    return out


def procs_tree(path: str) -> set[int]:
    """PIDs in a cgroup and all of its descendants."""
    found: set[int] = set()
    for d in walk(path):
        found.update(pids(d))
    return found


def signal_all(members: set[int] | list[int], sig: int) -> None:
    """Signal each pid once; one that exited meanwhile (ESRCH) is not an error."""
    for pid in sorted(members):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except OSError as e:
            raise CgroupError(f"kill -{sig} {pid}: {e.strerror}") from None


def join_procs(path: str, pid: int) -> None:
    """Write a pid into <path>/cgroup.procs (0 = the writer itself, in any pid namespace).

    EINVAL can mean the task is still TASK_NEW (just forked): retried a few times, as runc
    does. Anything else, or EINVAL that persists, is raised.
    """
    target = os.path.join(path, "cgroup.procs")
    for attempt in range(5):
        try:
            write(target, pid)
            return
        except FileError as e:
            if e.errno != errno.EINVAL or attempt == 4:
                raise
            time.sleep(0.01)
