"""The device escape, closed, as a container sees it: with containerd's default capabilities
(MKNOD included) a container may make a node for a host disk, but cannot open it -- in /dev (a
tmpfs where nodes work, so only the device cgroup stops it), on its root filesystem and on a
volume (nodev too). A privileged container gets the host's devices, as in Kubernetes.

Runs on every cgroup driver the machine offers: cgroupfs (v1 on the build host, v2 in the
guest) and systemd (the guest)."""

from __future__ import annotations

import os

import pytest
from conftest import DISK

from minipod.cgroups import fs

pytestmark = [pytest.mark.root, pytest.mark.network]

PROBE = r"""
for dir in /dev /tmp /vol; do
  if mknod $dir/disk b {major} {minor} 2>/dev/null; then made=made; else made=no-mknod; fi
  got=$(head -c 17 $dir/disk 2>&1); rc=$?
  echo "$dir $made rc=$rc $got"
done
sleep 600
"""


def drivers() -> list[str]:
    out = ["cgroupfs"]
    if fs.systemd_is_init():
        out.append("systemd")
    return out


def run_probe(mp, disk, driver: str, privileged: bool) -> dict[str, str]:
    _, major, minor = disk
    mp.write_config(cgroup_driver=driver)
    name = "priv" if privileged else "plain"
    script = PROBE.format(major=major, minor=minor).replace("\n", "\n        ")
    path = mp.write(f"{name}.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  volumes: [{{name: vol, emptyDir: {{}}}}]
  containers:
  - name: probe
    image: busybox
    securityContext: {{privileged: {str(privileged).lower()}}}
    volumeMounts: [{{name: vol, mountPath: /vol}}]
    command:
    - sh
    - -c
    - |
        {script}
""")
    mp.minipod("run", "-d", path)
    try:
        out = mp.wait(lambda: (lambda o: o if o.count("\n") >= 3 else None)(
            mp.minipod("logs", name).stdout), what="the probe's three lines")
    finally:
        mp.minipod("rm", "-f", name)
    return {line.split()[0]: line for line in out.splitlines()}


@pytest.mark.parametrize("driver", drivers())
def test_a_container_cannot_open_a_host_disk_through_a_node_it_makes(mp, disk, driver):
    seen = run_probe(mp, disk, driver, privileged=False)
    for where in ("/dev", "/tmp", "/vol"):
        line = seen[where]
        assert " rc=1 " in line, line
        assert DISK.decode().strip() not in line, line
    # In /dev, a tmpfs without nodev, only the device cgroup can say no (EPERM):
    assert "Operation not permitted" in seen["/dev"], seen["/dev"]


@pytest.mark.parametrize("driver", drivers())
def test_a_privileged_container_gets_the_host_devices(mp, disk, driver):
    seen = run_probe(mp, disk, driver, privileged=True)
    assert seen["/dev"].endswith("rc=0 " + DISK.decode().strip()), seen["/dev"]
