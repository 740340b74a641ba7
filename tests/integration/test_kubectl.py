"""The real kubectl (1.35, and Debian's 1.20) against `minipod serve` on a free loopback port,
with the `mp` fixture's isolated installation: what a student would type, what they would see.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import reap_orphans
from kubeserve import (Served, ended, kubectl120, kubectl135, procs, ready, served,  # noqa: F401
                       tty_kubectl)

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.slow]

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: kweb}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo hello; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]
    readinessProbe:
      exec: {{command: ["true"]}}
      periodSeconds: 1
  - name: side
    image: busybox
    command: ["sleep", "3600"]
"""


def test_kubectl_drives_a_pod(served, mp):
    """apply, get (-o wide, -o yaml), describe, logs, exec, delete: each as against a cluster,
    and each pod an ordinary minipod pod."""
    name = "kweb-" + mp.bridge[-6:]
    path = mp.write("pod.yaml", POD.format(name=name))
    out = served.k("apply", "-f", path)
    assert out.stdout.strip() == f"pod/{name} created"
    ready(served, name)

    rows = served.k("get", "pods").stdout.splitlines()
    assert rows[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows[1].split()[:4] == [name, "2/2", "Running", "0"]
    ip = mp.inspect(name)["network"]["ip"]
    wide = served.k("get", "pods", "-o", "wide").stdout.splitlines()
    assert re.split(r"\s{2,}", wide[0]) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP",
                                            "NODE", "NOMINATED NODE", "READINESS GATES"]
    assert wide[1].split()[5] == ip
    assert served.k("get", "pods", "-l", "app=kweb", "-o", "name").stdout.strip() == \
        f"pod/{name}"
    nothing = served.k("get", "pods", "-l", "app=other")
    assert nothing.stdout == "" and "No resources found in default namespace." in nothing.stderr
    assert served.k("get", "pods", "--field-selector", "status.phase=Running", "-o",
                    "name").stdout.strip() == f"pod/{name}"
    obj = json.loads(served.k("get", "pod", name, "-o", "json").stdout)
    assert obj["status"]["podIP"] == ip and int(obj["metadata"]["resourceVersion"]) > 0
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]

    # minipod's own view of the same pod.
    assert name in mp.minipod("ps").stdout

    desc = served.k("describe", "pod", name).stdout
    assert re.search(rf"^IP:\s+{re.escape(ip)}$", desc, re.M), desc
    assert re.search(r"Normal\s+Started\s+\S+\s+kubelet\s+.*Started container main", desc), desc

    logs = served.k("logs", name, "-c", "main").stdout.splitlines()
    assert logs[0] == "hello" and logs[1] == "tick 1"
    assert len(served.k("logs", name, "-c", "main", "--tail=2").stdout.splitlines()) == 2
    stamped = served.k("logs", name, "-c", "main", "--tail=1", "--timestamps").stdout
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z tick \d+$", stamped.strip()), stamped
    two = served.k("logs", name, "--tail=1")  # kubectl picks the first, as with a cluster
    assert 'Defaulted container "main" out of: main, side' in two.stderr

    assert served.k("exec", name, "-c", "side", "--", "hostname").stdout.strip() == name
    failed = served.k("exec", name, "-c", "main", "--", "sh", "-c",
                      "echo out; echo err >&2; exit 3", check=False)
    assert (failed.returncode, failed.stdout, failed.stderr.splitlines()[0]) == \
        (3, "out\n", "err")
    assert "command terminated with exit code 3" in failed.stderr
    assert served.k("exec", "-i", name, "-c", "main", "--", "tr", "a-z", "A-Z",
                    input="piped stdin\n").stdout == "PIPED STDIN\n"

    # A re-apply of the same file changes nothing; a changed spec is refused, as for a
    # running pod in Kubernetes.
    assert served.k("apply", "-f", path).stdout.strip() == f"pod/{name} unchanged"
    changed = served.k("apply", "-f", mp.write("pod2.yaml", POD.format(name=name).replace(
        '"3600"', '"3601"')), check=False)
    assert changed.returncode == 1 and "pod updates may not change fields" in changed.stderr

    served.k("label", "pod", name, "tier=front")
    assert served.k("get", "pods", "-l", "tier=front", "-o", "name").stdout.strip() == \
        f"pod/{name}"
    assert served.k("apply", "--server-side", "--force-conflicts", "-f", path).stdout.strip() \
        == f"pod/{name} serverside-applied"

    # delete: graceful (the trap prints bye), and kubectl waits until the pod is gone.
    t0 = time.monotonic()
    out = served.k("delete", "pod", name, timeout=90)
    assert out.stdout.strip() == f'pod "{name}" deleted from default namespace'
    assert time.monotonic() - t0 < 30
    assert name not in mp.minipod("ps").stdout
    gone = served.k("get", "pod", name, check=False)
    assert gone.returncode == 1 and f'pods "{name}" not found' in gone.stderr


