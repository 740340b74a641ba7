"""V2Driver against a fake unified tree in tmp_path (no root, no kernel).

The fake kernel: mkdir gives the new group the controllers its parent enabled in
cgroup.subtree_control (and their files), as cgroup v2 does; rmdir refuses (EBUSY) a group
with members or children and otherwise drops the files. bpf(2) is replaced by a log of the
device programs each group was given (tests/integration/test_devices.py uses the real one).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess

import pytest

from minipod.cgroups import CgroupBusy, CgroupError, Limits, bpf, devfilter, devices, detect, fs
from minipod.cgroups.v2 import V2Driver

MI = 1 << 20
GROUP = "minipod.slice/minipod-web.slice/minipod-web-app.scope"
ANCESTORS = ["", "minipod.slice", "minipod.slice/minipod-web.slice"]

COMMON = {
    "cgroup.procs": "",
    "cgroup.subtree_control": "",
    "cgroup.events": "populated 0\nfrozen 0",
    "cgroup.kill": "",
}
FILES = {
    "memory": {
        "memory.max": "max",
        "memory.current": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0",
    },
    "cpu": {"cpu.max": "max 100000", "cpu.weight": "100"},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "io": {"io.max": ""},
}


def cat(path: str) -> str:
    with open(path) as f:
        return f.read()


def put(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class FakeV2:
    def __init__(self, root: str, controllers: str = "cpu io memory pids", enabled: str = ""):
        self.root = root
        self.programs: list[tuple[str, bytes | None]] = []
        os.mkdir(root)
        for name, content in COMMON.items():
            put(os.path.join(root, name), content)
        put(os.path.join(root, "cgroup.controllers"), controllers)
        put(os.path.join(root, "cgroup.subtree_control"), enabled)

    def mkdir(self, path: str) -> None:
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        enabled = sorted(t.lstrip("+") for t in cat(f"{parent}/cgroup.subtree_control").split())
        os.mkdir(path)
        for name, content in COMMON.items():
            put(os.path.join(path, name), content)
        put(os.path.join(path, "cgroup.controllers"), " ".join(enabled))
        for c in enabled:
            for name, content in FILES[c].items():
                put(os.path.join(path, name), content)

    def set_device_program(self, path: str, code: bytes | None) -> None:
        assert os.path.isdir(path)
        self.programs.append((os.path.relpath(path, self.root), code))

    def rmdir(self, path: str) -> None:
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if any(e.is_dir() for e in os.scandir(path)) or fs.pids(path):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        for e in os.scandir(path):
            os.unlink(e.path)
        os.rmdir(path)


def make(tmp_path, monkeypatch, **kw) -> FakeV2:
    kernel = FakeV2(str(tmp_path / "unified"), **kw)
    monkeypatch.setattr(fs, "mkdir", kernel.mkdir)
    monkeypatch.setattr(fs, "rmdir", kernel.rmdir)
    monkeypatch.setattr(bpf, "set_device_program", kernel.set_device_program)
    return kernel


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return make(tmp_path, monkeypatch)


def test_create_enables_controllers_down_to_the_parent(fake):
    d = V2Driver(fake.root)
    d.create(GROUP, Limits(memory_max=64 * MI, cpu_quota_us=50000, cpu_shares=512, pids_max=100))
    for rel in ANCESTORS:
        assert cat(os.path.join(fake.root, rel, "cgroup.subtree_control")) == "+cpu +memory +pids"
    leaf = d.paths(GROUP)["unified"]
    assert leaf == os.path.join(fake.root, GROUP)
    assert cat(f"{leaf}/cgroup.subtree_control") == ""  # the leaf gets processes, not children
    assert cat(f"{leaf}/memory.max") == str(64 * MI)
    assert cat(f"{leaf}/cpu.max") == "50000 100000"
    assert cat(f"{leaf}/cpu.weight") == "20"  # 1 + (512-2)*9999 // 262142
    assert cat(f"{leaf}/pids.max") == "100"
    # Parents are created without limits.
    assert cat(f"{fake.root}/minipod.slice/memory.max") == "max"


def test_none_means_max_and_weight_untouched(fake):
    d = V2Driver(fake.root)
    d.create(GROUP, Limits(memory_max=64 * MI, cpu_quota_us=50000, cpu_shares=512, pids_max=100))
    d.set_limits(GROUP, Limits(cpu_period_us=50000))
    leaf = d.paths(GROUP)["unified"]
    assert cat(f"{leaf}/memory.max") == "max"
    assert cat(f"{leaf}/cpu.max") == "max 50000"
    assert cat(f"{leaf}/cpu.weight") == "20"
    assert cat(f"{leaf}/pids.max") == "max"


def test_only_controllers_the_parent_offers_are_enabled(tmp_path, monkeypatch):
    kernel = make(tmp_path, monkeypatch, controllers="memory pids hugetlb")
    d = V2Driver(kernel.root)
    d.create(GROUP, Limits(memory_max=MI))
    assert cat(f"{kernel.root}/cgroup.subtree_control") == "+memory +pids"
    leaf = d.paths(GROUP)["unified"]
    assert not os.path.exists(f"{leaf}/cpu.max")
    with pytest.raises(CgroupError) as e:
        d.set_limits(GROUP, Limits(cpu_quota_us=50000))
    assert str(e.value) == (
        f"cannot set cpu quota=50000 shares=None on {leaf}: the cpu controller is not enabled "
        "(cgroup.controllers: memory pids)"
    )


def test_no_controllers_at_all_still_makes_groups(tmp_path, monkeypatch):
    """The hybrid layout's cgroup2 mount: groups and membership, but no limits."""
    kernel = make(tmp_path, monkeypatch, controllers="")
    d = V2Driver(kernel.root)
    d.create(GROUP)
    assert cat(f"{kernel.root}/cgroup.subtree_control") == ""  # nothing to enable, no write
    none = r"memory controller is not enabled \(cgroup.controllers: none\)"
    with pytest.raises(CgroupError, match=none):
        d.set_limits(GROUP, Limits(memory_max=MI))


