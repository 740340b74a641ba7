"""SIGKILL at random points of a pod's set-up and teardown -- the supervisor, its janitor, both,
the `run -d` CLI, the `rm -f` CLI, the node agent, the agent's worker that serves the command
-- then `rm -f`: the host is exactly as before, every time.

Each iteration picks its victim in turn and its moment at random within the measured length of
the step; the seed is in the failure message. 15 iterations by default (CI); more with
MINIPOD_CRASH_ITERATIONS=200.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import agents, reap_orphans

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

ITERATIONS = int(os.environ.get("MINIPOD_CRASH_ITERATIONS", "15"))
POD = """
apiVersion: v1
kind: Pod
metadata:
  name: c
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: init
    image: busybox
    command: ["true"]
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
  - name: side
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
"""
# (step, victims): what is running while we kill, and whom we kill.
PLAN = [("run", ("supervisor",)), ("run", ("janitor",)), ("run", ("supervisor", "janitor")),
        ("run", ("cli",)), ("rm", ("supervisor",)), ("rm", ("cli",)),
        ("rm", ("supervisor", "janitor")), ("run", ("agent",)), ("run", ("worker",)),
        ("rm", ("worker",)), ("rm", ("agent", "supervisor"))]
THROUGH_AGENT = {"agent", "worker"}


def daemons(mp) -> dict[str, list[int]]:
    """This Env's janitors and supervisors (found by $MINIPOD_CONFIG), by role."""
    out: dict[str, list[int]] = {"janitor": [], "supervisor": []}
    want = f"MINIPOD_CONFIG={mp.config}".encode()
    agent_pids = agents(mp.base)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{d}/environ", "rb") as f:
                if want not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{d}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if int(d) in agent_pids:  # the agent, or a fork of it serving a command
            if ppid(int(d)) in agent_pids:
                out.setdefault("worker", []).append(int(d))
            continue
        from minipod.kubelet import titles

        role = titles.role_of(argv)  # once they have a pod, they say what they are
        if role:
            out["janitor" if role == titles.JANITOR else "supervisor"].append(int(d))
        elif b"minipod.kubelet.janitor" in argv or argv[0].endswith(b"janitor"):
            out["janitor"].append(int(d))
        elif b"minipod.kubelet.daemon" in argv:
            # C janitor: the supervisor has --janitor-fd; the Python one has the same argv
            # as its janitor, whose child it is.
            out["supervisor" if b"--janitor-fd" in argv else "janitor"].append(int(d))
    return out


def ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def start(mp, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "minipod", *args], env=mp.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen, timeout: float = 120) -> str:
    """Wait for the command; its stderr."""
    deadline = time.monotonic() + timeout
    while p.poll() is None:
        reap_orphans()  # we are a subreaper: a dead supervisor's children come to us
        assert time.monotonic() < deadline, "the command hung"
        time.sleep(0.02)
    return p.communicate()[1]


def kill_at(mp, cli: subprocess.Popen, victims: tuple[str, ...], delay: float) -> list[str]:
    """SIGKILL the victims `delay` seconds from now (or when the command ends first)."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and cli.poll() is None:
        time.sleep(0.005)
    killed = []
    found = daemons(mp)
    found["agent"] = list(agents(mp.base))
    for v in victims:
        for pid in [cli.pid] if v == "cli" else found.get(v, []):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(f"{v} {pid}")
            except ProcessLookupError:
                pass
    return killed


def test_sigkill_anywhere_then_rm_f_leaves_nothing(mp):
    seed = int(os.environ.get("MINIPOD_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    path = mp.write("c.yaml", POD)
    before = mp.host_state()
    # How long set-up and teardown take here: the window the kills are spread over.
    t = time.monotonic()
    mp.minipod("run", "-d", path)
    run_s = time.monotonic() - t
    t = time.monotonic()
    mp.minipod("rm", "-f", "c")
    rm_s = time.monotonic() - t
    assert mp.host_state() == before
    for i in range(ITERATIONS):
        step, victims = PLAN[i % len(PLAN)]
        if step == "rm":
            assert mp.minipod("run", "-d", path, check=False).returncode == 0
            window = rm_s
        else:
            window = run_s
        delay = rng.uniform(0, window * 1.1)
        if THROUGH_AGENT & set(victims):
            mp.minipod("daemon", "start")  # the command goes through it, not in-process
        cli = start(mp, *(("run", "-d", path) if step == "run" else ("rm", "-f", "c")))
        killed = kill_at(mp, cli, victims, delay)
        finish(cli)
        where = (f"iteration {i}: {step}, killed {killed or 'nothing'} after {delay:.3f}s "
                 f"(MINIPOD_CRASH_SEED={seed})")
        p = mp.minipod("rm", "-f", "c", check=False)
        assert p.returncode == 0 or "not found" in p.stderr, f"{where}: {p.stderr}"
        assert "Traceback" not in p.stderr, where
        # What still runs is a janitor finishing its clean-up: it must end, and soon.
        mp.wait(lambda: reap_orphans() or not any(v for k, v in daemons(mp).items()
                                                  if k != "worker"), 30,
                f"{where}: the pod's processes to end")
        pods = os.path.join(mp.root, "pods")
        assert not os.path.isdir(pods) or not os.listdir(pods), f"{where}: a record is left"
        assert mp.host_state() == before, f"{where}: the host changed"


def test_a_janitor_killed_during_set_up_never_leaves_the_pod_unguarded(mp):
    """The supervisor sees its janitor die (its pipe reports POLLERR, its parent changes):
    either the start fails with a one-line error naming the janitor and leaves nothing, or
    the pod runs and says it is unguarded (a JanitorLost event, janitorPid 0: never PID 1, so
    `rm` does not wait on it)."""
    path = mp.write("c.yaml", POD)
    mp.minipod("daemon", "start")  # time a warm run: the first command would wait for it
    t = time.monotonic()
    mp.minipod("run", "-d", path)
    run_s = time.monotonic() - t
    mp.minipod("rm", "-f", "c")
    before = mp.host_state()
    outcomes = set()
    for i in range(8):
        cli = start(mp, "run", "-d", path)
        if not kill_at(mp, cli, ("janitor",), run_s * i / 8):
            finish(cli)
            mp.minipod("rm", "-f", "c")
            continue
        err = finish(cli)
        if cli.returncode:
            assert "janitor" in err and err.count("\n") == 1, err
            outcomes.add("refused")
        else:
            # `run -d` may return before the supervisor's loop has seen the pipe's POLLERR
            mp.wait(lambda: "JanitorLost" in mp.minipod("events", "c").stdout, 10,
                    "the JanitorLost event")
            info = mp.inspect("c")["supervisor"]
            assert info["pid"] and info["janitorPid"] == 0, info
            outcomes.add("warned")
            t = time.monotonic()
            mp.minipod("rm", "-f", "c")
            assert time.monotonic() - t < 8, "rm waited on a janitor that is not there"
        mp.wait(lambda: reap_orphans() or not any(daemons(mp).values()), 30, "the processes")
        assert not os.listdir(os.path.join(mp.root, "pods"))
        assert mp.host_state() == before, f"after a kill at {run_s * i / 8:.2f}s"
    assert "refused" in outcomes, outcomes  # a kill during set-up was seen at least once
