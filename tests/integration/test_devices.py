"""Device rules against the real kernel, on every driver this machine has: a process in a group
with the default allow-list cannot read or write a disk, even through a node it was handed or
made itself; /dev/null and ptys work; in an allow-all group the same node reads and writes.

The disk is the test's own: a loop device over a 1 MiB file, and a node for it (b 7:N) made in
the test's temporary directory, like one an image layer could ship. Both are removed afterwards,
and so is every group (checked). Drivers:
    cgroupfs-v1  the devices hierarchy (this build host: hybrid layout)
    cgroupfs-v2  a BPF program on a cgroup2 group (any cgroup2 mount: the hybrid layout's empty
                 /sys/fs/cgroup/unified here, /sys/fs/cgroup in the VM)
    systemd      DevicePolicy=/DeviceAllow= on a transient scope (the VM: tests/vm/run.sh)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys

import pytest
from conftest import DISK

from minipod.cgroups import CgroupError, Driver, Limits, devices, fs
from minipod.cgroups.systemd import SystemdDriver
from minipod.cgroups.v1 import V1Driver
from minipod.cgroups.v2 import V2Driver

ROOT = "/sys/fs/cgroup"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroups, loop devices and mknod"),
]

# Runs in the group; waits for a byte on stdin (the parent moves it in first), then reports
# what each attempt gave: "ok", what it read, or the errno's name.
PROBE = r"""
import errno, json, os, stat, sys
sys.stdin.buffer.read(1)
node, new_node, major, minor = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def attempt(f):
    try:
        return f()
    except OSError as e:
        return errno.errorcode[e.errno]

def read(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 18).decode(errors="replace")
    finally:
        os.close(fd)

def write(path):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, b"written")
        return "ok"
    finally:
        os.close(fd)

def pty():
    for fd in os.openpty():  # /dev/ptmx (5:2), then /dev/pts/N (136:N)
        os.close(fd)
    return "ok"

def mknod():
    os.mknod(new_node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
    return "ok"

print(json.dumps({
    "null": attempt(lambda: write("/dev/null") and read("/dev/null") == "" and "ok"),
    "zero": attempt(lambda: read("/dev/zero") == "\0" * 18 and "ok"),
    "pty": attempt(pty),
    "read": attempt(lambda: read(node)),
    "write": attempt(lambda: write(node)),
    "mknod": attempt(mknod),
    "read_own_node": attempt(lambda: read(new_node)),
}))
"""


def writable_cgroup2() -> str | None:
    for point, kind, _ in fs.mounts():
        if kind == "cgroup2" and os.access(f"{point}/cgroup.procs", os.W_OK):
            return point
    return None


def systemctl(*args: str) -> str:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True).stdout


def units(token: str) -> list[str]:
    out = systemctl("list-units", "--all", "--plain", "--no-legend", f"{token}*")
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cgroup_dirs(token: str) -> list[str]:
    found = []
    for dirpath, dirnames, _ in os.walk(ROOT):
        found += [os.path.join(dirpath, d) for d in dirnames if token in d]
        dirnames[:] = [d for d in dirnames if d.endswith(".slice") or dirpath == ROOT]
    return found


@pytest.fixture(params=["cgroupfs-v1", "cgroupfs-v2", "systemd"])
def driver(request):
    """(driver, pod slice, container scope): the driver under test and unique group names."""
    kind = request.param
    if kind == "cgroupfs-v1":
        if fs.is_unified(ROOT) or "devices" not in fs.v1_mounts(("devices",), ROOT):
            pytest.skip("no cgroup v1 devices hierarchy")
        d: Driver = V1Driver(ROOT)
    elif kind == "cgroupfs-v2":
        root = writable_cgroup2()
        if root is None:
            pytest.skip("no writable cgroup2 mount")
        d = V2Driver(root)
    else:
        if not fs.systemd_is_init() or not fs.is_unified(ROOT):
            pytest.skip("needs systemd as PID 1 on cgroup v2 (tests/vm/run.sh)")
        d = SystemdDriver(ROOT)
    token = f"minipodtest_{secrets.token_hex(4)}"  # no "-": systemd would nest a slice by it
    assert cgroup_dirs(token) == []
    yield d, f"{token}.slice", f"{token}.slice/{token}-ctr.scope"
    assert cgroup_dirs(token) == [], "cgroups left behind"
    if kind == "systemd":
        assert units(token) == [], "units left behind"


def probe(d: Driver, pod: str, group: str, policy: devices.Policy, disk, tmp_path) -> dict:
    """Run PROBE in `group` (under the pod slice, which does not manage devices); remove both."""
    node, major, minor = disk
    new_node = str(tmp_path / "made-inside")
    d.create(pod, Limits(devices=None))
    try:
        d.create(group, Limits(devices=policy))
        child = subprocess.Popen([sys.executable, "-c", PROBE, node, new_node, str(major), str(minor)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            d.join(group, child.pid)
            out, _ = child.communicate(b"g", timeout=60)
            assert child.returncode == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            d.remove(group)
    finally:
        d.remove(pod)
        if os.path.lexists(new_node):
            os.unlink(new_node)
    got = json.loads(out)
    with open(node, "rb") as f:  # from outside the group: what the disk holds now
        got["disk_after"] = f.read(len(DISK)).decode()
    return got


def test_default_allow_list_keeps_the_disk_out_of_reach(driver, disk, tmp_path):
    got = probe(*driver, devices.DEFAULT, disk, tmp_path)
    assert got == {
        "null": "ok", "zero": "ok", "pty": "ok",
        # The node exists and we are root, but the group may not open it.
        "read": "EPERM", "write": "EPERM",
        # As with runc: mknod of any node is allowed (c *:* m, b *:* m), opening it is not.
        "mknod": "ok", "read_own_node": "EPERM",
        "disk_after": DISK.decode(),
    }


def test_allow_all_reads_and_writes_the_same_disk(driver, disk, tmp_path):
    got = probe(*driver, devices.ALLOW_ALL, disk, tmp_path)
    assert got == {
        "null": "ok", "zero": "ok", "pty": "ok",
        "read": DISK.decode(), "write": "ok",
        # The node made inside reaches the same disk, and shows the write.
        "mknod": "ok", "read_own_node": "written" + DISK.decode()[7:],
        "disk_after": "written" + DISK.decode()[7:],
    }


def test_v1_a_restricted_parent_refuses_an_allow_all_child(driver):
    """Why a pod's slice must not get the allow-list: its privileged containers could not
    get more (v1 says so; v2 and systemd would silently run the slice's filter too)."""
    d, pod, group = driver
    if d.name != "cgroupfs-v1":
        pytest.skip("v1 only: the others cannot refuse it")
    d.create(pod, Limits())
    try:
        with pytest.raises(CgroupError, match=r"write 'a' to .*devices.allow: Operation not permitted"):
            d.create(group, Limits(devices=devices.ALLOW_ALL))
    finally:
        d.remove(group)
        d.remove(pod)
