"""V1Driver against a fake cgroup v1 tree in tmp_path (no root, no kernel).

The fake kernel: mkdir fills a new group with the control files its hierarchy would have,
rmdir refuses (EBUSY) a group with members or children and otherwise drops the files. Its
devices.allow/devices.deny keep devices.list as the kernel does, and every write is logged.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess

import pytest

from minipod.cgroups import CgroupBusy, CgroupError, Limits, devices, fs
from minipod.cgroups.v1 import V1Driver

MI = 1 << 20
GROUP = "minipod.slice/minipod-web.slice/minipod-web-app.scope"

FILES = {
    "memory": {
        "memory.limit_in_bytes": "9223372036854771712",
        "memory.usage_in_bytes": "0",
        "memory.max_usage_in_bytes": "0",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0",
    },
    "cpu": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
    "cpuacct": {"cpuacct.usage": "0"},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
}


REAL_WRITE = fs.write


class FakeV1:
    def __init__(self, base, layout: dict[str, tuple[str, ...]]):
        """layout: mount directory name -> controllers co-mounted there."""
        self.device_writes = []
        self.mounts: dict[str, str] = {}
        self.kinds: dict[str, tuple[str, ...]] = {}
        for dirname, controllers in layout.items():
            path = str(base / dirname)
            os.mkdir(path)
            self.kinds[path] = controllers
            self._fill(path, controllers)
            for c in controllers:
                self.mounts[c] = path

    def _fill(self, path: str, controllers: tuple[str, ...]) -> None:
        for name, content in [("cgroup.procs", ""), ("tasks", "")] + [
            kv for c in controllers for kv in FILES[c].items()
        ]:
            with open(os.path.join(path, name), "w") as f:
                f.write(content)

    def mkdir(self, path: str) -> None:
        if os.path.isdir(path):
            return
        os.mkdir(path)
        mount = next(m for m in self.kinds if path.startswith(m + "/"))
        self._fill(path, self.kinds[mount])
        if "devices" in self.kinds[mount]:  # a new group starts with its parent's rules
            put(os.path.join(path, "devices.list"), cat(os.path.join(os.path.dirname(path), "devices.list")))

    device_writes: list[tuple[str, str]]

    def write(self, path: str, value) -> None:
        """fs.write, with the devices controller's bookkeeping of devices.list."""
        REAL_WRITE(path, value)  # its errors, the file's content
        name, text = os.path.basename(path), str(value)
        if name not in ("devices.allow", "devices.deny"):
            return
        self.device_writes.append((name, text))
        listed = os.path.join(os.path.dirname(path), "devices.list")
        rules = [r for r in cat(listed).split("\n") if r]
        if text == "a":  # "a" sets the default and drops the exceptions
            rules = ["a *:* rwm"] if name == "devices.allow" else []
        elif name == "devices.allow" and rules != ["a *:* rwm"]:
            rules.append(text)
        # (deny exceptions of an allow-all group are not listed: devices.list shows "a *:* rwm")
        put(listed, "\n".join(rules))

    def rmdir(self, path: str) -> None:
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if any(e.is_dir() for e in os.scandir(path)) or fs.pids(path):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        for e in os.scandir(path):
            os.unlink(e.path)
        os.rmdir(path)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    kernel = FakeV1(tmp_path, {"memory": ("memory",), "cpu,cpuacct": ("cpu", "cpuacct"),
                               "pids": ("pids",), "devices": ("devices",)})
    monkeypatch.setattr(fs, "mkdir", kernel.mkdir)
    monkeypatch.setattr(fs, "write", kernel.write)
    monkeypatch.setattr(fs, "rmdir", kernel.rmdir)
    return kernel


def cat(path: str) -> str:
    with open(path) as f:
        return f.read()


