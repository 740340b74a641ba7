"""The supervisor never imports pyroute2: the network agent (a forked child) does the netlink
work, so the import's 0.1-0.2 s and its memory stay out of every pod's long-lived process."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What daemon.main() imports on its way to a running supervisor, then every module of the
# layers a supervisor runs (kubelet/, pod/, kernel/, cgroups/), and Host(), which imports the
# modules of the steps at start.
CHECK = """
import importlib, pkgutil, sys
import minipod.kubelet.daemon
from minipod.net import agent
from minipod.kubelet.supervisor import Host, Supervisor
Host("c")
import minipod.cgroups, minipod.kernel, minipod.kubelet, minipod.pod
for pkg in (minipod.cgroups, minipod.kernel, minipod.kubelet, minipod.pod):
    for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(m.name)
loaded = sorted(m for m in sys.modules if m.partition(".")[0] == "pyroute2")
assert not loaded, f"the supervisor's modules imported {loaded[:3]}"
print("checked", len(sys.modules), "modules")
"""


def test_supervisor_modules_never_import_pyroute2(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'pause = "python"\nroot = "{tmp_path}/run"\n')
    p = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, MINIPOD_CONFIG=str(config), PYTHONPATH=REPO),
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("checked "), p.stdout