def test_enabled_controllers_are_not_written_again(tmp_path, monkeypatch):
    kernel = make(tmp_path, monkeypatch, enabled="cpu")
    d = V2Driver(kernel.root)
    d.create("a.slice")
    assert cat(f"{kernel.root}/cgroup.subtree_control") == "+memory +pids"  # only what lacked
    put(f"{kernel.root}/cgroup.subtree_control", "cpu memory pids")
    d.create("b.slice/c.scope")
    assert cat(f"{kernel.root}/cgroup.subtree_control") == "cpu memory pids"
    assert cat(f"{kernel.root}/b.slice/cgroup.subtree_control") == "+cpu +memory +pids"


def test_create_is_idempotent(fake):
    d = V2Driver(fake.root)
    d.create(GROUP, Limits(pids_max=5))
    d.create(GROUP, Limits(pids_max=7))
    assert cat(f"{d.paths(GROUP)['unified']}/pids.max") == "7"


def test_write_error_names_file_and_value(fake):
    d = V2Driver(fake.root)
    d.create(GROUP)
    leaf = d.paths(GROUP)["unified"]
    os.unlink(f"{leaf}/memory.max")
    os.mkdir(f"{leaf}/memory.max")
    with pytest.raises(CgroupError) as e:
        d.set_limits(GROUP, Limits(memory_max=32 * MI))
    assert str(e.value) == f"write '33554432' to {leaf}/memory.max: Is a directory"
    assert e.value.errno == errno.EISDIR and e.value.path == f"{leaf}/memory.max"


def test_set_limits_on_a_missing_group_fails_naming_it(fake):
    d = V2Driver(fake.root)
    with pytest.raises(CgroupError, match=r"read .*/gone.scope/cgroup.controllers: No such file"):
        d.set_limits("gone.scope", Limits())


def test_join_procs_recursive(fake):
    d = V2Driver(fake.root)
    d.create(GROUP)
    d.join(GROUP, 4242)
    leaf = d.paths(GROUP)["unified"]
    assert cat(f"{leaf}/cgroup.procs") == "4242"
    d.join(GROUP)
    assert cat(f"{leaf}/cgroup.procs") == "0"  # 0 = the writer itself
    put(f"{leaf}/cgroup.procs", "5\n6\n")
    d.create("minipod.slice/other.scope")
    put(f"{fake.root}/minipod.slice/other.scope/cgroup.procs", "7\n")
    assert d.procs(GROUP) == [5, 6]
    assert d.procs("minipod.slice") == [5, 6, 7]
    assert d.procs("gone.scope") == []


@pytest.fixture
def sleeper():
    p = subprocess.Popen(["sleep", "60"])
    yield p
    if p.poll() is None:
        p.kill()
        p.wait()


def test_kill_uses_cgroup_kill_for_sigkill(fake, sleeper):
    d = V2Driver(fake.root)
    d.create(GROUP)
    leaf = d.paths(GROUP)["unified"]
    put(f"{leaf}/cgroup.procs", f"{sleeper.pid}\n")
    d.kill(GROUP)
    assert cat(f"{leaf}/cgroup.kill") == "1"
    assert sleeper.poll() is None  # the (fake) kernel did the killing, not kill(2)


def test_kill_other_signals_go_to_each_pid(fake, sleeper):
    d = V2Driver(fake.root)
    d.create(GROUP)
    leaf = d.paths(GROUP)["unified"]
    dead = subprocess.Popen(["true"])
    dead.wait()
    put(f"{leaf}/cgroup.procs", f"{dead.pid}\n{sleeper.pid}\n")
    d.kill(GROUP, signal.SIGTERM)
    assert sleeper.wait(timeout=10) == -signal.SIGTERM
    assert cat(f"{leaf}/cgroup.kill") == ""


