"""`get` and `delete` on real pods, as a kubectl user reads them: ready init containers,
container IDs, -o wide, -o name, -o jsonpath, the API server's defaults, and kubectl delete's
grace period (a busybox `sleep` as PID 1 ignores SIGTERM, so only SIGKILL ends it)."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

INIT = """
apiVersion: v1
kind: Pod
metadata: {name: initd}
spec:
  initContainers:
  - {name: one, image: busybox, command: ["true"]}
  - {name: two, image: busybox, command: ["true"]}
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 1; exit 3"]
    ports: [{containerPort: 8080}]
"""

SLEEPER = """
apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  terminationGracePeriodSeconds: 4
  containers:
  - {name: c, image: busybox, command: ["sleep", "3600"]}
"""


def test_get_views_of_a_pod_with_init_containers(mp):
    mp.minipod("run", "-d", mp.write("initd.yaml", INIT))
    pod = mp.wait(lambda: (p := mp.pod("initd"))["status"]["containerStatuses"][0]
                  .get("lastState", {}).get("terminated") and p, timeout=60,
                  what="the app container to have restarted once")
    inits = pod["status"]["initContainerStatuses"]
    assert [(c["name"], c["ready"]) for c in inits] == [("one", True), ("two", True)]
    assert all(c["state"]["terminated"]["exitCode"] == 0 for c in inits)
    [app] = pod["status"]["containerStatuses"]
    last = app["lastState"]["terminated"]
    assert last["exitCode"] == 3
    assert last["containerID"].startswith("minipod://")
    assert last["containerID"] != app.get("containerID")
    # what the API server fills in
    spec = pod["spec"]
    [c] = spec["containers"]
    assert c["imagePullPolicy"] == "Always" and c["ports"][0]["protocol"] == "TCP"
    assert (c["terminationMessagePath"], c["terminationMessagePolicy"]) == (
        "/dev/termination-log", "File")
    assert (spec["dnsPolicy"], spec["schedulerName"], spec["restartPolicy"],
            spec["securityContext"], spec["enableServiceLinks"]) == (
        "ClusterFirst", "default-scheduler", "Always", {}, True)

    # What get -o yaml prints is a manifest the loader takes back, as kubectl apply would.
    again = mp.write("again.yaml", mp.minipod("get", "pod", "initd", "-o", "yaml").stdout)
    assert "valid (1 pod: initd)" in mp.minipod("validate", again).stdout

    ip = mp.inspect("initd")["network"]["ip"]
    head, row = mp.minipod("get", "pods", "-o", "wide").stdout.splitlines()
    assert head.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                            "NOMINATED", "NODE", "READINESS", "GATES"]
    cells = row.split()
    assert (cells[0], cells[5], cells[6], cells[7], cells[8]) == (
        "initd", ip, socket.gethostname(), "<none>", "<none>")

    assert mp.minipod("get", "pod", "-o", "name").stdout == "pod/initd\n"
    out = mp.minipod("get", "pod", "initd", "-o", "jsonpath={.status.podIP}").stdout
    assert out == ip
    out = mp.minipod("get", "pods", "-o", 'jsonpath={range .items[*]}{.metadata.name}:'
                     '{.status.initContainerStatuses[*].ready}{"\\n"}{end}').stdout
    assert out == "initd:true true\n"
    out = mp.minipod("get", "pod", "initd", "-o",
                     'jsonpath={.status.conditions[?(@.type=="Initialized")].status}').stdout
    assert out == "True"
    bad = mp.minipod("get", "pod", "initd", "-o", "table", check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert 'output format "table"' in bad.stderr
    mp.minipod("delete", "initd", "--now")


def test_delete_is_graceful_by_default_and_now_is_one_second(mp):
    mp.minipod("run", "-d", mp.write("a.yaml", SLEEPER.replace("NAME", "slow")))
    mp.minipod("run", "-d", mp.write("b.yaml", SLEEPER.replace("NAME", "quick")))
    t = time.monotonic()
    out = mp.minipod("delete", "pod", "slow")
    took = time.monotonic() - t
    assert out.stdout == 'pod "slow" deleted\n'
    assert 4 <= took < 20, took  # the pod's terminationGracePeriodSeconds, then SIGKILL
    t = time.monotonic()
    assert mp.minipod("delete", "quick", "--now").stdout == 'pod "quick" deleted\n'
    assert 1 <= time.monotonic() - t < 4
    assert mp.minipod("ps").stderr == "No resources found\n"
    gone = mp.minipod("delete", "quick", check=False)
    assert gone.returncode == 1
    assert gone.stderr == 'Error from server (NotFound): pods "quick" not found\n'
    assert mp.minipod("delete", "quick", "--ignore-not-found").returncode == 0


def test_delete_from_a_file_and_force(mp):
    path = mp.write("c.yaml", SLEEPER.replace("NAME", "forced"))
    mp.minipod("run", "-d", path)
    t = time.monotonic()
    out = mp.minipod("delete", "-f", path, "--force", "--grace-period", "0")
    assert time.monotonic() - t < 4
    assert out.stdout == 'pod "forced" force deleted\n'
    assert out.stderr.startswith("Warning: Immediate deletion does not wait")
    assert json.loads(mp.minipod("get", "pods", "-o", "json").stdout)["items"] == []
    done = SLEEPER.replace("NAME", "done").replace('["sleep", "3600"]', '["true"]')
    mp.minipod("run", "-d", mp.write("d.yaml", done.replace("spec:\n", "spec:\n  restartPolicy:"
                                                             " Never\n", 1)))
    mp.wait(lambda: "Completed" in mp.minipod("ps").stdout, what="the pod to complete")
    assert mp.minipod("delete", "done").stdout == 'pod "done" deleted\n'
    assert mp.minipod("ps").stderr == "No resources found\n"


GRPC = """
apiVersion: v1
kind: Pod
metadata: {name: grpcp}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    readinessProbe:
      grpc: {port: 50051, service: db}
      periodSeconds: 1
