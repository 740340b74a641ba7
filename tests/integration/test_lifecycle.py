"""Pod lifecycle with kubelet semantics, observed through minipod's CLI and the host.

The test Env configures a restart back-off of 1 s doubling to 4 s (the kubelet's 10 s .. 300 s
would make these tests take minutes)."""

from __future__ import annotations

import datetime
import os
import signal
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def container(mp, pod: str, name: str) -> dict:
    st = mp.pod(pod)["status"]
    for c in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
        if c["name"] == name:
            return c
    raise KeyError(name)


def ps_status(mp, pod: str) -> str:
    for line in mp.minipod("ps").stdout.splitlines()[1:]:
        if line.split()[0] == pod:
            return line.split()[2]
    return ""


def volume(mp, pod: str, vol: str, name: str) -> str:
    path = os.path.join(mp.inspect(pod)["dirs"]["data"], "volumes", vol, name)
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


INIT = """
apiVersion: v1
kind: Pod
metadata: {name: init}
spec:
  volumes: [{name: data, emptyDir: {}}]
  initContainers:
  - name: flaky
    image: busybox
    command: ["sh", "-c", "echo x >> /d/tries; [ $(wc -l < /d/tries) -ge 3 ]"]
    volumeMounts: [{name: data, mountPath: /d}]
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
"""


def test_init_container_retried_until_it_succeeds(mp):
    mp.minipod("run", "-d", mp.write("init.yaml", INIT))
    seen = set()

    def running():
        seen.add(ps_status(mp, "init"))
        return ps_status(mp, "init") == "Running"

    mp.wait(running, timeout=30, what="the pod to initialise")
    assert any(s.startswith("Init:") for s in seen), seen
    assert volume(mp, "init", "data", "tries") == "x\nx\nx\n"
    flaky = container(mp, "init", "flaky")
    assert flaky["restartCount"] == 2
    assert flaky["state"]["terminated"]["reason"] == "Completed"
    assert container(mp, "init", "app")["ready"] is True
    cond = {c["type"]: c["status"] for c in mp.pod("init")["status"]["conditions"]}
    assert cond["Initialized"] == cond["Ready"] == "True"


def test_init_failure_with_restart_policy_never_fails_the_pod(mp):
    spec = INIT.replace("spec:\n", "spec:\n  restartPolicy: Never\n", 1)
    mp.minipod("run", "-d", mp.write("init.yaml", spec))
    mp.wait(lambda: mp.pod("init")["status"]["phase"] == "Failed", what="the pod to fail")
    assert container(mp, "init", "flaky")["restartCount"] == 0
    assert "running" not in container(mp, "init", "app")["state"]


SIDECAR = """
apiVersion: v1
kind: Pod
metadata: {name: side}
spec:
  restartPolicy: Never
  volumes: [{name: data, emptyDir: {}}]
  initContainers:
  - name: logshipper
    image: busybox
    restartPolicy: Always
    command: ["sh", "-c", "trap 'echo stopped >> /opt/sidecar; exit 0' TERM; tail -F /opt/logs.txt & wait"]
    volumeMounts: [{name: data, mountPath: /opt}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "for i in 1 2 3; do echo logging $i >> /opt/logs.txt; sleep 1; done; sleep 1"]
    volumeMounts: [{name: data, mountPath: /opt}]
"""


def test_sidecar_starts_before_and_stops_after_the_app(mp):
    mp.minipod("run", "-d", mp.write("side.yaml", SIDECAR))
    mp.wait(lambda: mp.pod("side")["status"]["phase"] == "Succeeded", timeout=30,
            what="the pod to complete")
    side = container(mp, "side", "logshipper")
    app = container(mp, "side", "app")
    assert side["state"]["terminated"]["startedAt"] < app["state"]["terminated"]["startedAt"]
    assert side["state"]["terminated"]["finishedAt"] >= app["state"]["terminated"]["finishedAt"]
    assert volume(mp, "side", "data", "sidecar") == "stopped\n"  # SIGTERM, not SIGKILL
    logs = mp.minipod("logs", "side", "-c", "logshipper").stdout
    assert "logging 1\nlogging 2\nlogging 3\n" in logs


