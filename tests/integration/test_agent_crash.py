"""Issue 11's check, as a user would run it: many pods up through the node agent, the agent
SIGKILLed, the pods keep serving HTTP and logging, a container killed while no agent runs is
restarted and its exit code reported, the next command brings an agent back, `ps` shows every
pod as it is, and `rm -f` of all of them leaves the host as it was (the mp fixture compares).

MINIPOD_CRASH_PODS sets how many pods (50 by default, in the TCG guest too: 130-250 s there)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import pytest

from conftest import agents

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PODS = int(os.environ.get("MINIPOD_CRASH_PODS", "50"))
POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: web
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo {name} > /tmp/index.html; httpd -p 80 -h /tmp;
                           while :; do echo tick; sleep 0.2; done"]
"""


def http_get(ip: str) -> str:
    with urllib.request.urlopen(f"http://{ip}/", timeout=10) as r:
        return r.read().decode().strip()


def pods(mp) -> dict[str, dict]:
    doc = json.loads(mp.minipod("get", "pods", "-o", "json").stdout)
    return {p["metadata"]["name"]: p for p in doc["items"]}


def ticks(mp, name: str) -> int:
    return mp.minipod("logs", name).stdout.count("tick\n")


def test_pods_outlive_a_sigkilled_agent_and_it_comes_back(mp):
    names = [f"crash{i:02d}" for i in range(PODS)]
    manifest = mp.write("pods.yaml", "---".join(POD.format(name=n) for n in names))
    mp.minipod("daemon", "start")
    # Through the agent: its forks supervise the pods. The timeout only guards against a hang:
    # under TCG, on a slow day, 50 pods took more than the default 120 s (~2.5 s a pod).
    mp.minipod("run", "-d", manifest, timeout=max(120, 8 * PODS))
    before = pods(mp)
    assert sorted(before) == names
    ips = {n: p["status"]["podIP"] for n, p in before.items()}
    victim = names[PODS // 2]
    pid = mp.inspect(victim)["containers"][0]["pid"]
    agent, = agents(mp.base)

    os.kill(agent, signal.SIGKILL)
    mp.wait(lambda: not agents(mp.base), what="the agent to die")
    # While no agent runs, look only with commands that would not start one.
    cold = dict(mp.env, MINIPOD_AGENT="0")
    assert all(http_get(ip) == n for n, ip in ips.items())
    logged = ticks(mp, victim)
    mp.wait(lambda: ticks(mp, victim) > logged, what="the pod to keep logging")
    # A container dies while no agent runs: it is restarted, and its exit is kept.
    os.kill(pid, signal.SIGKILL)
    mp.wait(lambda: json.loads(mp.minipod("inspect", victim, env=cold).stdout)
            ["containers"][0]["pid"] not in (0, pid), what="the container to be restarted")
    assert not agents(mp.base)

    # The next routed command brings an agent back (it runs in-process meanwhile).
    mp.minipod("ps")
    mp.wait(lambda: len(agents(mp.base)) == 1, what="an agent to come back")
    mp.wait(lambda: mp.minipod("daemon", "status", check=False).returncode == 0,
            what="the new agent to answer")
    rows = {ln.split()[0]: ln.split() for ln in mp.minipod("ps").stdout.splitlines()[1:]}
    assert sorted(rows) == names
    for n, row in rows.items():
        assert row[1:4] == ["1/1", "Running", "1" if n == victim else "0"], row
        assert row[-1] == ips[n]
    status = pods(mp)[victim]["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert http_get(ips[victim]) == victim

    started = time.monotonic()
    mp.minipod("rm", "-f", *names)
    print(f"rm -f of {PODS} pods: {time.monotonic() - started:.1f}s")
    assert not os.listdir(os.path.join(mp.root, "pods"))
