"""Set-up work is never charged to the pod's cgroup: a pod limited to `cpu: 1n` (1 ms of CPU
per 100 ms) would otherwise take seconds to start. The sandbox and containers join their
cgroups only once their namespaces are made, just before they exec."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace

import pytest

from minipod.pod import sandbox

pytestmark = pytest.mark.root


def ns_of(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def sandbox_plan(hostname: str, host_pid: bool = False) -> SimpleNamespace:
    """What sandbox.start/begin read of a PodPlan."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    return SimpleNamespace(share_pid=False, hostname=hostname, shm_size=1 << 20,
                           host_network=False, host_pid=host_pid, host_ipc=False,
                           security=SimpleNamespace(sysctls=[]),
                           sandboxes_dir="/nonexistent/sandboxes")


@pytest.mark.parametrize("host_pid", [False, True], ids=["own-pid", "host-pid"])
def test_the_sandbox_joins_its_cgroup_after_it_unshared(c_helpers, host_pid):
    plan = sandbox_plan("order-test", host_pid)
    seen = {}

    def join(pid: int) -> None:  # what the driver would do: the child is as it will exec
        seen["net"] = ns_of(pid, "net")
        seen["uts"] = ns_of(pid, "uts")
        seen["pid"] = pid
        seen["pidns"] = ns_of(pid, "pid")

    sb = sandbox.start(plan, [str(c_helpers / "pause")], join)
    try:
        assert seen["pid"] == sb.pid  # pause itself, not an intermediate process
        assert seen["net"] != ns_of("self", "net")
        assert seen["uts"] != ns_of("self", "uts")
        assert (seen["pidns"] == ns_of("self", "pid")) == host_pid
    finally:
        os.kill(sb.pid, 9)
        os.waitpid(sb.pid, 0)


@pytest.mark.parametrize("host_pid", [False, True], ids=["own-pid", "host-pid"])
def test_the_sandbox_begins_with_its_namespaces_and_execs_only_when_finished(c_helpers,
                                                                             host_pid):
    """Pod set-up plugs in the veth and forks the containers between sandbox.begin() and
    finish(): by begin's return pause's namespaces are complete (the hostname set), while it
    has neither exec'd nor joined its cgroup; abort() leaves no process. With hostPID there is
    no intermediate whose report says so: begin must wait all the same."""
    plan = sandbox_plan("begin-test", host_pid)
    pause = str(c_helpers / "pause")
    for finish in (True, False):
        joined = []
        starting = sandbox.begin(plan, [pause])
        pid = starting.pid
        try:
            assert ns_of(pid, "net") != ns_of("self", "net")
            out = subprocess.run(["nsenter", f"--uts=/proc/{pid}/ns/uts", "hostname"],
                                 capture_output=True, text=True, check=True).stdout
            assert out.strip() == "begin-test"
            assert os.readlink(f"/proc/{pid}/exe") != os.path.realpath(pause)
            assert joined == []
            if finish:
                sb = starting.finish(joined.append)
                assert joined == [pid] and sb.pid == pid
                assert os.readlink(f"/proc/{pid}/exe") == os.path.realpath(pause)
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            else:
                starting.abort()
                assert not os.path.exists(f"/proc/{pid}")  # killed and reaped
        except BaseException:
            starting.abort()
            raise


def test_a_pod_limited_to_one_nano_cpu_runs(mp):
    path = mp.write("tiny.yaml", """
apiVersion: v1
kind: Pod
metadata: {name: tiny}
spec:
  containers:
  - name: app
    image: busybox
    command: [sh, -c, 'echo started; sleep 600']
    resources: {limits: {cpu: 1n, memory: 32Mi}}
""")
    mp.minipod("run", "-d", path)
    mp.wait(lambda: "started" in mp.minipod("logs", "tiny", check=False).stdout,
            timeout=60, what="the throttled container's output")
    mp.minipod("rm", "-f", "tiny")


def test_a_container_joins_its_cgroup_with_its_root_built_and_waiting_to_exec(
        c_helpers, image_store, tmp_path):
    from minipod.cgroups import Driver
    from minipod.config import Config
    from minipod.images.store import ImageStore
    from minipod.pod import plan as planmod
    from minipod.pod.pod import Pod
    from minipod.spec import spec

    joined = {}

    class Recorder(Driver):  # only join() matters here; the rest is never reached
        def join(self, group, pid=0):
            joined[group] = {"pid": pid, "root": os.readlink(f"/proc/{pid}/root"),
                             "mnt": ns_of(pid, "mnt"), "net": ns_of(pid, "net"),
                             "cgroup": ns_of(pid, "cgroup")}

        create = set_limits = kill = remove = lambda self, *a, **k: None
        procs = paths = lambda self, *a: []
        oom_kills = lambda self, *a: 0

    res = spec.loads("apiVersion: v1\nkind: Pod\nmetadata: {name: order}\n"
                     "spec: {containers: [{name: app, image: busybox, command: [sleep, '9']}]}\n")
    cfg = Config(root=str(tmp_path / "run"), data_root=str(tmp_path / "data"),
                 image_root=image_store)
    p = planmod.build(res.pods[0], cfg, ImageStore(image_store), "order.yaml")
    pod = Pod(p, Recorder(), [str(c_helpers / "pause")])
    pod._make_dirs()
    try:
        pod._start_sandbox()
        c = p.containers[0]
        pending = pod.prepare(c)
        try:
            seen = joined[c.cgroup]
            assert seen["pid"] == pending.pid  # the container's PID 1 itself
            assert seen["root"] == "/"  # as its own mount namespace shows it: pivoted...
            assert seen["mnt"] != ns_of("self", "mnt")  # ...in a mount namespace of its own
            assert seen["net"] == ns_of(pod.sandbox_pid, "net")  # the pod's
            # Its cgroup namespace comes after the join: made before, its root would be the
            # runtime's cgroup, not the container's.
            assert seen["cgroup"] == ns_of("self", "cgroup")
            with open(f"/proc/{pending.pid}/cmdline", "rb") as f:
                assert b"sleep" not in f.read()  # and it has not exec'd yet
        finally:
            pending.abort()
    finally:
        pod.kill_all()
        pod.remove_dirs()
