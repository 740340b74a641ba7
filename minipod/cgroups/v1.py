"""cgroupfs-v1: one directory per controller hierarchy (memory, cpu, cpuacct, pids).

A group "a.slice/a-b.scope" is the directory <mount>/a.slice/a-b.scope in each managed
hierarchy. Hierarchies that are co-mounted (cpu,cpuacct) share one directory: every
directory operation goes through _dirs(), which deduplicates them.

Limits: None means unlimited and is written as such (-1 / "max"), so set_limits() is a
declarative "make it so"; cpu_shares None leaves cpu.shares alone (a new group starts at the
kernel default, 1024).

Devices: a new group copies its parent's rules; we write "a" to devices.deny (deny all, drop
the copied exceptions) and then each allowed rule to devices.allow, or the reverse for a policy
that allows all by default. A child can never get more than its parent: the kernel refuses it
(EPERM), which is why a pod's slice must keep allow-all (Limits(devices=None)).

We do not manage cpuset (a new cpuset group has empty cpuset.cpus/mems and refuses members
until both are copied from the parent), freezer or name=systemd.
"""

from __future__ import annotations

import errno
import os

from minipod.cgroups import CgroupBusy, CgroupError, Driver, Limits, devices, fs

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices")
# v1 memory.limit_in_bytes reads back as PAGE_COUNTER_MAX pages (9223372036854771712 on
# 4 KiB pages) when unlimited; anything this large is "no limit".
_UNLIMITED = 1 << 62


class _Dir:
    """The one thing a cgroupspy Controller needs from its tree node: a path (bytes).

    cgroupspy's own Node/Tree would walk the whole hierarchy to build it (slow, and racy on
    a busy host); we only ever need one directory.
    """

    def __init__(self, path: str):
        self.full_path = os.fsencode(path)


