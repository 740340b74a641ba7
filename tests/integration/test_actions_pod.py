"""Probe and hook handlers against a real pod: httpGet/tcpSocket from the host to the pod IP of
a busybox httpd (no curl or nc in play), exec inside the container's namespaces, cgroup, user
and capabilities, and a timeout that leaves nothing behind in the container."""

from __future__ import annotations

import os
import signal
import time

import pytest

from minipod import cgroups, config, state
from minipod.kubelet import actions
from minipod.pod.plan import ContainerPlan

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: probes
spec:
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      mkdir -p /www && echo "hello from $HOSTNAME" > /www/index.html
      exec httpd -f -p 80 -h /www
    env:
    - {name: GREETING, value: hello-probe}
    ports:
    - {containerPort: 80, name: http}
  - name: app
    image: busybox
    command: ["sleep", "3600"]
    securityContext:
      runAsUser: 1000
      runAsGroup: 1000
      capabilities:
        drop: ["ALL"]
"""


class Pod:
    """The running pod as a supervisor sees it: plans, PIDs, the pod IP, the cgroup driver."""

    def __init__(self, mp, name: str):
        cfg = config.load(mp.config)
        self.driver = cgroups.detect(cfg.cgroup_root, cfg.cgroup_driver)
        self.rec = state.PodRecord(cfg.root, name)
        self.ip = self.rec.state["network"]["ip"]

    def run(self, handler: dict, container: str = "web",
            timeout: float | None = 5) -> tuple[bool, str]:
        c, st = self.rec.container(container)
        r = actions.spawn(handler, ContainerPlan.from_json(c), st["pid"], self.ip, self.driver,
                          timeout)
        _, status = os.waitpid(r.pid, 0)  # the test is the supervisor here: it reaps
        return r.finish(status)

    def processes(self, container: str) -> list[str]:
        """Command lines of the live processes in the container's cgroup."""
        c, _ = self.rec.container(container)
        out = []
        for pid in self.driver.procs(c["cgroup"]):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            if cmd:  # a zombie has no command line
                out.append(cmd)
        return out


@pytest.fixture
def pod(mp):
    path = mp.write("probes.yaml", POD)
    mp.minipod("run", "-d", path)
    p = Pod(mp, "probes")
    # httpd listens a moment after the container starts: probe until it answers.
    mp.wait(lambda: p.run({"tcpSocket": {"port": 80}})[0], what="httpd listening")
    return p


def test_http_and_tcp_from_the_host_to_the_pod_ip(pod):
    ip = pod.ip
    assert pod.run({"httpGet": {"path": "/", "port": "http"}}) == (True, "")
    assert pod.run({"httpGet": {"path": "/index.html", "port": 80,
                                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}}) == \
        (True, "")
    assert pod.run({"httpGet": {"path": "/missing", "port": 80}}) == \
        (False, "HTTP probe failed with statuscode: 404")
    assert pod.run({"httpGet": {"path": "/", "port": 81}}) == \
        (False, f'Get "http://{ip}:81/": dial tcp {ip}:81: connect: connection refused')
    assert pod.run({"tcpSocket": {"port": "http"}}) == (True, "")
    assert pod.run({"tcpSocket": {"port": 81}}) == \
        (False, f"dial tcp {ip}:81: connect: connection refused")


def test_exec_runs_inside_the_container(pod):
    c, st = pod.rec.container("web")
    # A file only the container has, its hostname (uts), its environment, its PID namespace
    # (PID 1 is httpd) and its cgroup: the output comes back in the failure message.
    ok, msg = pod.run({"exec": {"command": [
        "sh", "-c", 'cat /www/index.html; hostname; echo "$GREETING"; '
                    "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/cgroup; exit 3"]}})
    assert not ok
    head, _, output = msg.partition(": ")
    assert head.startswith("command 'sh -c cat /www/index.html;") and \
        head.endswith("exited with 3")
    lines = [line.strip() for line in output.splitlines()]
    assert lines[:4] == ["hello from probes", "probes", "hello-probe", "httpd -f -p 80 -h /www"]
    # In the container's cgroup namespace, whose root is the container's cgroup: in that
    # cgroup every line reads "/" (in another one it would read "/../..").
    assert lines[4:] and all(line.endswith(":/") for line in lines[4:]), lines
    assert pod.run({"exec": {"command": ["test", "-f", "/www/index.html"]}}) == (True, "")


def test_exec_failure_messages(pod):
    assert pod.run({"exec": {"command": ["cat", "/tmp/healthy"]}}) == (
        False, "command 'cat /tmp/healthy' exited with 1: "
               "cat: can't open '/tmp/healthy': No such file or directory")
    assert pod.run({"exec": {"command": ["no-such-probe"]}}) == (
        False, 'unable to start container process: exec: "no-such-probe": '
               "executable file not found in $PATH")


def test_exec_has_the_containers_user_and_capabilities(pod):
    _, st = pod.rec.container("app")
    with open(f"/proc/{st['pid']}/status") as f:
        pid1 = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    ok, msg = pod.run({"exec": {"command": [
        "sh", "-c", "id -u; id -g; grep -E '^(Cap|SigIgn)' /proc/self/status; exit 1"]}},
        container="app")
    lines = msg.partition(": ")[2].splitlines()
    assert lines[:2] == ["1000", "1000"]
    status = dict(line.split(":\t", 1) for line in lines[2:])
    for name in ("CapEff", "CapPrm", "CapBnd"):
        assert status[name].strip() == pid1[name].strip(), name
    assert status["CapBnd"].strip() == "0000000000000000"  # drop: ALL
    # Python ignores SIGPIPE; the command must not inherit that.
    assert not int(status["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1))


def test_exec_timeout_kills_what_it_started(pod):
    _, st = pod.rec.container("web")
    assert pod.run({"exec": {"command": ["sleep", "30"]}}, timeout=1) == \
        (False, 'command "sleep 30" timed out')
    script = "sleep 31 & sleep 32"
    assert pod.run({"exec": {"command": ["sh", "-c", script]}}, timeout=1) == \
        (False, f'command "sh -c {script}" timed out')
    after = pod.processes("web")
    assert not [p for p in after if p.startswith("sleep")], after
    # Only what the probe started: the container itself lives on.
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert f.read().startswith(b"httpd\0")
    assert pod.run({"tcpSocket": {"port": 80}}) == (True, "")


def test_exec_in_a_container_that_is_gone(pod):
    c, st = pod.rec.container("web")
    ok, msg = pod.run({"exec": {"command": ["true"]}})
    assert ok
    # A PID that is not the container (it exited): joining its namespaces fails, and says so.
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    r = actions.spawn({"exec": {"command": ["true"]}}, ContainerPlan.from_json(c), dead, pod.ip,
                      pod.driver, 5)
    _, status = os.waitpid(r.pid, 0)
    ok, msg = r.finish(status)
    assert not ok
    assert msg.startswith(f"join the namespaces of container 'web' (pid {dead}): /proc/{dead}/")


def test_sleep_action(pod):
    t = time.monotonic()
    assert pod.run({"sleep": {"seconds": 1}}, timeout=None) == (True, "")
    assert time.monotonic() - t >= 1  # it did sleep (a lower bound, not a speed assertion)
    assert pod.run({"sleep": {"seconds": 30}}, timeout=0.2) == \
        (False, "container terminated before sleep hook finished")
