"""cgroups: one interface, one driver per hierarchy (like runc's Manager and youki's trait).

A *group* is a path relative to the hierarchy root, in systemd's naming, e.g.
    "minipod.slice/minipod-web.slice/minipod-web-app.scope"
Drivers:
    cgroupfs-v1  the legacy per-controller trees (memory, cpu, pids, ...)  -> v1.py
    cgroupfs-v2  the unified tree, direct file writes                     -> v2.py
    systemd      transient units over D-Bus                               -> systemd.py
This package is a primitive: it never imports pod code.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from minipod.errors import MinipodError


class CgroupError(MinipodError):
    """A cgroupfs write/read failed; the message names the file and the value."""


class CgroupBusy(CgroupError):
    """remove() of a group that still holds child groups: other pods live in the parent."""


# After CgroupError: devices.py raises it, and imports it from this half-made module.
from minipod.cgroups import devices  # noqa: E402


@dataclass(frozen=True)
class Limits:
    """Resource limits of one group. None = leave unlimited / kernel default.

    devices is the exception: its default is the container allow-list (devices.DEFAULT), so a
    group nobody thought about is safe; devices.ALLOW_ALL is a privileged container's. None
    means "not managed here": the group keeps what it inherits, as the kubelet's SkipDevices
    for pod cgroups; pass it for a pod's slice, whose privileged containers could not get more
    than the slice has (v1 refuses it, v2 and systemd run the slice's filter too).
    """

    memory_max: int | None = None        # bytes
    cpu_quota_us: int | None = None      # CFS quota per period; None = no quota
    cpu_period_us: int = 100_000
    cpu_shares: int | None = None        # v1 shares [2, 262144]; v2 drivers convert to weight
    pids_max: int | None = None
    devices: devices.Policy | None = devices.DEFAULT  # or a name: "default", "allow-all"

    def __post_init__(self) -> None:
        # A plan is JSON: it can carry the policy by name, Limits(**plan_limits) resolves it.
        if isinstance(self.devices, str):
            object.__setattr__(self, "devices", devices.by_name(self.devices))


class Driver(abc.ABC):
    """What the orchestrator needs from a cgroup hierarchy."""

    name: str = ""

    @abc.abstractmethod
    def create(self, group: str, limits: Limits = Limits()) -> None:
        """Create the group (and missing parents) and apply limits. Idempotent."""

    @abc.abstractmethod
    def set_limits(self, group: str, limits: Limits) -> None:
        """Apply limits to an existing group."""

    @abc.abstractmethod
    def join(self, group: str, pid: int = 0) -> None:
        """Move a process (0 = the caller) into the group."""

    @abc.abstractmethod
    def procs(self, group: str) -> list[int]:
        """PIDs in the group and its descendants (empty if the group is gone)."""

    @abc.abstractmethod
    def kill(self, group: str, sig: int = 9) -> None:
        """Signal every process in the group and its descendants."""

    @abc.abstractmethod
    def oom_kills(self, group: str) -> int:
        """How many processes the kernel OOM-killed in this group so far (0 if unknown/gone)."""

    @abc.abstractmethod
    def remove(self, group: str) -> None:
        """Remove the group (a leaf, or a parent whose children are gone). Missing = done.

        Retries briefly on EBUSY: a cgroup stays busy until its last member (zombies included)
        has been reaped.
        """

    @abc.abstractmethod
    def paths(self, group: str) -> dict[str, str]:
        """Absolute directories of the group, by controller ('unified' for v2)."""

    def read(self, group: str, filename: str) -> str | None:
        """Read a control file by its v2 or v1 name (driver decides where); None if absent."""
        return None


# Drivers detected once by the node agent (minipod/agent/server.py): its forks -- the
# commands it serves and the pods it starts -- inherit the answer. Empty in any other process.
_remembered: dict[tuple[str, str], Driver] = {}


def remember(root: str = "/sys/fs/cgroup", kind: str = "auto") -> Driver:
    """detect(), kept for this process and its forks (a driver connects to D-Bus lazily, so a
    fork never shares a connection with its parent)."""
    _remembered[(root, kind)] = driver = detect(root, kind)
    return driver


def detect(root: str = "/sys/fs/cgroup", kind: str = "auto") -> Driver:
    """Pick the driver: 'auto' | 'systemd' | 'cgroupfs' (v1 or v2 by what is mounted)."""
    from minipod.cgroups import fs

    if (root, kind) in _remembered:
        return _remembered[(root, kind)]

    if kind not in ("auto", "systemd", "cgroupfs"):
        raise CgroupError(f"cgroup_driver: unknown driver {kind!r} (auto, systemd, cgroupfs)")
    if kind == "systemd" or (kind == "auto" and fs.systemd_is_init()):
        try:
            from minipod.cgroups.systemd import SystemdDriver
        except ImportError:
            if kind == "systemd":
                raise CgroupError("cgroup_driver systemd is not available in this build") from None
        else:
            return SystemdDriver(root)
    if fs.is_unified(root):
        from minipod.cgroups.v2 import V2Driver

        return V2Driver(root)
    from minipod.cgroups.v1 import V1Driver

    return V1Driver(root)