def test_crash_loop_back_off_grows(mp):
    spec = """
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: crash
    image: busybox
    command: ["sh", "-c", "cut -d' ' -f1 /proc/uptime >> /d/starts; exit 1"]
    volumeMounts: [{name: data, mountPath: /d}]
"""
    mp.minipod("run", "-d", mp.write("crash.yaml", spec))
    mp.wait(lambda: len(volume(mp, "crash", "data", "starts").split()) >= 5, timeout=40,
            what="five starts")
    assert ps_status(mp, "crash") in ("CrashLoopBackOff", "Error")
    starts = [float(t) for t in volume(mp, "crash", "data", "starts").split()]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # Configured: immediate, then 1 s, 2 s, 4 s (capped at 4 s).
    for gap, delay in zip(gaps, [0, 1, 2, 4]):
        assert gap >= delay - 0.02, (gaps, delay)  # /proc/uptime has 10 ms steps
    assert gaps[3] > gaps[1]
    c = container(mp, "crash", "crash")
    assert c["restartCount"] >= 4
    assert c["lastState"]["terminated"]["exitCode"] == 1


def test_oom_killed(mp):
    spec = """
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox
    command: ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1"]
    resources:
      limits: {memory: 16Mi}
"""
    mp.minipod("run", "-d", mp.write("oom.yaml", spec))
    mp.wait(lambda: mp.pod("oom")["status"]["phase"] == "Failed", what="the OOM kill")
    t = container(mp, "oom", "hog")["state"]["terminated"]
    assert t["reason"] == "OOMKilled" and t["exitCode"] == 137
    assert ps_status(mp, "oom") == "OOMKilled"


def test_stop_waits_for_the_grace_period_in_parallel(mp):
    spec = """
apiVersion: v1
kind: Pod
metadata: {name: sleeps}
spec:
  containers:
  - {name: a, image: busybox, command: ["sleep", "3600"]}
  - {name: b, image: busybox, command: ["sleep", "3600"]}
"""
    grace = 4
    mp.minipod("run", "-d", mp.write("sleeps.yaml", spec))
    t = time.monotonic()
    mp.minipod("stop", "--grace", str(grace), "sleeps")
    took = time.monotonic() - t
    # sleep as PID 1 ignores SIGTERM: each container needs its whole grace period, then SIGKILL.
    assert took >= grace - 0.1, f"stop took {took:.1f}s with a {grace}s grace period"
    ended = []
    for name in ("a", "b"):
        t = container(mp, "sleeps", name)["state"]["terminated"]
        assert t["exitCode"] == 137
        ended.append(datetime.datetime.fromisoformat(t["finishedAt"][:26]))
    # In parallel both are killed when the one grace period ends; one after the other (podman's
    # way) the second would end a whole period after the first. The kill times say which, even
    # on a loaded machine where the stop as a whole takes longer.
    apart = abs((ended[0] - ended[1]).total_seconds())
    assert apart < grace / 2, f"the containers were killed {apart:.1f}s apart: not in parallel"


def test_sandbox_death_recreates_the_pod(mp):
    mp.minipod("run", "-d", mp.write("init.yaml", INIT))
    mp.wait(lambda: ps_status(mp, "init") == "Running", timeout=30, what="the pod")
    before = mp.inspect("init")
    os.kill(before["sandbox"]["pid"], signal.SIGKILL)

    def recreated():
        info = mp.inspect("init")
        app = next(c for c in info["containers"] if c["name"] == "app")
        return info if (info["sandbox"]["pid"] not in (0, before["sandbox"]["pid"])
                        and app["state"] == "running") else None

    after = mp.wait(recreated, timeout=30, what="a new sandbox")
    # (Namespace inode numbers are recycled, so a new netns may show the old number.)
    app = next(c for c in after["containers"] if c["name"] == "app")
    assert app["namespaces"]["net"] == after["sandbox"]["namespaces"]["net"]
    # The init container ran again in the new sandbox.
    assert volume(mp, "init", "data", "tries").count("x") >= 4
    reasons = [e["reason"] for e in mp.inspect("init").get("events", [])] or \
        _events(mp, "init")
    assert "SandboxChanged" in reasons


