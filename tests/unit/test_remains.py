"""minipod.kubelet.remains: finding a pod's resources from whatever is left of its record, and
the janitor guard of daemon.py. Pure file work on a hand-made root: nothing here needs root."""

from __future__ import annotations

import json
import os

from minipod import state
from minipod.config import Config
from minipod.kubelet import remains
from minipod.kubelet.daemon import Guard
from minipod.pod import plan as planmod

UID = "2575bf74-ce93-4677-b4a4-8310b6a6f57e"


def cfg(tmp_path) -> Config:
    return Config(root=str(tmp_path / "run"), data_root=str(tmp_path / "data"),
                  bridge="mpt0", subnet="10.99.0.0/24", cgroup_parent="mpt0.slice")


def test_nothing_left_means_nothing_found(tmp_path):
    rem = remains.find(cfg(tmp_path), "web")
    assert rem.record is None and rem.uids == {} and rem.data_dirs == []
    assert rem.pod_cgroup == "mpt0.slice/mpt0-web.slice"  # what plan.py names it


def test_the_uid_comes_from_the_data_directory_when_the_plan_is_gone(tmp_path):
    c = cfg(tmp_path)
    data = os.path.join(c.data_root, "pods", f"default_web_{UID}")
    os.makedirs(data)
    os.makedirs(os.path.join(c.data_root, "pods", f"default_web-2_{UID[::-1]}"))  # another pod
    os.makedirs(state.pod_dir(c.root, "web"))  # an empty run directory
    rem = remains.find(c, "web")
    assert rem.record is not None and rem.record.broken == "plan.json is missing"
    assert rem.data_dirs == [data]
    assert rem.uids == {UID: planmod.host_veth(UID)}


def test_the_uid_comes_from_the_lease_of_the_ip_in_state_json(tmp_path):
    c = cfg(tmp_path)
    leases = os.path.join(c.root, "networks", "mpt0")
    os.makedirs(leases)
    with open(os.path.join(leases, "10.99.0.7"), "w") as f:
        f.write(f"{UID}\r\neth0")
    d = state.pod_dir(c.root, "web")
    os.makedirs(d)
    with open(os.path.join(d, "state.json"), "w") as f:
        json.dump({"network": {"ip": "10.99.0.7", "host_veth": "mp-recorded"}}, f)
    rem = remains.find(c, "web")
    assert rem.uids == {UID: "mp-recorded"}


def test_a_dead_janitor_is_seen_and_pid_1_is_never_one(tmp_path):
    r, w = os.pipe()
    try:
        assert Guard(w, os.getppid()).lost() is None  # our parent, listening on the pipe
        assert "PID 1" in Guard(w, 1).lost()
        os.close(r)
        r = -1
        assert "has died" in Guard(w, os.getppid()).lost()  # POLLERR: nobody reads any more
    finally:
        os.close(w)
        if r >= 0:
            os.close(r)