def test_get_watch_and_minipod_rm(served, mp):
    """`kubectl get -w` prints a row per change; `minipod rm -f` removes a pod kubectl made,
    and kubectl stops showing it."""
    name = "kwatch-" + mp.bridge[-6:]
    served.k("apply", "-f", mp.write("pod.yaml", POD.format(name=name)))
    ready(served, name)
    w = subprocess.Popen([served.kubectl, "get", "pods", "-w"], env=served.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        mp.minipod("rm", "-f", name)
        mp.wait(lambda: served.k("get", "pods", "-o", "name").stdout == "", 20,
                "kubectl get to stop showing the pod")
        time.sleep(1)
    finally:
        w.terminate()
        out, err = w.communicate(10)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "READY", "STATUS"], out + err
    assert lines[1].split()[:3] == [name, "2/2", "Running"]
    assert any(ln.split()[2] != "Running" for ln in lines[2:]), out  # it saw the change


def test_invalid_manifest_is_a_422_with_minipods_message(served, mp):
    bad = POD.format(name="kbad").replace("    image: busybox\n    command: [\"sleep\"",
                                          "    imagee: busybox\n    command: [\"sleep\"")
    p = served.k("apply", "-f", mp.write("bad.yaml", bad), check=False)
    assert p.returncode == 1
    assert 'The Pod "kbad" is invalid' in p.stderr or 'Pod "kbad" is invalid' in p.stderr
    assert "spec.containers[1].imagee: unknown field (did you mean 'image'?)" in p.stderr
    assert mp.minipod("ps").stderr.strip() == "No resources found"