def test_completed_pod_releases_its_sandbox(mp):
    spec = """
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  restartPolicy: OnFailure
  containers:
  - {name: ok, image: busybox, command: ["true"]}
"""
    mp.minipod("run", "-d", mp.write("done.yaml", spec))
    mp.wait(lambda: mp.pod("done")["status"]["phase"] == "Succeeded", what="completion")
    assert ps_status(mp, "done") == "Completed"
    info = mp.inspect("done")
    assert info["sandbox"]["pid"] == 0 and info["supervisor"]["pid"] == 0
    assert not os.path.exists(f"/sys/class/net/{info['network']['hostVeth']}")


def _events(mp, pod):
    import json

    with open(os.path.join(mp.root, "pods", pod, "state.json")) as f:
        return [e["reason"] for e in json.load(f).get("events", [])]


PROBES = """
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 2   # sleep as PID 1 ignores SIGTERM: keep the kill short
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"]
    readinessProbe:
      httpGet: {path: /index.html, port: 80}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {port: 80}
      periodSeconds: 1
  - name: lively
    image: busybox
    command: ["sh", "-c", "touch /tmp/alive; exec sleep 3600"]
    livenessProbe:
      exec: {command: [cat, /tmp/alive]}
      periodSeconds: 1
      failureThreshold: 2
    lifecycle:
      postStart:
        exec: {command: [sh, -c, "echo started >> /d/hooks"]}
      preStop:
        exec: {command: [sh, -c, "echo stopping >> /d/hooks"]}
    volumeMounts: [{name: data, mountPath: /d}]
"""


def test_probes_and_hooks(mp):
    mp.minipod("run", "-d", mp.write("probed.yaml", PROBES))
    # An httpGet readiness probe made by minipod itself: busybox has no curl.
    mp.wait(lambda: container(mp, "probed", "web")["ready"], what="readiness")
    mp.wait(lambda: container(mp, "probed", "lively")["ready"], what="postStart")
    assert volume(mp, "probed", "data", "hooks") == "started\n"  # postStart ran

    # A failing readiness probe only flips Ready; the container is not restarted.
    mp.minipod("exec", "probed", "-c", "web", "--", "rm", "/www/index.html")
    mp.wait(lambda: not container(mp, "probed", "web")["ready"], what="unready")
    assert container(mp, "probed", "web")["restartCount"] == 0
    cond = {c["type"]: c["status"] for c in mp.pod("probed")["status"]["conditions"]}
    assert cond["Ready"] == "False"
    assert mp.minipod("ps").stdout.splitlines()[1].split()[1] == "1/2"

    # A failing liveness probe restarts the container (after preStop ran).
    mp.minipod("exec", "probed", "-c", "lively", "--", "rm", "/tmp/alive")
    mp.wait(lambda: container(mp, "probed", "lively")["restartCount"] == 1, what="restart")
    assert volume(mp, "probed", "data", "hooks").startswith("started\nstopping\nstarted")
    events = mp.minipod("events", "probed").stdout
    assert "Unhealthy" in events and "Liveness probe failed" in events
    assert "failed liveness probe, will be restarted" in events
    assert "Readiness probe failed: HTTP probe failed with statuscode: 404" in events


def test_pre_stop_runs_within_the_grace_period(mp):
    # The container traps SIGTERM and notes it; the preStop hook notes itself, then takes a
    # while. The kubelet runs preStop first and sends the signal only when it has returned, so
    # the notes must come in that order, and the trap's after the hook's "done".
    spec = """
apiVersion: v1
kind: Pod
metadata: {name: hooked}
spec:
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "trap 'echo sigterm >> /d/order; exit 0' TERM; while true; do sleep 1 & wait $!; done"]
    lifecycle:
      preStop:
        exec: {command: [sh, -c, "echo prestop >> /d/order; sleep 1; echo prestop-done >> /d/order"]}
    volumeMounts: [{name: data, mountPath: /d}]
"""
    mp.minipod("run", "-d", mp.write("hooked.yaml", spec))
    mp.wait(lambda: container(mp, "hooked", "app")["state"].get("running"), what="running")
    mp.minipod("stop", "--grace", "5", "hooked")
    assert volume(mp, "hooked", "data", "order") == "prestop\nprestop-done\nsigterm\n"
    assert container(mp, "hooked", "app")["state"]["terminated"]["exitCode"] == 0  # not killed


