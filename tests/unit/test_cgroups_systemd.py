"""The systemd driver against a fake systemd: exact D-Bus calls and properties, unit lifecycle.

The fake plays systemd's manager (transient units, jobs, UnitExists/NoSuchUnit, collection of
inactive units) and makes or removes each unit's cgroup directory in a temporary tree, which the
driver then reads through the real v2 file driver.
"""

from __future__ import annotations

import os
import shutil

import pytest

from minipod.cgroups import CgroupError, Limits, devices
from minipod.cgroups.systemd import (
    INFINITY,
    NO_SUCH_UNIT,
    UNIT_EXISTS,
    BusError,
    SystemdDriver,
    quota_per_sec,
    slice_path,
    unit_of,
    unit_properties,
)
from minipod.cgroups.v2 import V2Driver

POD = "minipod.slice/minipod-web.slice"
APP = "minipod.slice/minipod-web.slice/minipod-web-app.scope"
ACCOUNTING = [
    ("MemoryAccounting", ("b", True)),
    ("CPUAccounting", ("b", True)),
    ("TasksAccounting", ("b", True)),
]
UNLIMITED = ACCOUNTING + [
    ("MemoryMax", ("t", INFINITY)),
    ("CPUQuotaPerSecUSec", ("t", INFINITY)),
    ("CPUQuotaPeriodUSec", ("t", 100000)),
    ("TasksMax", ("t", INFINITY)),
]
# devices.DEFAULT in systemd's words: strict, then the allow-list.
DEFAULT_DEVICES = [
    ("DeviceAllow", ("a(ss)", [])),
    ("DevicePolicy", ("s", "strict")),
    ("DeviceAllow", ("a(ss)", [
        ("char-*", "m"), ("block-*", "m"),
        ("/dev/char/1:3", "rwm"), ("/dev/char/1:8", "rwm"), ("/dev/char/1:7", "rwm"),
        ("/dev/char/5:0", "rwm"), ("/dev/char/1:5", "rwm"), ("/dev/char/1:9", "rwm"),
        ("char-136", "rwm"), ("/dev/char/5:2", "rwm"), ("/dev/char/10:200", "rwm"),
    ])),
]


