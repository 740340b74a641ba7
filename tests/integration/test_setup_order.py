"""Set-up work is never charged to the pod's cgroup: a pod limited to `cpu: 1n` (1 ms of CPU
per 100 ms) would otherwise take seconds to start. The sandbox and containers join their
cgroups only once their namespaces are made, just before they exec."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from minipod.pod import sandbox

pytestmark = pytest.mark.root


def ns_of(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


@pytest.mark.parametrize("share_pid", [False, True], ids=["own-pid", "shared-pid"])
def test_the_sandbox_joins_its_cgroup_after_it_unshared(c_helpers, share_pid):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    plan = SimpleNamespace(share_pid=share_pid, hostname="order-test", shm_size=1 << 20)
    seen = {}

    def join(pid: int) -> None:  # what the driver would do: the child is as it will exec
        seen["net"] = ns_of(pid, "net")
        seen["uts"] = ns_of(pid, "uts")
        seen["pid"] = pid

    sb = sandbox.start(plan, [str(c_helpers / "pause")], join)
    try:
        assert seen["pid"] == sb.pid  # pause itself, not an intermediate process
        assert seen["net"] != ns_of("self", "net")
        assert seen["uts"] != ns_of("self", "uts")
    finally:
        os.kill(sb.pid, 9)
        os.waitpid(sb.pid, 0)


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
