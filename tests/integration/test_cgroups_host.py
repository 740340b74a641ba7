"""The cgroup drivers against the real kernel (root): limits land in the real files, a process
joins, shows up, is killed, and every directory is gone afterwards; a memory limit OOM-kills.

Every test names its groups minipodtest-<random> and checks the host for leftovers. Children
we move are killed and reaped before the groups are removed.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys

import pytest

from minipod.cgroups import CgroupError, Driver, Limits, detect, fs
from minipod.cgroups.v2 import V2Driver

MI = 1 << 20
CGROUP_ROOT = "/sys/fs/cgroup"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups"),
]


def host_listing() -> set[str]:
    """Entries of /sys/fs/cgroup and of each directory in it (each v1 hierarchy's top)."""
    found = set()
    for entry in os.scandir(CGROUP_ROOT):
        found.add(entry.path)
        if entry.is_dir(follow_symlinks=False):
            found.update(e.path for e in os.scandir(entry.path) if e.is_dir())
    return found


def cgroup2_mounts() -> list[str]:
    return [p for p, kind, _ in fs.mounts() if kind == "cgroup2"]


def v2_with_memory() -> str | None:
    for point in cgroup2_mounts():
        if "memory" in (fs.read(f"{point}/cgroup.controllers", missing_ok=True) or "").split():
            return point
    return None


def v2_without_controllers() -> str | None:
    for point in cgroup2_mounts():
        if os.access(f"{point}/cgroup.procs", os.W_OK):
            return point
    return None


@pytest.fixture
def names():
    """(slice, scope) with a random token; asserts the host has none of it before and after."""
    token = f"minipodtest_{secrets.token_hex(4)}"  # no "-": systemd would nest a slice by it
    ours = lambda: {p for p in host_listing() if token in p}  # noqa: E731
    before = host_listing()
    assert ours() == set()
    yield f"{token}.slice", f"{token}.slice/{token}-x.scope"
    left = {p for p in host_listing() - before if token in p}
    assert left == set(), f"cgroup directories left behind: {sorted(left)}"


def own_cgroup_lines(pid: int) -> list[tuple[set[str], str]]:
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        out.append((set(controllers.split(",")) if controllers else {""}, path))
    return out


def lifecycle(d: Driver, parent: str, group: str, limits: Limits) -> dict[str, str]:
    """create -> join a sleep -> procs -> kill -> reap -> remove; returns what the kernel
    reported for the child's cgroups while it was a member."""
    d.create(group, limits)
    paths = d.paths(group)
    for path in paths.values():
        assert os.path.isdir(path)
    child = subprocess.Popen(["sleep", "300"])
    try:
        d.join(group, child.pid)
        assert child.pid in d.procs(group)
        assert child.pid in d.procs(parent)  # recursive
        seen = {}
        for controllers, path in own_cgroup_lines(child.pid):
            for c in controllers:
                seen[c] = path
        d.kill(group)
        assert child.wait(timeout=30) == -signal.SIGKILL
        assert d.procs(group) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        d.remove(group)
        d.remove(parent)
    for path in list(paths.values()) + list(d.paths(parent).values()):
        assert not os.path.exists(path)
    d.remove(group)  # gone = done
    return seen


FULL = Limits(memory_max=64 * MI, cpu_quota_us=50000, cpu_shares=512, pids_max=100)


def assert_limits_on_disk(d: Driver, group: str) -> None:
    p = d.paths(group)
    read = lambda c, name: fs.read(os.path.join(p[c], name))  # noqa: E731
    if "unified" in p:
        assert read("unified", "memory.max") == str(64 * MI)
        assert read("unified", "cpu.max") == "50000 100000"
        assert read("unified", "cpu.weight") == "20"
        assert read("unified", "pids.max") == "100"
    else:
        assert read("memory", "memory.limit_in_bytes") == str(64 * MI)
        assert read("cpu", "cpu.cfs_quota_us") == "50000"
        assert read("cpu", "cpu.cfs_period_us") == "100000"
        assert read("cpu", "cpu.shares") == "512"
        assert read("pids", "pids.max") == "100"
    # The driver-neutral reading agrees.
    assert d.read(group, "memory.max") == str(64 * MI)
    assert d.read(group, "cpu.max") == "50000 100000"
    assert d.read(group, "pids.max") == "100"


def limits_then_lifecycle(d: Driver, parent: str, group: str) -> None:
    try:
        d.create(group, FULL)
        assert_limits_on_disk(d, group)
    except BaseException:
        d.remove(group)
        d.remove(parent)
        raise
    seen = lifecycle(d, parent, group, FULL)
    expected = "/" + group
    if "unified" in d.paths(group):
        assert seen[""] == expected
    else:
        for controller in d.paths(group):
            assert seen[controller] == expected, (controller, seen)


def oom(d: Driver, parent: str, group: str) -> None:
    """A child in a 16Mi group that touches 64Mi is OOM-killed and the kill is counted."""
    d.create(group, Limits(memory_max=16 * MI))
    # The child starts (and is charged for the interpreter) outside, waits to be moved,
    # then allocates: only the new pages are charged to the group.
    code = "import sys; sys.stdin.read(1); b = b'x' * (64 << 20); print('survived')"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    try:
        d.join(group, child.pid)
        assert d.oom_kills(group) == 0
        out, _ = child.communicate(b"g", timeout=60)
        assert child.returncode == -signal.SIGKILL, out
        assert out == b""
        assert d.oom_kills(group) >= 1
        assert d.oom_kills(parent) >= 1  # counted for the ancestors too
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        d.remove(group)
        d.remove(parent)


def test_detected_driver_applies_limits_and_tracks_a_process(names):
    d = detect(CGROUP_ROOT)
    if d.name == "systemd":
        # A transient scope exists only once it has a process, so limits can't be read
        # before join(): test_cgroups_systemd_host.py checks them on running units.
        pytest.skip("systemd driver: covered by test_cgroups_systemd_host.py")
    limits_then_lifecycle(d, *names)


def test_detected_driver_memory_limit_oom_kills(names):
    d = detect(CGROUP_ROOT)
    if "memory" not in d.paths(names[1]) and "unified" not in d.paths(names[1]):
        pytest.skip(f"{d.name}: no memory controller")
    oom(d, *names)


@pytest.mark.cgroup2
def test_v2_limits_and_lifecycle(names):
    root = v2_with_memory()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy with the memory controller on this host")
    limits_then_lifecycle(V2Driver(root), *names)


@pytest.mark.cgroup2
def test_v2_oom_kills(names):
    root = v2_with_memory()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy with the memory controller on this host")
    oom(V2Driver(root), *names)


def test_v2_membership_and_cgroup_kill_without_controllers(names):
    """Any cgroup2 mount (the hybrid layout's, with no controllers, will do): groups,
    membership, cgroup.kill and removal work; a limit is refused with a reason."""
    root = v2_without_controllers()
    if root is None:
        pytest.skip("no writable cgroup2 mount on this host")
    d = V2Driver(root)
    parent, group = names
    if "memory" not in (fs.read(f"{root}/cgroup.controllers") or "").split():
        d.create(group)
        try:
            with pytest.raises(CgroupError, match="memory controller is not enabled"):
                d.set_limits(group, Limits(memory_max=16 * MI))
        finally:
            d.remove(group)
            d.remove(parent)
    seen = lifecycle(d, parent, group, Limits())
    assert seen[""] == f"/{group}"
