"""Every ready lab, run as a student would (`minipod lab run NAME` through the real CLI, in the
`mp` fixture's isolated installation): exit 0, every check of its lab.yaml printed ✓, and the
host left as it was (the fixture compares it). Pending labs are listed as pending, never run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from minipod.cli import lab

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

READY = [x.name for x in lab.labs() if not x.pending]
PENDING = [x.name for x in lab.labs() if x.pending]


def test_the_labs_are_there():
    assert len(READY) >= 12 and len(READY) + len(PENDING) == 13  # 08, 10, 11 are ready now


@pytest.mark.parametrize("name", READY)
def test_lab_passes(mp, name):
    p = mp.minipod("lab", "run", name, check=False, timeout=240)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    want = sum(len(s.check) for s in lab.find(name).steps)
    assert out.count(f" {lab.OK}\n") == want, out     # every check of the lab ran and passed
    assert lab.BAD not in out, out
    assert f"{want} checks passed, 0 failed" in out
    # Its pods ran under unique names and are gone.
    assert "No resources found" in mp.minipod("ps").stderr


def test_list_shows_pending_as_pending(mp):
    out = mp.minipod("lab", "list").stdout
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines()[1:]}
    for name in PENDING:
        assert rows[name] == "pending", out
    for name in READY:
        assert rows[name] == "ready", out
    for name in PENDING:
        assert lab.find(name).pending in out, out      # and says what it waits for


def test_a_pending_lab_does_not_run(mp):
    if not PENDING:
        pytest.skip("every lab is ready")
    p = mp.minipod("lab", "run", PENDING[0], check=False)
    assert p.returncode == 1 and "is pending" in p.stderr


@pytest.mark.parametrize("sig,ignored", [(signal.SIGINT, False), (signal.SIGTERM, False),
                                        (signal.SIGINT, True)])
def test_ctrl_c_cleans_up(mp, sig, ignored):
    """Ctrl-C (or SIGTERM) while a student looks around (--step waits for Enter after the pod is made):
    the lab's pod is removed, the run fails, the host is unchanged (the fixture checks). Also
    when the lab was started with SIGINT ignored (a script's background job, nohup), which
    Python alone would keep."""
    proc = subprocess.Popen([sys.executable, "-m", "minipod", "lab", "run", "01-sandbox",
                             "--step"], env=mp.env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
                            if ignored else None)
    buf: list[str] = []
    reader = threading.Thread(target=lambda: buf.extend(iter(lambda: proc.stdout.read(1), "")),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while "[Enter" not in "".join(buf):
        assert time.monotonic() < deadline, "".join(buf)
        time.sleep(0.1)
    pods = os.listdir(os.path.join(mp.root, "pods"))
    assert len(pods) == 1 and pods[0].startswith("sandbox-"), pods
    proc.send_signal(sig)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(timeout=5)
        log = os.path.join(mp.root, "agent.log")
        raise AssertionError("the lab did not end within 120 s of the signal:\n" + "".join(buf)
                             + (open(log).read() if os.path.exists(log) else "")) from None
    assert proc.returncode == 1
    reader.join(timeout=5)
    out = "".join(buf)
    assert f"interrupted {lab.BAD}" in out and f"$ minipod rm -f {pods[0]}" in out, out
    assert "No resources found" in mp.minipod("ps").stderr


# --- minipod ns ------------------------------------------------------------------------------

TWO_PODS = """
apiVersion: v1
kind: Pod
metadata: {name: nsa}
spec:
  containers:
  - {name: one, image: busybox, command: ["sh", "-c", "sleep 3600 & wait"]}
  - {name: two, image: busybox, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: nsb}
spec:
  shareProcessNamespace: true
  containers:
  - {name: one, image: busybox, command: ["sleep", "3600"]}
"""


def readlink_inode(pid: int, kind: str) -> int:
    link = os.readlink(f"/proc/{pid}/ns/{kind}")          # e.g. 'net:[4026532254]'
    assert link.startswith(kind + ":[")
    return int(link[len(kind) + 2:-1])


def test_ns_view_matches_proc(mp):
    import json

    mp.minipod("run", "-d", mp.write("two.yaml", TWO_PODS))
    mp.wait(lambda: all(mp.pod(n)["status"]["phase"] == "Running" for n in ("nsa", "nsb")),
            what="both pods Running")
    doc = json.loads(mp.minipod("ns", "nsa", "nsb", "-o", "json").stdout)
    rows = {(r["pod"], r["container"]): r for r in doc["processes"]}
    assert set(rows) == {("nsa", "(sandbox)"), ("nsa", "one"), ("nsa", "two"),
                         ("nsb", "(sandbox)"), ("nsb", "one")}
    insp = {n: mp.inspect(n) for n in ("nsa", "nsb")}
    for (pod, ctr), r in rows.items():
        want = insp[pod]["sandbox"]["pid"] if ctr == "(sandbox)" else \
            next(c["pid"] for c in insp[pod]["containers"] if c["name"] == ctr)
        assert r["pid"] == want
        for kind, cell in r["namespaces"].items():
            assert cell["inode"] == readlink_inode(r["pid"], kind), (pod, ctr, kind)
    me = os.getpid()

    def sharing(pod, ctr, kind):
        return rows[(pod, ctr)]["namespaces"][kind]["sharing"]

    for kind in ("net", "ipc", "uts"):
        assert sharing("nsa", "one", kind) == sharing("nsa", "two", kind) == "shared-with-pause"
        assert sharing("nsa", "(sandbox)", kind) == "own"
    assert sharing("nsa", "one", "pid") == "own" and sharing("nsa", "one", "mnt") == "own"
    assert sharing("nsb", "one", "pid") == "shared-with-pause"     # shareProcessNamespace
    assert sharing("nsa", "(sandbox)", "pid") == "own"    # pause: PID 1 of the pod's pid ns
    assert rows[("nsa", "one")]["namespaces"]["user"]["inode"] == readlink_inode(me, "user")
    assert sharing("nsa", "one", "user") == "host"
    assert "user (host)" in doc["sharedBetweenPods"]["shared"]
    assert {"net", "ipc", "uts", "pid", "mnt"} <= set(doc["sharedBetweenPods"]["separate"])
    # The table: the same inodes, marked.
    text = mp.minipod("ns", "nsa").stdout
    net = rows[("nsa", "one")]["namespaces"]["net"]["inode"]
    line = next(ln for ln in text.splitlines() if ln.split()[:2] == ["nsa", "one"])
    assert f"{net}=" in line.split()
    # --all: every process in the pod, the container's child too.
    every = json.loads(mp.minipod("ns", "nsa", "--all", "-o", "json").stdout)["processes"]
    ones = [r for r in every if r["container"] == "one"]
    assert sorted(r["comm"] for r in ones) == ["sh", "sleep"]
    child = next(r for r in ones if r["comm"] == "sleep")
    assert child["namespaces"]["pid"]["inode"] == readlink_inode(child["pid"], "pid")