class FakeSystemd:
    """Just enough of org.freedesktop.systemd1.Manager, with cgroups in a temporary tree."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.calls: list[tuple] = []
        self.units: dict[str, dict] = {}  # name -> {"state", "result", "path"}
        self.job_result = "done"
        self._jobs = 0

    def _job(self) -> tuple[str]:
        self._jobs += 1
        return (f"/org/freedesktop/systemd1/job/{self._jobs}",)

    def _unit(self, name: str) -> dict:
        if name not in self.units:
            raise BusError(NO_SUCH_UNIT, f"Unit {name} not loaded.")
        return self.units[name]

    def call(self, method: str, signature: str, *args):
        self.calls.append((method, signature, *args))
        if method == "StartTransientUnit":
            name, _mode, props, _aux = args
            if name in self.units:
                raise BusError(UNIT_EXISTS, f"Unit {name} was already loaded or has a fragment file.")
            p = dict(props)
            if name.endswith(".slice"):
                rel = slice_path(name)
            else:
                rel = slice_path(p["Slice"][1]) + "/" + name
            path = os.path.join(self.root, rel)
            os.makedirs(path, exist_ok=True)
            pids = p.get("PIDs", ("au", []))[1]
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write("".join(f"{pid}\n" for pid in pids))
            self.units[name] = {"state": "active", "result": "success", "path": path}
            return self._job()
        if method == "StopUnit":
            unit = self._unit(args[0])
            shutil.rmtree(unit["path"], ignore_errors=True)
            if unit["state"] != "failed":
                del self.units[args[0]]  # an inactive transient unit is collected at once
            return self._job()
        if method == "ResetFailedUnit":
            if self._unit(args[0])["state"] == "failed":
                del self.units[args[0]]
            return ()
        if method == "SetUnitProperties":
            self._unit(args[0])
            return ()
        raise AssertionError(f"unexpected call {method}")

    def wait_job(self, job: str, timeout: float) -> str:
        self.calls.append(("wait_job", job))
        return self.job_result

    def unit_property(self, unit: str, interface: str, name: str):
        u = self.units.get(unit)
        if u is None:
            return None
        return {"ActiveState": u["state"], "Result": u["result"]}[name]

    def methods(self) -> list[str]:
        return [c[0] for c in self.calls]

    def fail(self, name: str, result: str) -> None:
        """What systemd does when a scope fails (e.g. OOM): stop it, remove its cgroup."""
        shutil.rmtree(self.units[name]["path"], ignore_errors=True)
        self.units[name].update(state="failed", result=result)


@pytest.fixture
def fake(tmp_path):
    return FakeSystemd(str(tmp_path))


@pytest.fixture
def driver(fake, tmp_path):
    d = SystemdDriver(str(tmp_path), bus=fake, files=V2Driver(str(tmp_path)), unified=True)
    d.busy_timeout = 0.05
    d.gone_timeout = 0.05
    return d


# --- names and conversions ---


def test_slice_path_nests_on_every_dash():
    assert slice_path("minipod.slice") == "minipod.slice"
    assert slice_path("minipod-web.slice") == "minipod.slice/minipod-web.slice"
    assert slice_path("a-b-c.slice") == "a.slice/a-b.slice/a-b-c.slice"


def test_unit_of_maps_the_last_component():
    assert unit_of("minipod.slice") == ("minipod.slice", "-.slice")
    assert unit_of(POD) == ("minipod-web.slice", "minipod.slice")
    assert unit_of(APP) == ("minipod-web-app.scope", "minipod-web.slice")


@pytest.mark.parametrize(
    "group, why",
    [
        ("minipod.slice/minipod-my-pod.slice", "not where systemd puts"),  # '-' means nesting
        ("other.slice/minipod-web.slice", "not where systemd puts"),
        ("minipod.slice/web", "not a slice or scope"),
        ("minipod.slice/we b.scope", "not a slice or scope"),
        ("minipod.slice/minipod-web.slice/a.scope/b.scope", "must be inside a slice"),
        ("", "empty"),
    ],
)
def test_unit_of_refuses_groups_systemd_would_put_elsewhere(group, why):
    with pytest.raises(CgroupError, match=why):
        unit_of(group)


def test_quota_per_sec():
    assert quota_per_sec(50_000, 100_000) == 500_000  # 500m
    assert quota_per_sec(1000, 100_000) == 10_000  # the kubelet's minimum quota
    assert quota_per_sec(1, 3) == 333_334  # rounded up, never less CPU than asked


def test_unit_properties_of_a_limited_group():
    props = unit_properties(Limits(memory_max=64 << 20, cpu_quota_us=50_000, cpu_shares=512, pids_max=100))
    assert props == ACCOUNTING + [
        ("MemoryMax", ("t", 67108864)),
        ("CPUQuotaPerSecUSec", ("t", 500_000)),
        ("CPUQuotaPeriodUSec", ("t", 100_000)),
        ("TasksMax", ("t", 100)),
        ("CPUWeight", ("t", 20)),  # runc's linear map: 1 + (512-2)*9999/262142
    ] + DEFAULT_DEVICES


def test_unit_properties_unlimited_is_infinity():
    assert unit_properties(Limits()) == UNLIMITED + DEFAULT_DEVICES
    assert unit_properties(Limits(devices=None)) == UNLIMITED
    assert dict(unit_properties(Limits(pids_max=-1)))["TasksMax"] == ("t", INFINITY)


def test_unit_properties_on_the_legacy_hierarchy_use_v1_names():
    props = dict(unit_properties(Limits(memory_max=1 << 30, cpu_shares=1024), unified=False))
    assert props["MemoryLimit"] == ("t", 1 << 30)
    assert props["CPUShares"] == ("t", 1024)
    assert "MemoryMax" not in props and "CPUWeight" not in props


# --- lifecycle ---


def test_create_slice_starts_a_transient_unit_and_waits_for_its_job(driver, fake, tmp_path):
    driver.create(POD, Limits(memory_max=64 << 20, devices=None))  # a pod's slice: devices not managed
    assert fake.calls == [
        (
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            "minipod-web.slice",
            "fail",
            [("Description", ("s", f"minipod {POD}")), ("CollectMode", ("s", "inactive-or-failed"))]
            + ACCOUNTING
            + [
                ("MemoryMax", ("t", 67108864)),
                ("CPUQuotaPerSecUSec", ("t", INFINITY)),
                ("CPUQuotaPeriodUSec", ("t", 100000)),
                ("TasksMax", ("t", INFINITY)),
            ],
            [],
        ),
        ("wait_job", "/org/freedesktop/systemd1/job/1"),
    ]
    assert os.path.isdir(tmp_path / POD)


def test_create_of_an_existing_slice_updates_its_limits(driver, fake):
    driver.create("minipod.slice")
    driver.create("minipod.slice", Limits(pids_max=50))
    assert fake.methods() == ["StartTransientUnit", "wait_job", "StartTransientUnit", "SetUnitProperties"]
    assert fake.calls[-1] == (
        "SetUnitProperties", "sba(sv)", "minipod.slice", True, unit_properties(Limits(pids_max=50))
    )


def test_create_scope_only_records_limits_join_starts_it(driver, fake, tmp_path):
    driver.create(POD)
    fake.calls.clear()
    driver.create(APP, Limits(memory_max=64 << 20, cpu_quota_us=50_000))
    assert fake.calls == []
    driver.join(APP, 4242)
    assert fake.calls == [
        (
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            "minipod-web-app.scope",
            "fail",
            [
                ("Description", ("s", f"minipod {APP}")),
                ("Slice", ("s", "minipod-web.slice")),
                ("PIDs", ("au", [4242])),
            ]
            + unit_properties(Limits(memory_max=64 << 20, cpu_quota_us=50_000)),
            [],
        ),
        ("wait_job", "/org/freedesktop/systemd1/job/2"),
    ]
    assert driver.procs(APP) == [4242]
    assert driver.paths(APP) == {"unified": str(tmp_path / APP)}


def test_a_scope_gets_its_device_policy_when_join_starts_it(driver, fake):
    driver.create(APP)
    driver.join(APP, 4242)
    props = fake.calls[0][4]
    assert props[-len(DEFAULT_DEVICES):] == DEFAULT_DEVICES
    # Privileged: allow-all, also on a running scope (the old entries are cleared first).
    driver.set_limits(APP, Limits(devices=devices.ALLOW_ALL))
    assert fake.calls[-1][:4] == ("SetUnitProperties", "sba(sv)", "minipod-web-app.scope", True)
    assert fake.calls[-1][4][-2:] == [("DeviceAllow", ("a(ss)", [])), ("DevicePolicy", ("s", "auto"))]


def test_join_zero_means_the_caller(driver, fake):
    driver.join(APP)
    assert dict(fake.calls[0][4])["PIDs"] == ("au", [os.getpid()])


def test_join_into_a_running_scope_writes_its_cgroup_procs(driver, fake, tmp_path):
    # `minipod exec`: systemd's AttachProcessesToUnit refuses non-delegated scopes, so the
    # process is written into the scope's cgroup.procs, as runc exec does.
    driver.create(APP, Limits(memory_max=64 << 20))
    driver.join(APP, 10)
    fake.calls.clear()
    driver.join(APP, 11)  # the limits this driver was given, set again: harmless
    assert fake.methods() == ["StartTransientUnit", "SetUnitProperties"]
    assert ("MemoryMax", ("t", 64 << 20)) in fake.calls[-1][4]
    assert (tmp_path / APP / "cgroup.procs").read_text() == "11"  # the fake file, overwritten


def test_an_exec_joining_a_running_scope_leaves_its_limits_alone(driver, fake, tmp_path):
    # A new process (`minipod exec`) has a driver that was never told the scope's limits:
    # setting its defaults would be MemoryMax=infinity, the container's limit lifted.
    driver.create(APP, Limits(memory_max=64 << 20))
    driver.join(APP, 10)
    fake.calls.clear()
    other = SystemdDriver(str(tmp_path), bus=fake, files=V2Driver(str(tmp_path)), unified=True)
    other.join(APP, 11)
    assert fake.methods() == ["StartTransientUnit"]  # refused (UnitExists), then no update
    assert (tmp_path / APP / "cgroup.procs").read_text() == "11"


def test_join_replaces_a_failed_scope(driver, fake):
    driver.join(APP, 10)
    fake.fail("minipod-web-app.scope", "oom-kill")
    fake.calls.clear()
    driver.join(APP, 11)
    assert fake.methods() == ["StartTransientUnit", "ResetFailedUnit", "StartTransientUnit", "wait_job"]
    assert driver.procs(APP) == [11]


def test_join_a_slice_is_refused(driver, fake):
    with pytest.raises(CgroupError, match="only a .scope holds processes"):
        driver.join(POD, 10)
    assert fake.calls == []


def test_set_limits_before_join_is_kept_for_join(driver, fake):
    driver.set_limits(APP, Limits(pids_max=7))
    assert fake.calls == []
    driver.join(APP, 10)
    assert dict(fake.calls[0][4])["TasksMax"] == ("t", 7)


def test_set_limits_of_a_running_unit(driver, fake):
    driver.create(POD)
    fake.calls.clear()
    driver.set_limits(POD, Limits(memory_max=1 << 20))
    assert fake.calls == [
        ("SetUnitProperties", "sba(sv)", "minipod-web.slice", True, unit_properties(Limits(memory_max=1 << 20)))
    ]


def test_a_failed_job_is_an_error_naming_the_unit(driver, fake):
    fake.job_result = "failed"
    with pytest.raises(CgroupError, match=r"StartTransientUnit minipod-web-app.scope .*job failed"):
        driver.join(APP, 10)


def test_a_bus_error_names_unit_and_error(driver, fake):
    def refuse(method, signature, *args):
        raise BusError("org.freedesktop.DBus.Error.AccessDenied", "Access denied")

    fake.call = refuse
    with pytest.raises(CgroupError, match=r"minipod-web.slice .*AccessDenied: Access denied"):
        driver.create(POD)


# --- remove ---


def test_remove_stops_resets_and_waits_until_gone(driver, fake, tmp_path):
    driver.create(POD)
    fake.calls.clear()
    driver.remove(POD)
    assert fake.calls == [
        ("StopUnit", "ss", "minipod-web.slice", "replace"),
        ("wait_job", "/org/freedesktop/systemd1/job/2"),
        ("ResetFailedUnit", "s", "minipod-web.slice"),
    ]
    assert not os.path.exists(tmp_path / POD)
    assert "minipod-web.slice" not in fake.units


def test_remove_missing_is_done(driver, fake):
    driver.remove(APP)
    driver.remove(APP)
    assert fake.methods() == ["StopUnit", "ResetFailedUnit"] * 2


def test_remove_clears_a_failed_scope(driver, fake):
    driver.join(APP, 10)
    fake.fail("minipod-web-app.scope", "oom-kill")
    driver.remove(APP)
    assert "minipod-web-app.scope" not in fake.units


def test_remove_a_slice_with_units_inside_is_busy_and_stops_nothing(driver, fake):
    driver.create("minipod.slice")
    driver.create(POD)
    fake.calls.clear()
    with pytest.raises(CgroupError, match=r"remove minipod.slice: busy: still holds minipod-web.slice"):
        driver.remove("minipod.slice")
    assert fake.calls == []  # StopUnit would have stopped the other pod


def test_remove_a_scope_with_processes_is_busy(driver, fake):
    driver.join(APP, 10)
    fake.calls.clear()
    with pytest.raises(CgroupError, match=r"busy: pids 10 still in it"):
        driver.remove(APP)
    assert fake.calls == []


def test_remove_reports_a_unit_systemd_keeps(driver, fake):
    driver.create(POD)
    fake.units["minipod-web.slice"]["state"] = "deactivating"
    real_call = fake.call

    def stop_but_keep(method, signature, *args):
        if method == "StopUnit":
            fake.calls.append((method, signature, *args))
            return ("/org/freedesktop/systemd1/job/9",)
        return real_call(method, signature, *args)

    fake.call = stop_but_keep
    with pytest.raises(CgroupError, match=r"systemd still has minipod-web.slice loaded \(deactivating\)"):
        driver.remove(POD)


# --- OOM kills ---


def test_oom_kills_reads_memory_events_while_the_cgroup_exists(driver, tmp_path):
    driver.join(APP, 10)
    (tmp_path / APP / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert driver.oom_kills(APP) == 1


def test_oom_kills_falls_back_to_the_failed_scope_result(driver, fake):
    # systemd removed the cgroup (and memory.events) when it stopped the OOM-killed scope.
    driver.join(APP, 10)
    fake.fail("minipod-web-app.scope", "oom-kill")
    assert driver.oom_kills(APP) == 1
    fake.units["minipod-web-app.scope"]["result"] = "timeout"
    assert driver.oom_kills(APP) == 0


def test_oom_kills_of_a_cgroup_removed_while_it_is_read_is_the_scope_result(
        driver, fake, tmp_path, monkeypatch):
    """systemd may remove the OOM-killed scope's cgroup between the check that it exists and
    the read of its memory.events: that is no "0 kills", the unit's Result says."""
    import shutil

    driver.join(APP, 10)
    fake.fail("minipod-web-app.scope", "oom-kill")
    read = driver.files.oom_kills

    def vanishing(group):
        shutil.rmtree(tmp_path / APP)
        return read(group)

    monkeypatch.setattr(driver.files, "oom_kills", vanishing)
    assert driver.oom_kills(APP) == 1


def test_oom_kills_of_a_gone_group_is_zero(driver):
    assert driver.oom_kills(APP) == 0
    assert driver.oom_kills(POD) == 0


def test_join_is_explained_with_the_unit_its_pid_and_limits(driver, fake, tmp_path, monkeypatch):
    """`run --explain` on the systemd driver: the unit that holds the process, as systemd-run
    would ask for it (the integration test checks it against the real cgroup in the guest)."""
    import json

    from minipod import explain

    out = tmp_path / "explain.jsonl"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    monkeypatch.setattr(explain, "_fd", fd)
    monkeypatch.setattr(explain, "ON", True)
    driver.create(POD)
    driver.create(APP, Limits(memory_max=64 << 20))
    driver.join(APP, 4242)
    os.close(fd)
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    (app,) = [r for r in recs if r["values"]["unit"] == "minipod-web-app.scope"]
    assert app["values"]["pids"] == [4242] and app["values"]["group"] == APP
    assert app["values"]["props"]["MemoryMax"] == 64 << 20
    assert app["shell"].startswith("systemd-run --scope --unit=minipod-web-app.scope "
                                   "--slice=minipod-web.slice -p MemoryAccounting=yes ")
    assert " -p MemoryMax=67108864 " in app["shell"]