class V1Driver(Driver):
    name = "cgroupfs-v1"

    def __init__(self, root: str = "/sys/fs/cgroup", mounts: dict[str, str] | None = None):
        self.root = root
        if mounts is None:
            mounts = fs.v1_mounts(CONTROLLERS, root)
        self.mounts = {c: mounts[c] for c in CONTROLLERS if c in mounts}
        # Controllers this host lacks: skipped for every group, with the reason, so that an
        # error about a limit we cannot apply can say why.
        self.skipped = {
            c: f"no cgroup v1 hierarchy with the {c} controller is mounted"
            for c in CONTROLLERS
            if c not in self.mounts
        }
        if not self.mounts:
            raise CgroupError(
                f"cgroupfs-v1: none of {', '.join(CONTROLLERS)} is mounted as a cgroup v1 "
                f"hierarchy (root {root})"
            )

    # -- paths ------------------------------------------------------------------------------

    def paths(self, group: str) -> dict[str, str]:
        rel = os.path.join(*fs.split(group))
        return {c: os.path.join(m, rel) for c, m in self.mounts.items()}

    def _dirs(self, group: str) -> list[str]:
        """Distinct directories of the group (co-mounted controllers share one)."""
        seen: dict[str, str] = {}
        for path in self.paths(group).values():
            seen.setdefault(os.path.realpath(path), path)
        return list(seen.values())

    def _path(self, group: str, controller: str, value: object) -> str:
        """Directory of one controller, or an error saying why a limit cannot be applied."""
        if controller not in self.mounts:
            raise CgroupError(
                f"cannot set {value} on {group}: {self.skipped.get(controller, 'not managed')}"
            )
        return self.paths(group)[controller]

    # -- lifecycle --------------------------------------------------------------------------

    def create(self, group: str, limits: Limits = Limits()) -> None:
        for mount in dict.fromkeys(os.path.realpath(m) for m in self.mounts.values()):
            fs.makedirs(mount, group)
        self.set_limits(group, limits)

    def set_limits(self, group: str, limits: Limits) -> None:
        from cgroupspy.controllers import CpuController, MemoryController

        if "memory" in self.mounts or limits.memory_max is not None:
            path = self._path(group, "memory", f"memory_max={limits.memory_max}")
            # IntegerFile turns None into -1, v1's "unlimited".
            _set(MemoryController(_Dir(path)), "limit_in_bytes", limits.memory_max)

        wants_cpu = limits.cpu_quota_us is not None or limits.cpu_shares is not None
        if "cpu" in self.mounts or wants_cpu:
            what = f"cpu_quota_us={limits.cpu_quota_us} cpu_shares={limits.cpu_shares}"
            cpu = CpuController(_Dir(self._path(group, "cpu", what)))
            if limits.cpu_shares is not None:
                _set(cpu, "shares", limits.cpu_shares)
                # The kernel clamps shares to [2, 262144] silently: read back, like runc.
                got = cpu.shares
                if got != limits.cpu_shares:
                    raise CgroupError(
                        f"write '{limits.cpu_shares}' to {_file(cpu, 'shares')}: "
                        f"kernel kept {got} (allowed range 2..262144)"
                    )
            _set_cfs(cpu, limits.cpu_quota_us, limits.cpu_period_us)

        if "pids" in self.mounts or limits.pids_max is not None:
            path = self._path(group, "pids", f"pids_max={limits.pids_max}")
            # cgroupspy 0.2.3 has no pids controller (and its IntegerFile would write -1,
            # which pids.max rejects: "max" is the only spelling of unlimited), so plain I/O.
            value = "max" if limits.pids_max is None else limits.pids_max
            fs.write(os.path.join(path, "pids.max"), value)

        policy = limits.devices
        if policy is not None and ("devices" in self.mounts or not policy.allows_all):
            self._set_devices(self._path(group, "devices", "device rules"), policy)

    def _set_devices(self, path: str, policy: devices.Policy) -> None:
        """Make the group's device rules the policy's (see the module docstring)."""
        listed = fs.read(os.path.join(path, "devices.list")) or ""
        # Already so (create() again, or set_limits() with the same policy): write nothing, so
        # a running group never passes through the deny-all state below. devices.list shows
        # an allow-by-default group as "a *:* rwm" whatever its exceptions, so only a plain
        # allow-all or a deny-by-default list can be compared.
        if policy.allows_all and listed == "a *:* rwm":
            return
        wanted = {r.line() for r in policy.exceptions}
        if not policy.default_allow and set(listed.split("\n")) - {""} == wanted:
            return
        if policy.default_allow:
            reset, add = "devices.allow", "devices.deny"
        else:
            reset, add = "devices.deny", "devices.allow"
        # Reset first: "a" sets the default and drops every exception copied from the parent,
        # then each exception. Between the two writes the group is at the default: for a new,
        # empty group (create() runs before any process joins) nobody can notice.
        fs.write(os.path.join(path, reset), "a")
        for rule in policy.exceptions:
            fs.write(os.path.join(path, add), rule.line())

    def join(self, group: str, pid: int = 0) -> None:
        for path in self._dirs(group):
            fs.join_procs(path, pid)

    def procs(self, group: str) -> list[int]:
        found: set[int] = set()
        for path in self._dirs(group):
            found |= fs.procs_tree(path)
        return sorted(found)

    def kill(self, group: str, sig: int = 9) -> None:
        # v1 has no cgroup.kill: one pass of kill(2) over the members. A process forked
        # during the pass can escape it; callers loop until procs() is empty.
        fs.signal_all(self.procs(group), sig)

    def oom_kills(self, group: str) -> int:
        """Sum of memory.oom_control oom_kill over the group and its descendants.

        The kernel counts an OOM kill in the victim's memcg; v2 propagates the count to the
        ancestors, v1 does not, so we add up the subtree to give both the v2 meaning.
        """
        if "memory" not in self.mounts:
            return 0
        from cgroupspy.controllers import MemoryController

        total = 0
        for path in fs.walk(self.paths(group)["memory"]):
            try:
                control = MemoryController(_Dir(path)).oom_control
            except OSError:
                continue  # removed while we walked
            if isinstance(control, dict):  # kernels < 4.13 have no oom_kill line
                total += control.get("oom_kill", 0)
        return total

    def remove(self, group: str) -> None:
        errors: list[CgroupError] = []
        for path in self._dirs(group):
            try:
                fs.rmdir_retry(path)
            except CgroupError as e:
                errors.append(e)
        if errors:
            # Busy in every controller = other pods' groups inside: a caller may expect that.
            kind = CgroupBusy if all(isinstance(e, CgroupBusy) for e in errors) else CgroupError
            raise kind("; ".join(map(str, errors)))

    # -- reading ----------------------------------------------------------------------------

    def read(self, group: str, filename: str) -> str | None:
        """Read by v2 name (translated to the v1 file and format) or by v1 name."""
        paths = self.paths(group)

        def raw(controller: str, name: str) -> str | None:
            if controller not in paths:
                return None
            return fs.read(os.path.join(paths[controller], name), missing_ok=True)

        if filename == "memory.max":
            value = raw("memory", "memory.limit_in_bytes")
            if value is not None and not 0 <= int(value) < _UNLIMITED:
                return "max"
            return value
        if filename == "memory.current":
            return raw("memory", "memory.usage_in_bytes")
        if filename == "memory.peak":
            return raw("memory", "memory.max_usage_in_bytes")
        if filename == "cpu.max":
            quota, period = raw("cpu", "cpu.cfs_quota_us"), raw("cpu", "cpu.cfs_period_us")
            if quota is None or period is None:
                return None
            return f"{'max' if int(quota) < 0 else quota} {period}"
        controller = filename.split(".", 1)[0]
        if controller == "cgroup":  # cgroup.procs etc.: every hierarchy has one; take the first
            controller = next(iter(paths), "")
        return raw(controller, filename)


def _file(ctrl, attr: str) -> str:
    return os.fsdecode(ctrl.filepath(ctrl.get_interface(attr).filename))


def _set(ctrl, attr: str, value: int | None) -> None:
    """Assign a cgroupspy file attribute; errors name the file and the value written."""
    iface = ctrl.get_interface(attr)
    try:
        setattr(ctrl, attr, value)
        if fs.explain.ON:
            fs.explain_write(_file(ctrl, attr), str(iface.sanitize_set(value)))
    except OSError as e:
        path = _file(ctrl, attr)
        raise fs.FileError(
            f"write {str(iface.sanitize_set(value))!r} to {path}: {e.strerror}", path, e.errno
        ) from None


def _set_cfs(cpu, quota: int | None, period: int) -> None:
    """Write cfs_period_us then cfs_quota_us (None -> -1, no quota).

    Order matters: a period smaller than the current one can be refused (EINVAL) because
    old_quota/new_period would exceed the parent's bandwidth. Like runc, we then write the
    quota first and the period after it.
    """
    try:
        _set(cpu, "cfs_period_us", period)
    except fs.FileError as e:
        if e.errno != errno.EINVAL or quota is None:
            raise
        _set(cpu, "cfs_quota_us", quota)
        _set(cpu, "cfs_period_us", period)
        return
    _set(cpu, "cfs_quota_us", quota)