def test_logs_previous_describe_and_watch(mp):
    import subprocess
    import sys

    spec = """
apiVersion: v1
kind: Pod
metadata: {name: again}
spec:
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "touch /d/n; echo run $(wc -l < /d/n); echo x >> /d/n; sleep 1; exit 3"]
    volumeMounts: [{name: data, mountPath: /d}]
"""
    watch = subprocess.Popen([sys.executable, "-m", "minipod", "get", "pods", "-w"], env=mp.env,
                             stdout=subprocess.PIPE, text=True)
    try:
        mp.minipod("run", "-d", mp.write("again.yaml", spec))
        mp.wait(lambda: container(mp, "again", "app")["restartCount"] >= 1, what="a restart")
        mp.wait(lambda: "run 1" in mp.minipod("logs", "again").stdout, what="second run's log")
        assert mp.minipod("logs", "again", "--previous").stdout == "run 0\n"
        text = mp.minipod("describe", "pod", "again").stdout
        assert "Name:         again" in text and "Restart Count:  " in text
        assert "Last State:     Terminated" in text and "Exit Code:    3" in text
        mp.wait(lambda: "BackOff" in mp.minipod("events", "again").stdout, what="back-off")
        events = mp.minipod("events", "again").stdout
        assert "Started" in events and "Back-off restarting failed container app" in events
    finally:
        watch.terminate()
        out = watch.communicate(timeout=10)[0]
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "READY", "STATUS"]
    statuses = [ln.split()[2] for ln in lines[1:]]
    assert "Running" in statuses and len(statuses) >= 2  # a row per change


def test_seed_sidecar_deployment_runs_as_written(mp, lab_registry):
    """The lab's logging sidecar, exactly as the seed wrote it (a Deployment of alpine:latest):
    minipod runs its pod template, the sidecar tails what the app writes over an emptyDir."""
    if lab_registry is None:
        pytest.skip("needs docker-registry for alpine:latest")
    from conftest import REPO

    path = os.path.join(REPO, "tests", "fixtures", "manifests", "logging-sidecar-deployment.yaml")
    p = mp.minipod("run", "-d", path)
    assert p.stdout.strip() == "myapp-pod"
    mp.wait(lambda: "logging" in mp.minipod("logs", "myapp-pod", "-c", "logshipper").stdout,
            timeout=30, what="the sidecar to ship a line")
    side = container(mp, "myapp-pod", "logshipper")
    app = container(mp, "myapp-pod", "myapp")
    assert side["state"]["running"]["startedAt"] <= app["state"]["running"]["startedAt"]
    assert ps_status(mp, "myapp-pod") == "Running"


def test_second_ctrl_c_skips_the_grace_period(mp):
    import subprocess
    import sys

    spec = """
apiVersion: v1
kind: Pod
metadata: {name: slow}
spec:
  terminationGracePeriodSeconds: 600
  containers:
  - {name: a, image: busybox, command: ["sleep", "3600"]}
"""
    path = mp.write("slow.yaml", spec)
    p = subprocess.Popen([sys.executable, "-m", "minipod", "run", path], env=mp.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        mp.wait(lambda: ps_status(mp, "slow") == "Running", what="the pod")
        os.killpg(p.pid, signal.SIGINT)
        mp.wait(lambda: ps_status(mp, "slow") == "Terminating", what="Terminating")
        os.killpg(p.pid, signal.SIGINT)  # sleep ignores SIGTERM: without this, 600 s
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert container(mp, "slow", "a")["state"]["terminated"]["exitCode"] == 137


def test_running_a_manifest_again_replaces_the_stopped_pod(mp):
    path = mp.write("done.yaml", """
apiVersion: v1
kind: Pod
metadata: {name: again}
spec:
  restartPolicy: Never
  containers:
  - {name: a, image: busybox, command: ["true"]}
""")
    mp.minipod("run", "-d", path)
    first = mp.pod("again")["metadata"]["uid"]
    mp.wait(lambda: mp.pod("again")["status"]["phase"] == "Succeeded", what="completion")
    mp.minipod("run", "-d", path)
    assert mp.pod("again")["metadata"]["uid"] != first