def put(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def test_create_writes_each_limit_to_its_v1_file(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP, Limits(memory_max=64 * MI, cpu_quota_us=50000, cpu_shares=512, pids_max=100))
    p = d.paths(GROUP)
    assert cat(f"{p['memory']}/memory.limit_in_bytes") == str(64 * MI)
    assert cat(f"{p['cpu']}/cpu.cfs_quota_us") == "50000"
    assert cat(f"{p['cpu']}/cpu.cfs_period_us") == "100000"
    assert cat(f"{p['cpu']}/cpu.shares") == "512"
    assert cat(f"{p['pids']}/pids.max") == "100"
    # Parents exist in every hierarchy and keep the kernel defaults.
    for mount in fake.mounts.values():
        parent = os.path.join(mount, "minipod.slice", "minipod-web.slice")
        assert os.path.isdir(parent)
    assert cat(f"{fake.mounts['memory']}/minipod.slice/memory.limit_in_bytes") == (
        FILES["memory"]["memory.limit_in_bytes"]
    )


def test_none_means_unlimited_and_shares_untouched(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP, Limits(memory_max=64 * MI, cpu_quota_us=50000, cpu_shares=512, pids_max=9))
    d.set_limits(GROUP, Limits())
    p = d.paths(GROUP)
    assert cat(f"{p['memory']}/memory.limit_in_bytes") == "-1"
    assert cat(f"{p['cpu']}/cpu.cfs_quota_us") == "-1"
    assert cat(f"{p['cpu']}/cpu.shares") == "512"
    assert cat(f"{p['pids']}/pids.max") == "max"


def test_create_is_idempotent(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP, Limits(pids_max=5))
    d.create(GROUP, Limits(pids_max=7))
    assert cat(f"{d.paths(GROUP)['pids']}/pids.max") == "7"


def test_comounted_cpu_cpuacct_share_one_directory(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    p = d.paths(GROUP)
    assert p["cpu"] == p["cpuacct"]
    assert len(d._dirs(GROUP)) == 4
    d.join(GROUP, 4242)
    for path in d._dirs(GROUP):
        assert cat(f"{path}/cgroup.procs") == "4242"


def test_missing_controller_is_skipped_with_reason(tmp_path, monkeypatch):
    kernel = FakeV1(tmp_path, {"memory": ("memory",), "cpu": ("cpu",)})
    monkeypatch.setattr(fs, "mkdir", kernel.mkdir)
    d = V1Driver("/unused", mounts=kernel.mounts)
    assert set(d.skipped) == {"cpuacct", "pids", "devices"}
    assert "pids" in d.skipped["pids"]
    d.create(GROUP, Limits(memory_max=MI, devices=None))  # no pids limit or device rules asked: fine
    assert set(d.paths(GROUP)) == {"memory", "cpu"}
    with pytest.raises(CgroupError, match=r"pids_max=10 on .*no cgroup v1 hierarchy with the pids"):
        d.set_limits(GROUP, Limits(pids_max=10, devices=None))
    # The default device allow-list is asked for unless said otherwise: never dropped silently.
    with pytest.raises(CgroupError, match=r"device rules on .*no cgroup v1 hierarchy with the devices"):
        d.set_limits(GROUP, Limits())
    d.set_limits(GROUP, Limits(devices=devices.ALLOW_ALL))  # allow-all without the controller: so it is


def test_no_managed_controller_at_all_is_an_error():
    with pytest.raises(CgroupError, match="none of memory, cpu, cpuacct, pids, devices"):
        V1Driver("/nowhere", mounts={})


def test_write_error_names_file_and_value(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    p = d.paths(GROUP)
    # A directory where the knob should be: open(O_WRONLY) fails with EISDIR.
    for knob in ("memory.limit_in_bytes", "pids.max"):
        os.unlink(os.path.join(p[knob.split(".")[0]], knob))
        os.mkdir(os.path.join(p[knob.split(".")[0]], knob))
    with pytest.raises(CgroupError) as e:
        d.set_limits(GROUP, Limits(memory_max=32 * MI))
    knob = f"{p['memory']}/memory.limit_in_bytes"
    assert str(e.value) == f"write '33554432' to {knob}: Is a directory"
    os.rmdir(os.path.join(p["memory"], "memory.limit_in_bytes"))
    put(os.path.join(p["memory"], "memory.limit_in_bytes"), "0")
    with pytest.raises(CgroupError, match=rf"^write '100' to {p['pids']}/pids.max: Is a directory"):
        d.set_limits(GROUP, Limits(pids_max=100))


def test_cfs_period_einval_retries_after_quota(fake, monkeypatch):
    """runc's order: if the period is refused (EINVAL), write the quota, then the period."""
    from cgroupspy.controllers import CpuController

    writes: list[tuple[str, str]] = []
    real = CpuController.set_property

    def set_property(self, filename, value):
        name = os.fsdecode(filename)
        writes.append((name, str(value)))
        if name == "cpu.cfs_period_us" and len(writes) == 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(self, filename, value)

    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    monkeypatch.setattr(CpuController, "set_property", set_property)
    d.set_limits(GROUP, Limits(cpu_quota_us=20000, cpu_period_us=50000))
    assert writes == [
        ("cpu.cfs_period_us", "50000"),
        ("cpu.cfs_quota_us", "20000"),
        ("cpu.cfs_period_us", "50000"),
    ]
    assert cat(f"{d.paths(GROUP)['cpu']}/cpu.cfs_period_us") == "50000"


def test_cfs_period_einval_without_quota_is_raised(fake, monkeypatch):
    from cgroupspy.controllers import CpuController

    def set_property(self, filename, value):
        raise OSError(errno.EINVAL, "Invalid argument")

    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    monkeypatch.setattr(CpuController, "set_property", set_property)
    with pytest.raises(CgroupError, match=r"write '50000' to .*/cpu.cfs_period_us: Invalid arg"):
        d.set_limits(GROUP, Limits(cpu_period_us=50000))


def test_shares_clamped_by_kernel_is_an_error(fake, monkeypatch):
    from cgroupspy.controllers import CpuController

    real = CpuController.set_property

    def clamping(self, filename, value):  # what the kernel does with cpu.shares
        if os.fsdecode(filename) == "cpu.shares":
            value = max(2, min(int(value), 262144))
        return real(self, filename, value)

    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    monkeypatch.setattr(CpuController, "set_property", clamping)
    with pytest.raises(CgroupError, match=r"write '1' to .*cpu.shares: kernel kept 2"):
        d.set_limits(GROUP, Limits(cpu_shares=1))


def test_join_writes_pid_or_zero_for_self(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    d.join(GROUP)
    assert {cat(f"{p}/cgroup.procs") for p in d._dirs(GROUP)} == {"0"}


def test_procs_is_the_union_over_controllers_and_descendants(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    d.create(GROUP + "/sub")
    p = d.paths(GROUP)
    put(f"{p['memory']}/cgroup.procs", "10\n11\n")
    put(f"{p['pids']}/cgroup.procs", "11\n12\n")
    put(f"{p['cpu']}/sub/cgroup.procs", "13\n")
    assert d.procs(GROUP) == [10, 11, 12, 13]
    assert d.procs("minipod.slice") == [10, 11, 12, 13]
    assert d.procs("minipod.slice/gone.scope") == []


def test_kill_signals_members_and_ignores_the_dead(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid gives ESRCH
    alive = subprocess.Popen(["sleep", "60"])
    try:
        put(f"{d.paths(GROUP)['memory']}/cgroup.procs", f"{gone.pid}\n{alive.pid}\n")
        d.kill(GROUP, signal.SIGTERM)
        assert alive.wait(timeout=10) == -signal.SIGTERM
    finally:
        if alive.poll() is None:
            alive.kill()
            alive.wait()
    d.kill("minipod.slice/gone.scope")  # nothing there: no error


def test_oom_kills_sums_the_subtree(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    d.create(GROUP + "/sub")
    mem = d.paths(GROUP)["memory"]
    assert d.oom_kills(GROUP) == 0
    put(f"{mem}/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2")
    put(f"{mem}/sub/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1")
    assert d.oom_kills(GROUP) == 3
    assert d.oom_kills("minipod.slice") == 3
    assert d.oom_kills("minipod.slice/gone.scope") == 0


def test_remove_every_hierarchy_idempotent(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    d.remove(GROUP)
    for path in d.paths(GROUP).values():
        assert not os.path.exists(path)
        assert os.path.isdir(os.path.dirname(path))  # the parent stays
    d.remove(GROUP)  # gone = done
    with pytest.raises(CgroupBusy, match="minipod.slice: Device or resource busy"):
        d.remove("minipod.slice")  # busy in every hierarchy: another pod's group is inside
    d.remove("minipod.slice/minipod-web.slice")
    d.remove("minipod.slice")
    for mount in fake.mounts.values():
        assert not os.path.exists(os.path.join(mount, "minipod.slice"))


def test_remove_retries_ebusy_until_members_leave(fake, monkeypatch):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    procs = f"{d.paths(GROUP)['memory']}/cgroup.procs"
    put(procs, "77\n")
    calls = []

    def rmdir(path):
        calls.append(path)
        if len(calls) == 3:
            put(procs, "")  # the last member got reaped
        fake.rmdir(path)

    monkeypatch.setattr(fs, "rmdir", rmdir)
    d.remove(GROUP)
    assert not os.path.exists(d.paths(GROUP)["memory"])
    assert calls.count(d.paths(GROUP)["memory"]) == 3  # EBUSY, EBUSY, then gone


def test_remove_gives_up_on_lasting_ebusy_and_names_members(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    put(f"{d.paths(GROUP)['pids']}/cgroup.procs", "99\n")
    busy = r"rmdir .*/pids/.*: Device or resource busy \(members: \[99\]\)"
    with pytest.raises(CgroupError, match=busy):
        d.remove(GROUP)
    # The other hierarchies were still cleaned up.
    assert not os.path.exists(d.paths(GROUP)["memory"])


def test_read_translates_v2_names(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    assert d.read(GROUP, "memory.max") == "max"
    assert d.read(GROUP, "cpu.max") == "max 100000"
    assert d.read(GROUP, "pids.max") == "max"
    d.set_limits(GROUP, Limits(memory_max=64 * MI, cpu_quota_us=50000, pids_max=100))
    assert d.read(GROUP, "memory.max") == str(64 * MI)
    assert d.read(GROUP, "cpu.max") == "50000 100000"
    assert d.read(GROUP, "pids.max") == "100"
    assert d.read(GROUP, "memory.current") == "0"
    assert d.read(GROUP, "cpu.shares") == "1024"
    assert d.read(GROUP, "cgroup.procs") == ""
    assert d.read(GROUP, "memory.nonexistent") is None
    assert d.read(GROUP, "io.max") is None
    assert d.read("minipod.slice/gone.scope", "memory.max") is None


@pytest.mark.parametrize("bad", ["", "/", "../etc", "a/../../b", "a/./b"])
def test_group_paths_may_not_escape(fake, bad):
    d = V1Driver("/unused", mounts=fake.mounts)
    with pytest.raises(CgroupError, match="invalid cgroup path"):
        d.create(bad)


MOUNTINFO = """\
23 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,relatime shared:10 - cgroup2 cgroup2 rw
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
34 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/cpuset rw,nosuid shared:13 - cgroup cgroup rw,cpuset
36 31 0:33 /docker/abc /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
37 40 0:33 / /mnt/other\\040mem rw,nosuid shared:15 - cgroup cgroup rw,memory
38 31 0:34 / /sys/fs/cgroup/pids rw,nosuid shared:16 master:3 - cgroup cgroup rw,pids
39 40 0:35 / /mnt/cg\\040v1 rw - cgroup cgroup rw,blkio
"""


def test_v1_mount_discovery(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    found = fs.v1_mounts(("memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb"),
                         "/sys/fs/cgroup", str(info))
    assert found == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",  # co-mounted: the real mount point, no symlink
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory",  # preferred over the bind mount outside root
        "pids": "/sys/fs/cgroup/pids",
        "blkio": "/mnt/cg v1",  # \040 unescaped; outside root is still better than nothing
    }
    assert not fs.is_unified("/sys/fs/cgroup", str(info))


# -- devices ------------------------------------------------------------------------------------

DEFAULT_LINES = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm", "c 5:0 rwm",
                 "c 1:5 rwm", "c 1:9 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm"]


def test_default_devices_deny_all_then_allow_each_rule(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)  # Limits() carries the default allow-list
    # Deny first: it drops the rules copied from the parent (allow all), then the exceptions.
    assert fake.device_writes == [("devices.deny", "a")] + [("devices.allow", line) for line in DEFAULT_LINES]
    assert cat(f"{d.paths(GROUP)['devices']}/devices.list").split("\n") == DEFAULT_LINES
    # The parents are not touched: they keep allowing all.
    assert cat(f"{fake.mounts['devices']}/minipod.slice/minipod-web.slice/devices.list") == "a *:* rwm"


def test_devices_already_in_place_are_not_written_again(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP)
    fake.device_writes.clear()
    d.create(GROUP)
    d.set_limits(GROUP, Limits(pids_max=10))
    assert fake.device_writes == []  # no deny-all moment for a group that may be running


def test_allow_all_and_back(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP, Limits(devices=devices.ALLOW_ALL))
    assert fake.device_writes == []  # a new group already allows all (its parent does)
    d.set_limits(GROUP, Limits())
    d.set_limits(GROUP, Limits(devices=devices.ALLOW_ALL))
    assert fake.device_writes[-1] == ("devices.allow", "a")
    assert cat(f"{d.paths(GROUP)['devices']}/devices.list") == "a *:* rwm"


def test_devices_none_leaves_the_group_alone(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create("minipod.slice/minipod-web.slice", Limits(devices=None))
    assert fake.device_writes == []


def test_a_deny_list_allows_all_then_denies_each(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    policy = devices.Policy((devices.Rule("a"), devices.Rule("b", 8, None, "rw", allow=False)))
    d.create(GROUP, Limits(devices=policy))
    d.create(GROUP, Limits(devices=policy))  # devices.list cannot show it: written again
    assert fake.device_writes == [("devices.allow", "a"), ("devices.deny", "b 8:* rw")] * 2


def test_device_write_error_names_file_and_rule(fake):
    d = V1Driver("/unused", mounts=fake.mounts)
    d.create(GROUP, Limits(devices=devices.ALLOW_ALL))
    path = f"{d.paths(GROUP)['devices']}/devices.allow"
    os.unlink(path)
    with pytest.raises(CgroupError, match=rf"^write 'c \*:\* m' to {path}: No such file or directory$"):
        d.set_limits(GROUP, Limits())