"""


def test_a_grpc_probe_is_made_against_the_pod_ip(mp):
    """Nothing listens in the pod: the readiness probe fails with the kubelet's words (the
    success path is tests/unit/test_grpcprobe.py, against a real HTTP/2 server)."""
    mp.minipod("run", "-d", mp.write("g.yaml", GRPC))
    ip = mp.inspect("grpcp")["network"]["ip"]
    text = mp.wait(lambda: (e := mp.minipod("events", "grpcp").stdout) and "Unhealthy" in e
                   and e, timeout=30, what="an Unhealthy event")
    assert (f'Readiness probe failed: error: failed to connect service at "{ip}:50051": dial'
            f" tcp {ip}:50051: connect: connection refused") in text
    assert mp.pod("grpcp")["status"]["containerStatuses"][0]["ready"] is False
    mp.minipod("delete", "grpcp", "--now")


def test_a_grpc_probe_passes_against_a_serving_health_server(mp):
    """A real gRPC health server in the pod's network namespace (run from the host with
    nsenter, as busybox has no gRPC server): ready while it serves, unready once it is gone."""
    import subprocess
    import sys

    mp.minipod("run", "-d", mp.write("g.yaml", GRPC.replace("service: db", "service: ''")))
    sandbox = mp.inspect("grpcp")["sandbox"]["pid"]
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    server = subprocess.Popen(
        ["nsenter", f"--net=/proc/{sandbox}/ns/net", sys.executable,
         os.path.join(tests, "grpc_health.py"), "0.0.0.0", "50051"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "listening\n"
        mp.wait(lambda: mp.pod("grpcp")["status"]["containerStatuses"][0]["ready"],
                timeout=30, what="the grpc readiness probe to pass")
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    mp.wait(lambda: not mp.pod("grpcp")["status"]["containerStatuses"][0]["ready"],
            timeout=30, what="the grpc readiness probe to fail")
    mp.minipod("delete", "grpcp", "--now")
