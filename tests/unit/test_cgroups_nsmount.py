"""The container's /sys/fs/cgroup layout, read from the host's mountinfo."""

from __future__ import annotations

from minipod.cgroups import nsmount
from minipod.cgroups.nsmount import Hierarchy

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices")

# Debian 11 style v1: cpu and cpuacct co-mounted behind symlinks, plus hierarchies minipod does
# not place containers in (cpuset, name=systemd) and the hybrid's unified tree.
V1 = """\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
31 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
32 25 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:16 - cgroup cgroup rw,memory
33 25 0:31 / /sys/fs/cgroup/cpuset rw,nosuid shared:17 - cgroup cgroup rw,cpuset
34 25 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:18 - cgroup cgroup rw,pids
35 25 0:33 / /sys/fs/cgroup/devices rw,nosuid shared:19 - cgroup cgroup rw,devices
"""

V2 = "25 30 0:23 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_v1_mounts_the_hierarchies_containers_are_placed_in_with_runcs_symlinks(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(V1)
    assert nsmount.layout("/sys/fs/cgroup", CONTROLLERS, str(info)) == [
        Hierarchy("cpu,cpuacct", "cpu,cpuacct", ("cpu", "cpuacct")),
        Hierarchy("memory", "memory", ()),
        Hierarchy("pids", "pids", ()),
        Hierarchy("devices", "devices", ()),
    ]


def test_v2_is_one_cgroup2_mount(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(V2)
    assert nsmount.layout("/sys/fs/cgroup", CONTROLLERS, str(info)) is None