def test_kill_without_cgroup_kill_falls_back_to_kill2(fake, sleeper):
    d = V2Driver(fake.root)
    d.create(GROUP)
    leaf = d.paths(GROUP)["unified"]
    os.unlink(f"{leaf}/cgroup.kill")  # Linux < 5.14
    put(f"{leaf}/cgroup.procs", f"{sleeper.pid}\n")
    d.kill(GROUP)
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    d.kill("gone.scope")  # gone = nothing to do


def test_oom_kills_reads_memory_events(fake):
    d = V2Driver(fake.root)
    d.create(GROUP)
    leaf = d.paths(GROUP)["unified"]
    assert d.oom_kills(GROUP) == 0
    put(f"{leaf}/memory.events", "low 0\nhigh 0\nmax 9\noom 3\noom_kill 2\noom_group_kill 0\n")
    assert d.oom_kills(GROUP) == 2
    assert d.oom_kills("gone.scope") == 0


def test_remove_idempotent_and_retries_ebusy(fake, monkeypatch):
    d = V2Driver(fake.root)
    d.create(GROUP)
    leaf = d.paths(GROUP)["unified"]
    put(f"{leaf}/cgroup.procs", "77\n")
    calls = []

    def rmdir(path):
        calls.append(path)
        if len(calls) == 2:
            put(f"{leaf}/cgroup.procs", "")  # reaped
        fake.rmdir(path)

    monkeypatch.setattr(fs, "rmdir", rmdir)
    d.remove(GROUP)
    assert calls == [leaf, leaf] and not os.path.exists(leaf)
    d.remove(GROUP)
    with pytest.raises(CgroupBusy, match=r"rmdir .*/minipod.slice: Device or resource busy"):
        d.remove("minipod.slice")  # still has a child
    d.remove("minipod.slice/minipod-web.slice")
    d.remove("minipod.slice")
    assert [e.name for e in os.scandir(fake.root) if e.is_dir()] == []


def test_read_plain_file(fake):
    d = V2Driver(fake.root)
    d.create(GROUP, Limits(memory_max=MI))
    assert d.read(GROUP, "memory.max") == str(MI)
    assert d.read(GROUP, "memory.nope") is None
    assert d.read("gone.scope", "memory.max") is None


MOUNTINFO_V2 = """\
23 28 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
32 23 0:29 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""


def test_is_unified_uses_the_visible_mount(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO_V2)
    assert fs.is_unified("/sys/fs/cgroup", str(info))  # cgroup2 over the tmpfs: visible
    info.write_text("\n".join(reversed(MOUNTINFO_V2.splitlines())))
    assert not fs.is_unified("/sys/fs/cgroup", str(info))
    assert not fs.is_unified("/sys", str(info))


def test_systemd_is_init(tmp_path):
    assert not fs.systemd_is_init(str(tmp_path / "run/systemd/system"))
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    assert fs.systemd_is_init(str(tmp_path / "run/systemd/system"))


def test_detect_picks_v2_on_a_cgroup2_root(tmp_path, monkeypatch):
    monkeypatch.setattr(fs, "systemd_is_init", lambda: False)
    monkeypatch.setattr(fs, "is_unified", lambda root: root == str(tmp_path))
    d = detect(str(tmp_path), kind="cgroupfs")
    assert d.name == "cgroupfs-v2" and d.root == str(tmp_path)
    with pytest.raises(CgroupError, match="unknown driver 'cgroupv3'"):
        detect(str(tmp_path), kind="cgroupv3")


def test_kill_of_a_group_that_vanishes_meanwhile_is_a_no_op(fake, monkeypatch):
    """systemd removes an emptied scope's cgroup on its own: the kill that races it must not
    fail (it did, and took the supervisor down, in the systemd guest)."""
    d = V2Driver(fake.root)
    d.create(GROUP)

    def gone(path, value):
        raise fs.FileError(f"write {value!r} to {path}: No such file or directory", path,
                           errno.ENOENT)

    monkeypatch.setattr(fs, "write", gone)
    d.kill(GROUP, signal.SIGKILL)  # no exception
    monkeypatch.setattr(fs, "write", lambda path, value: (_ for _ in ()).throw(
        fs.FileError(f"write to {path}: Permission denied", path, errno.EACCES)))
    with pytest.raises(fs.FileError):
        d.kill(GROUP, signal.SIGKILL)


def test_devices_attach_the_policy_program_to_the_group_only(fake):
    d = V2Driver(fake.root)
    d.create(GROUP)  # Limits() carries the default allow-list
    default = devfilter.assemble(devfilter.program(devices.DEFAULT))
    assert fake.programs == [(GROUP, default)]  # not to the ancestors
    d.set_limits(GROUP, Limits(devices=devices.ALLOW_ALL))
    assert fake.programs[-1] == (GROUP, None)  # allow-all: no program
    d.set_limits(GROUP, Limits(devices=None))
    assert len(fake.programs) == 2  # None: not managed, left as it is
