"""cgroupfs-v2: the unified hierarchy, plain file I/O (cgroupspy knows only v1).

A group "a.slice/a-b.scope" is <root>/a.slice/a-b.scope. A controller's files exist in a
group only if its parent lists the controller in cgroup.subtree_control, so create() enables
what we need in every ancestor, root first. That is allowed by the "no internal processes"
rule because only leaves ever get processes (the root is exempt from the rule).

Limits: None means unlimited and is written as "max", so set_limits() is declarative;
cpu_shares None leaves cpu.weight alone (a new group starts at the default, 100). A limit
whose controller is not enabled is an error, never silently dropped.

Devices: v2 has no devices controller; a BPF_CGROUP_DEVICE program attached to the group does
the job (devfilter.py builds it, bpf.py loads and attaches it). It needs no controller, so it
works on any cgroup2 mount, the hybrid layout's empty one too.
"""

from __future__ import annotations

import errno
import os
import signal

from minipod.cgroups import CgroupError, Driver, Limits, bpf, convert, devfilter, fs

WANTED = ("cpu", "memory", "pids")


class V2Driver(Driver):
    name = "cgroupfs-v2"

    def __init__(self, root: str = "/sys/fs/cgroup"):
        self.root = root

    def paths(self, group: str) -> dict[str, str]:
        return {"unified": self._path(group)}

    def _path(self, group: str) -> str:
        return os.path.join(self.root, *fs.split(group))

    def _enable(self, path: str) -> None:
        """Enable the WANTED controllers that `path` has in its own subtree_control."""
        available = (fs.read(os.path.join(path, "cgroup.controllers")) or "").split()
        control = os.path.join(path, "cgroup.subtree_control")
        enabled = (fs.read(control) or "").split()
        missing = [c for c in WANTED if c in available and c not in enabled]
        if missing:
            # One write for all: the kernel applies the tokens in order, and reading first
            # spares the root a write for every pod.
            fs.write(control, " ".join("+" + c for c in missing))

    def create(self, group: str, limits: Limits = Limits()) -> None:
        path = self.root
        for name in fs.split(group):
            self._enable(path)  # the root and every ancestor of the leaf, never the leaf
            path = os.path.join(path, name)
            fs.mkdir(path)
        self.set_limits(group, limits)

    def set_limits(self, group: str, limits: Limits) -> None:
        path = self._path(group)
        have = (fs.read(os.path.join(path, "cgroup.controllers")) or "").split()

        def usable(controller: str, what: str, requested: bool) -> bool:
            if controller in have:
                return True
            if not requested:
                return False  # nothing asked of a controller we do not have
            raise CgroupError(
                f"cannot set {what} on {path}: the {controller} controller is not enabled "
                f"(cgroup.controllers: {' '.join(have) or 'none'})"
            )

        if usable("memory", f"memory.max={limits.memory_max}", limits.memory_max is not None):
            value = "max" if limits.memory_max is None else limits.memory_max
            fs.write(os.path.join(path, "memory.max"), value)
        quota, shares = limits.cpu_quota_us, limits.cpu_shares
        what = f"cpu quota={quota} shares={shares}"
        if usable("cpu", what, quota is not None or shares is not None):
            if limits.cpu_shares is not None:
                weight = convert.cpu_weight(limits.cpu_shares)
                fs.write(os.path.join(path, "cpu.weight"), weight)
            line = convert.cpu_max(limits.cpu_quota_us, limits.cpu_period_us)
            fs.write(os.path.join(path, "cpu.max"), line)
        if usable("pids", f"pids.max={limits.pids_max}", limits.pids_max is not None):
            value = "max" if limits.pids_max is None else limits.pids_max
            fs.write(os.path.join(path, "pids.max"), value)
        if limits.devices is not None:
            # Allow-all is no program at all: what a group without one gets.
            code = None
            if not limits.devices.allows_all:
                code = devfilter.assemble(devfilter.program(limits.devices))
            bpf.set_device_program(path, code)

    def join(self, group: str, pid: int = 0) -> None:
        fs.join_procs(self._path(group), pid)

    def procs(self, group: str) -> list[int]:
        return sorted(fs.procs_tree(self._path(group)))

    def kill(self, group: str, sig: int = signal.SIGKILL) -> None:
        path = self._path(group)
        if not os.path.isdir(path):
            return
        kill_file = os.path.join(path, "cgroup.kill")
        if sig == signal.SIGKILL and os.path.exists(kill_file):
            # Linux >= 5.14: the kernel kills the whole subtree, including processes forked
            # while it works, which a kill(2) loop can miss.
            try:
                fs.write(kill_file, 1)
            except fs.FileError as e:
                # Gone meanwhile (systemd removes an emptied scope's cgroup): nothing to kill.
                if e.errno not in (errno.ENOENT, errno.ENODEV):
                    raise
            return
        fs.signal_all(fs.procs_tree(path), sig)

    def oom_kills(self, group: str) -> int:
        """memory.events oom_kill: hierarchical in v2 (children's kills included)."""
        text = fs.read(os.path.join(self._path(group), "memory.events"), missing_ok=True)
        for line in (text or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self, group: str) -> None:
        fs.rmdir_retry(self._path(group))

    def read(self, group: str, filename: str) -> str | None:
        return fs.read(os.path.join(self._path(group), filename), missing_ok=True)