def test_unauthenticated_requests_get_401(served, mp):
    assert os.stat(served.kubeconfig).st_mode & 0o777 == 0o600
    assert mp.minipod("kubeconfig").stdout.strip() == served.kubeconfig
    assert "client-key-data" in mp.minipod("kubeconfig", "--show").stdout
    ca = os.path.join(os.path.dirname(served.kubeconfig), "ca.crt")
    url = f"https://127.0.0.1:{served.port}/api/v1/namespaces/default/pods"
    curl = subprocess.run(["curl", "-sS", "--cacert", ca, "-o", "-", "-w", "\n%{http_code}",
                           url], capture_output=True, text=True, timeout=30)
    body, code = curl.stdout.rsplit("\n", 1)
    assert code == "401"
    status = json.loads(body)
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 401, "Unauthorized")
    curl = subprocess.run(["curl", "-sS", "--cacert", ca, "-H", "Authorization: Bearer nope",
                           "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url],
                          capture_output=True, text=True, timeout=30)
    assert curl.stdout == "401"
    # The token from the (root-only) api directory works as a bearer token.
    with open(os.path.join(os.path.dirname(served.kubeconfig), "token")) as f:
        token = f.read().strip()
    curl = subprocess.run(["curl", "-sS", "--cacert", ca, "-H", f"Authorization: Bearer {token}",
                           "-o", "/dev/null", "-w", "%{http_code}", url],
                          capture_output=True, text=True, timeout=30)
    assert curl.stdout == "200"
    # kubectl without the admin's certificate (a wrong token) is refused by the server.
    import yaml

    cfg = yaml.safe_load(open(served.kubeconfig))
    cfg["users"][0]["user"] = {"token": "not-the-token"}
    anon = mp.write("anon.kubeconfig", yaml.safe_dump(cfg))
    p = subprocess.run([served.kubectl, "--kubeconfig", anon, "get", "pods"],
                       env=served.env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "error: You must be logged in to the server" in \
        p.stderr, p.stderr


def test_bad_requests_get_a_status_and_the_server_goes_on(served):
    pods = "/api/v1/namespaces/default/pods"
    code, body = served.raw("POST", pods, b"{not json", {"Content-Type": "application/json"})
    assert code == 400 and json.loads(body)["kind"] == "Status"
    code, body = served.raw("POST", pods, b"[1, 2]", {"Content-Type": "application/json"})
    assert code == 400 and "JSON object" in json.loads(body)["message"]
    # A huge body is refused on its Content-Length, before it is read.
    code, body = served.raw("POST", pods, b"{}", {"Content-Length": str(100 << 20)})
    assert code == 413 and json.loads(body)["reason"] == "RequestEntityTooLarge"
    code, body = served.raw("GET", pods + "?watch=1&resourceVersion=banana")
    assert code == 400 and "resourceVersion" in json.loads(body)["message"]
    code, body = served.raw("GET", pods + "?watch=1&resourceVersion=5&timeoutSeconds=2")
    assert code == 200
    event = json.loads(body.split(b"\r\n")[1])  # the first chunk
    assert (event["type"], event["object"]["code"]) == ("ERROR", 410)
    code, body = served.raw("GET", "/api/v1/namespaces/default/services")
    assert code == 404 and 'not "services"' in json.loads(body)["message"]
    code, body = served.raw("GET", pods + "?labelSelector=a%20in%20(b")
    assert code == 400
    code, body = served.raw("GET", pods + "?fieldSelector=spec.nope%3Dx")
    assert code == 400 and "field label not supported" in json.loads(body)["message"]
    # A client that connects and leaves mid-handshake does not stop the others.
    with socket.create_connection(("127.0.0.1", served.port)) as s:
        s.sendall(b"\x16\x03\x01\x00\xff garbage")
        assert served.k("version").returncode == 0
    assert served.proc.poll() is None


def test_exec_tty_resize_exit_code_and_dropped_connection(served, mp):
    name = "ktty-" + mp.bridge[-6:]
    served.k("apply", "-f", mp.write("pod.yaml", POD.format(name=name)))
    ready(served, name)
    rc, out = tty_kubectl(served, ["exec", "-it", name, "-c", "side", "--", "sh"],
                           b"tty; stty size; exit 7\r", 37, 111)
    assert rc == 7, out
    assert re.search(r"/dev/pts/\d+", out) and "37 111" in out, out
    # A dropped connection ends the command: nothing is left running in the container.
    marker = "4242"
    k = subprocess.Popen([served.kubectl, "exec", name, "-c", "side", "--", "sleep", marker],
                         env=served.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sleeps = mp.wait(lambda: procs(f"sleep {marker}"), 20, "the exec'd sleep")
    k.kill()
    k.wait()
    mp.wait(lambda: ended(sleeps), 10, "the exec'd command to be killed with its connection")


def test_kubectl_120(mp, kubectl135, kubectl120):
    """Debian 12's kubectl: reads work; apply validates on the client with the OpenAPI v2
    document minipod serves in protobuf (openapi.py); exec works (over SPDY, its only way)."""
    served = Served(mp, kubectl120)
    try:
        name = "k120-" + mp.bridge[-6:]
        path = mp.write("pod.yaml", POD.format(name=name))
        # It validates on the client against /openapi/v2 (gnostic protobuf): a typo is its
        # own error, before any request is sent; the good file then goes through as it is.
        typo = mp.write("typo.yaml", POD.format(name=name).replace("    image: busybox\n    "
                                                                   "command: [\"sleep\"",
                                                                   "    imagee: busybox\n    "
                                                                   "command: [\"sleep\""))
        p = served.k("apply", "-f", typo, check=False)
        assert p.returncode == 1 and p.stderr == (
            f'error: error validating "{typo}": error validating data: '
            'ValidationError(Pod.spec.containers[1]): unknown field "imagee" in '
            "io.k8s.api.core.v1.Container; if you choose to ignore these errors, turn "
            "validation off with --validate=false\n")
        assert served.k("apply", "-f", path).stdout.strip() == f"pod/{name} created"
        ready(served, name)
        rows = served.k("get", "pods", "-o", "wide").stdout.splitlines()
        assert rows[1].split()[:3] == [name, "2/2", "Running"]
        assert rows[1].split()[5] == mp.inspect(name)["network"]["ip"]
        assert "hello" in served.k("logs", name, "-c", "main").stdout
        # exec over SPDY (test_kubectl_streams.py has the rest of it).
        assert served.k("exec", name, "-c", "side", "--", "hostname").stdout.strip() == name
        served.k("delete", "pod", name, "--grace-period=1", timeout=90)
        assert name not in mp.minipod("ps").stdout
    finally:
        served.stop()


CRASH = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo run; sleep 2; echo done; exit 1"]
"""


def test_logs_follow_previous_and_events(served, mp):
    """logs -f streams one container instance and ends with it (as the kubelet's stream
    does); --previous shows the instance before the restart; get events is the server's
    table."""
    name = "kcrash-" + mp.bridge[-6:]
    served.k("apply", "-f", mp.write("crash.yaml", CRASH.format(name=name)))
    mp.wait(lambda: "run" in served.k("logs", name, check=False).stdout, 30, "the first run")
    t0 = time.monotonic()
    follow = served.k("logs", "-f", name, timeout=30)
    assert follow.stdout == "run\ndone\n" and time.monotonic() - t0 < 10
    mp.wait(lambda: json.loads(served.k("get", "pod", name, "-o", "json").stdout)["status"]
            ["containerStatuses"][0]["restartCount"] >= 1, 30, "a restart")
    assert served.k("logs", name, "--previous").stdout == "run\ndone\n"
    rows = served.k("get", "pods").stdout.splitlines()
    assert re.match(rf"{name}\s+\d/1\s+\S+\s+\d+ \(\d+s ago\)\s+\d+s$", rows[1]), rows
    ev = served.k("get", "events").stdout.splitlines()
    assert ev[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert any(re.search(rf"Normal\s+Started\s+pod/{name}\s+Started container c", ln)
               for ln in ev), ev
    served.k("delete", "pod", name, "--grace-period=0", "--force", timeout=60)


def test_serve_detached_slow_clients_and_stop_ends_execs(mp, kubectl135):
    """`serve -d` answers once it listens; a client that never finishes its request holds up
    nobody; stopping the server ends an exec it relays (no process outlives it)."""
    out = mp.minipod("serve", "-d", "--port", "0").stdout
    m = re.search(r"https://127\.0\.0\.1:(\d+) .*; pid (\d+)", out)
    assert m, out
    port, pid = int(m.group(1)), int(m.group(2))
    env = dict(os.environ, KUBECONFIG=mp.minipod("kubeconfig").stdout.strip(),
               HOME=os.path.join(mp.base, "home"))
    try:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for s in slow:
            s.sendall(b"\x16\x03\x01")  # a TLS record that never ends
        v = subprocess.run([kubectl135, "version"], env=env, capture_output=True, text=True,
                           timeout=30)
        assert "Server Version: v1.35.0-minipod" in v.stdout, v.stdout + v.stderr
        for s in slow:
            s.close()
        name = "kstop-" + mp.bridge[-6:]
        subprocess.run([kubectl135, "apply", "-f", mp.write("p.yaml", POD.format(name=name))],
                       env=env, check=True, capture_output=True, timeout=60)
        subprocess.run([kubectl135, "wait", "--for=condition=Ready", f"pod/{name}"], env=env,
                       check=True, capture_output=True, timeout=90)
        k = subprocess.Popen([kubectl135, "exec", name, "-c", "side", "--", "sleep", "4343"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sleeps = mp.wait(lambda: procs("sleep 4343"), 20, "the exec'd sleep")
    finally:
        os.kill(pid, signal.SIGTERM)
        mp.wait(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 20,
                "minipod serve to stop")
    mp.wait(lambda: ended(sleeps), 10, "the exec to end with the server")
    k.wait(30)
    assert name in mp.minipod("ps").stdout  # the pods stay: they are minipod's, not the API's


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_killed_test_run_leaves_no_server_behind(mp):
    """Served's `minipod serve` dies with the process that started it, even a SIGKILLed one
    whose teardown never runs (it once outlived a killed pytest). The mp fixture's host state
    sees processes by their environment too, so a server left here fails it."""
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    log = os.path.join(mp.base, "orphan-serve.log")
    parent = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {tests!r})
from conftest import tied_popen
with open({log!r}, "w") as f:
    p = tied_popen([sys.executable, "-m", "minipod", "serve", "--port", "0"], stdout=f, stderr=f)
print(p.pid, flush=True)
time.sleep(600)
"""], env=mp.env, stdout=subprocess.PIPE, text=True)
    server = int(parent.stdout.readline())
    mp.wait(lambda: "serving the Kubernetes API" in open(log).read(), 30, "minipod serve")
    parent.kill()
    parent.wait()

    def gone() -> bool:
        reap_orphans()  # we are the subreaper: the orphaned server's exit comes to us
        try:
            with open(f"/proc/{server}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    assert mp.wait(gone, 15, "the orphaned minipod serve to exit")
