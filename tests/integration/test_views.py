"""The views that make the primitives visible, checked against the kernel's own files:
process titles (`ps`), `minipod tree`, `run --explain`, `run --step`, `explain --script`."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 3600 & exec sleep 3600"]
    resources:
      limits: {{memory: 64Mi, cpu: 500m}}
  - name: side
    image: busybox
    command: ["sleep", "3600"]
"""


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def ps_args() -> dict[int, str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True,
                         check=True).stdout
    return {int(p): a.strip() for p, _, a in (ln.strip().partition(" ")
                                              for ln in out.splitlines()[1:])}


@pytest.mark.parametrize("kind", ["c", "python"])
def test_ps_names_the_pod(mp, c_helpers, kind):
    """`ps -eo pid,args` shows the pod's name for its janitor and its supervisor, as
    containerd-shim shows its -id; comm (ps -o comm, top) too, cut to 15 bytes."""
    mp.write_config(janitor=str(c_helpers / "janitor") if kind == "c" else "python")
    name = "titled-" + kind
    mp.minipod("run", "-d", mp.write("p.yaml", POD.format(name=name)))
    sup = mp.inspect(name)["supervisor"]
    assert sup["janitorKind"] == kind
    args = ps_args()
    for pid, role in ((sup["janitorPid"], "janitor"), (sup["pid"], "supervisor")):
        # The title cannot outgrow the original argv: a long -root is cut, never the name.
        want = f"minipod-{role} -pod {name} -root {mp.root}"
        assert args[pid].startswith(f"minipod-{role} -pod {name} ") and \
            want.startswith(args[pid]), (role, args[pid])
    assert _read(f"/proc/{sup['janitorPid']}/comm") == f"mp-jan:{name}"[:15]
    assert _read(f"/proc/{sup['pid']}/comm") == f"mp-sup:{name}"[:15]
    # The environment is untouched (only argv is rewritten): tools that find a pod's
    # processes by it still do.
    with open(f"/proc/{sup['pid']}/environ", "rb") as f:
        assert f"MINIPOD_CONFIG={mp.config}".encode() in f.read().split(b"\0")
    # Found by its title, the pod is still stopped and removed properly.
    mp.minipod("rm", "-f", name)
    assert not any(name in a for a in ps_args().values())
