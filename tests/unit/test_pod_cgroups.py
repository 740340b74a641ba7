"""The orchestrator's cgroup steps against a fake driver: the parent slice is removed only
under the lock that pod creation holds until its own slice exists (systemd's StopUnit of a
slice would otherwise stop a pod slice created between "looks empty" and the stop)."""

from __future__ import annotations

import threading

import pytest

from minipod.cgroups import CgroupBusy, Driver, Limits
from minipod.config import Config
from minipod.images.store import Image
from minipod.kernel.lock import flock
from minipod.pod import plan as planmod
from minipod.pod.pod import Pod
from minipod.spec import spec


class Store:
    def resolve(self, ref: str) -> Image:
        return Image(ref=ref, digest="sha256:" + "0" * 64, layers=["/l/1"], config={"Cmd": ["sh"]})


class FakeDriver(Driver):
    """Groups as a set of paths; remove() of a group with children is CgroupBusy."""

    def __init__(self, lock: str):
        self.groups: set[str] = set()
        self.lock = lock
        self.calls: list[tuple[str, str, bool]] = []  # (op, group, lock held by someone)

    def _locked(self) -> bool:
        import fcntl
        import os

        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def create(self, group, limits=Limits()):
        self.calls.append(("create", group, self._locked()))
        parts = group.split("/")
        self.groups.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))

    def remove(self, group):
        self.calls.append(("remove", group, self._locked()))
        if any(g.startswith(group + "/") for g in self.groups):
            raise CgroupBusy(f"remove {group}: busy")
        self.groups.discard(group)

    def set_limits(self, group, limits): ...
    def join(self, group, pid=0): ...
    def procs(self, group): return []
    def kill(self, group, sig=9): ...
    def oom_kills(self, group): return 0
    def paths(self, group): return {}


def make_pod(tmp_path, name: str) -> Pod:
    res = spec.loads(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n"
                     "spec: {containers: [{name: app, image: img}]}\n")
    cfg = Config(root=str(tmp_path / "run"), data_root=str(tmp_path / "data"))
    p = planmod.build(res.pods[0], cfg, Store(), "pod.yaml")
    (tmp_path / "run").mkdir(exist_ok=True)
    return Pod(p, FakeDriver(p.cgroup_lock), [])


def test_the_lock_is_one_per_runtime_root(tmp_path):
    a, b = make_pod(tmp_path, "a"), make_pod(tmp_path, "b")
    assert a.plan.cgroup_lock == b.plan.cgroup_lock == str(tmp_path / "run" / "cgroups.lock")


def test_creating_the_pod_slice_and_removing_the_parent_both_hold_the_lock(tmp_path):
    pod = make_pod(tmp_path, "web")
    pod._make_cgroups()
    pod.remove_cgroups()
    held = {(op, g) for op, g, locked in pod.driver.calls if locked}
    assert ("create", pod.plan.pod_cgroup) in held
    assert ("remove", pod.plan.cgroup_parent) in held
    # The rest needs no lock: the pod slice keeps the parent busy meanwhile.
    assert ("create", pod.plan.containers[0].cgroup) not in held
    assert pod.driver.groups == set()


def test_a_busy_parent_is_left_to_the_other_pods_but_other_errors_are_not_swallowed(tmp_path):
    pod = make_pod(tmp_path, "web")
    pod.driver.groups.add(pod.plan.cgroup_parent + "/minipod-other.slice")
    pod._make_cgroups()
    pod.remove_cgroups()
    assert pod.driver.groups == {pod.plan.cgroup_parent,
                                 pod.plan.cgroup_parent + "/minipod-other.slice"}

    remove = pod.driver.remove

    def broken(group):
        if group == pod.plan.cgroup_parent:
            raise RuntimeError("a bug in the driver")
        remove(group)

    pod.driver.remove = broken
    with pytest.raises(RuntimeError):
        pod.remove_cgroups()


def test_removing_the_parent_waits_while_another_pod_is_creating_its_slice(tmp_path):
    pod = make_pod(tmp_path, "web")
    done = threading.Event()
    with flock(pod.plan.cgroup_lock):  # another pod, between "create parent" and its slice
        t = threading.Thread(target=lambda: (pod.remove_cgroups(), done.set()))
        t.start()
        assert not done.wait(0.3)
    assert done.wait(5)
    t.join()
