"""minipod.cli.describe: `kubectl describe pod` and `kubectl get events` from hand-built pod records.

Expected texts follow kubectl 1.36 output; the alignment rules are checked against real kubectl
output from the seeds (002: `kubectl describe po mc1`).
"""

from __future__ import annotations

import calendar
import time

import pytest

from minipod.cli import describe, status

T0 = calendar.timegm((2024, 3, 10, 19, 10, 10, 0, 0, 0))  # Sun, 10 Mar 2024 19:10:10 +0000
IMAGE_ID = "sha256:" + "ab" * 32


class FakeRecord:
    """What describe reads of a minipod.state.PodRecord."""

    def __init__(self, plan: dict, state: dict, active: bool = True):
        self.plan, self.state, self.name, self.active = plan, state, plan["name"], active


@pytest.fixture(autouse=True)
def utc_node(monkeypatch):
    """Local time is UTC and the node is minikube/192.168.49.2, whatever this machine is."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(status, "_node", lambda: "minikube")
    monkeypatch.setattr(status, "_host_ip", lambda: "192.168.49.2")
    yield
    monkeypatch.undo()
    time.tzset()


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".123456789Z"


def ctr(name: str, image: str = "busybox", **spec) -> dict:
    return {"name": name, "image": image, "image_digest": IMAGE_ID,
            "spec": {"name": name, "image": image, **spec}}


def plan(name: str, containers: list[dict], init: list[dict] | None = None, volumes=None,
         **extra) -> dict:
    p = {"name": name, "namespace": "default", "uid": "0000-1111", "created": T0,
         "restart_policy": "Always", "grace_seconds": 30, "qos_class": "BestEffort",
         "labels": {}, "annotations": {}, "containers": containers,
         "init_containers": init or [],
         "manifest": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                      "spec": {"volumes": volumes or []}}}
    p.update(extra)
    return p


def running(name: str, started: float, restarts: int = 0, kind: str = "app") -> dict:
    return {"name": name, "kind": kind, "pid": 100, "containerID": "c0ffee" + name,
            "restartCount": restarts, "state": {"running": {"startedAt": iso(started)}},
            "lastState": {}, "ready": True, "started": True, "instance": restarts,
            "image": "busybox", "imageID": IMAGE_ID}


def terminated(name: str, code: int, reason: str, started: float, finished: float,
               kind: str = "app") -> dict:
    return {"name": name, "kind": kind, "pid": 0, "containerID": "c0ffee" + name,
            "restartCount": 0, "ready": False, "started": False, "lastState": {},
            "image": "busybox", "imageID": IMAGE_ID,
            "state": {"terminated": {"reason": reason, "exitCode": code,
                                     "startedAt": iso(started), "finishedAt": iso(finished)}}}


def event(reason: str, message: str, obj: str, first: float, last: float | None = None,
          count: int = 1, kind: str = "Normal") -> dict:
    return {"type": kind, "reason": reason, "message": message, "object": obj, "count": count,
            "firstTimestamp": first, "lastTimestamp": last or first}


def pod_state(containers: dict, events=(), **extra) -> dict:
    st = {"phase": "Running", "final": False, "stopping": False, "message": "",
          "sandbox_pid": 42, "network": {"ip": "10.244.0.5"}, "started_at": T0,
          "apps_started": True, "containers": containers, "events": list(events)}
    st.update(extra)
    return st


def section(text: str, first: str, end: str) -> list[str]:
    """The lines from the one equal to `first` up to (not including) the one equal to `end`."""
    lines = text.split("\n")
    start = lines.index(first)
    return lines[start:lines.index(end, start + 1)]


# --- the whole output ---------------------------------------------------------------------------

def test_running_two_container_pod_reads_like_kubectl():
    # seed 002's mc1, minus what a cluster adds (service account, its token volume, tolerations).
    p = plan("mc1", [
        ctr("1st", "nginx", volumeMounts=[{"name": "html", "mountPath": "/usr/share/nginx/html"}]),
        ctr("2nd", "debian", command=["/bin/sh", "-c"],
            args=["while true; do date >> /html/index.html; sleep 1; done"],
            volumeMounts=[{"name": "html", "mountPath": "/html"}]),
    ], volumes=[{"name": "html", "emptyDir": {}}], labels={"app": "mc1"})
    st = pod_state({"1st": running("1st", T0 + 3), "2nd": running("2nd", T0 + 9)}, events=[
        event("Started", "Started container 1st", "spec.containers{1st}", T0 + 3),
        event("Started", "Started container 2nd", "spec.containers{2nd}", T0 + 9)])
    text = describe.describe(FakeRecord(p, st), now=T0 + 48)
    assert text == f"""\
Name:         mc1
Namespace:    default
Priority:     0
Node:         minikube/192.168.49.2
Start Time:   Sun, 10 Mar 2024 19:10:10 +0000
Labels:       app=mc1
Annotations:  <none>
Status:       Running
IP:           10.244.0.5
IPs:
  IP:  10.244.0.5
Containers:
  1st:
    Container ID:   minipod://c0ffee1st
    Image:          nginx
    Image ID:       {IMAGE_ID}
    Port:           <none>
    Host Port:      <none>
    State:          Running
      Started:      Sun, 10 Mar 2024 19:10:13 +0000
    Ready:          True
    Restart Count:  0
    Environment:    <none>
    Mounts:
      /usr/share/nginx/html from html (rw)
  2nd:
    Container ID:  minipod://c0ffee2nd
    Image:         debian
    Image ID:      {IMAGE_ID}
    Port:          <none>
    Host Port:     <none>
    Command:
      /bin/sh
      -c
    Args:
      while true; do date >> /html/index.html; sleep 1; done
    State:          Running
      Started:      Sun, 10 Mar 2024 19:10:19 +0000
    Ready:          True
    Restart Count:  0
    Environment:    <none>
    Mounts:
      /html from html (rw)
Conditions:
  Type                        Status
  PodReadyToStartContainers   True 
  Initialized                 True 
  Ready                       True 
  ContainersReady             True 
  PodScheduled                True 
Volumes:
  html:
    Type:        EmptyDir (a temporary directory that shares a pod's lifetime)
    Medium:      
    SizeLimit:   <unset>
QoS Class:       BestEffort
Node-Selectors:  <none>
Tolerations:     <none>
Events:
  Type    Reason   Age   From     Message
  ----    ------   ----  ----     -------
  Normal  Started  45s   kubelet  spec.containers{{1st}}: Started container 1st
  Normal  Started  39s   kubelet  spec.containers{{2nd}}: Started container 2nd
"""


def test_tabwrite_aligns_like_kubectl():
    # Tab-separated as kubectl writes it -> the exact bytes of seed 002's `kubectl describe po
    # mc1`: a line without a tab ends the alignment block; empty cells are padded.
    tabbed = "\n".join([
        "  2nd:", "    Container ID:\tdocker://2dd7", "    Image:\tdebian",
        "    Port:\t<none>", "    Command:", "      /bin/sh", "    State:\tRunning",
        "      Started:\tSun, 10 Mar 2024 19:10:19 +0000", "    Ready:\tTrue",
        "    Restart Count:\t0", "    Mounts:", "Volumes:", "  html:",
        "    Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)",
        "    Medium:\t", "    SizeLimit:\t<unset>", "  kube-api-access-qfdjs:",
        "    TokenExpirationSeconds:\t3607", "QoS Class:\tBestEffort", ""])
    assert describe.tabwrite(tabbed) == "\n".join([
        "  2nd:",
        "    Container ID:  docker://2dd7",
        "    Image:         debian",
        "    Port:          <none>",
        "    Command:",
        "      /bin/sh",
        "    State:          Running",
        "      Started:      Sun, 10 Mar 2024 19:10:19 +0000",
        "    Ready:          True",
        "    Restart Count:  0",
        "    Mounts:",
        "Volumes:",
        "  html:",
        "    Type:       EmptyDir (a temporary directory that shares a pod's lifetime)",
        "    Medium:     ",
        "    SizeLimit:  <unset>",
        "  kube-api-access-qfdjs:",
        "    TokenExpirationSeconds:  3607",
        "QoS Class:                   BestEffort",
        ""])


# --- containers -----------------------------------------------------------------------------------

def test_init_containers_and_a_native_sidecar():
    p = plan("side", [ctr("app", command=["sleep", "1d"])], init=[
        ctr("setup", command=["true"]),
        ctr("logs", command=["tail", "-F", "/data/log"], restartPolicy="Always",
            volumeMounts=[{"name": "data", "mountPath": "/data", "readOnly": True}]),
    ], volumes=[{"name": "data", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}])
    st = pod_state({"setup": terminated("setup", 0, "Completed", T0, T0 + 1, kind="init"),
                    "logs": running("logs", T0 + 1, kind="sidecar"),
                    "app": running("app", T0 + 2)})
    text = describe.describe(FakeRecord(p, st), now=T0 + 60)
    assert section(text, "Init Containers:", "Containers:") == [
        "Init Containers:",
        "  setup:",
        "    Container ID:  minipod://c0ffeesetup",
        "    Image:         busybox",
        f"    Image ID:      {IMAGE_ID}",
        "    Port:          <none>",
        "    Host Port:     <none>",
        "    Command:",
        "      true",
        "    State:          Terminated",
        "      Reason:       Completed",
        "      Exit Code:    0",
        "      Started:      Sun, 10 Mar 2024 19:10:10 +0000",
        "      Finished:     Sun, 10 Mar 2024 19:10:11 +0000",
        # A completed init container is ready (prober_manager.go UpdatePodStatus).
        "    Ready:          True",
        "    Restart Count:  0",
        "    Environment:    <none>",
        "    Mounts:         <none>",
        "  logs:",
        "    Container ID:  minipod://c0ffeelogs",
        "    Image:         busybox",
        f"    Image ID:      {IMAGE_ID}",
        "    Port:          <none>",
        "    Host Port:     <none>",
        "    Command:",
        "      tail",
        "      -F",
        "      /data/log",
        "    State:          Running",
        "      Started:      Sun, 10 Mar 2024 19:10:11 +0000",
        "    Ready:          True",
        "    Restart Count:  0",
        "    Environment:    <none>",
        "    Mounts:",
        "      /data from data (ro)",
    ]
    assert section(text, "Volumes:", "Events:          <none>") == [
        "Volumes:",
        "  data:",
        "    Type:        EmptyDir (a temporary directory that shares a pod's lifetime)",
        "    Medium:      Memory",
        "    SizeLimit:   16Mi",
        "QoS Class:       BestEffort",
        "Node-Selectors:  <none>",
        "Tolerations:     <none>",
    ]
    assert "  Initialized                 True " in text.split("\n")


def test_app_containers_wait_while_init_runs():
    p = plan("init", [ctr("app")], init=[ctr("setup")])
    app = {"name": "app", "kind": "app", "pid": 0, "containerID": "", "restartCount": 0,
           "state": {"waiting": {"reason": "PodInitializing"}}, "lastState": {}, "ready": False,
           "started": False, "instance": 0, "image": "busybox", "imageID": IMAGE_ID}
    st = pod_state({"setup": running("setup", T0, kind="init"), "app": app},
                   apps_started=False, phase="Pending")
    st["containers"]["setup"]["ready"] = False
    lines = describe.describe(FakeRecord(p, st), now=T0 + 5).split("\n")
    app = lines[lines.index("  app:"):lines.index("Conditions:")]
    assert app[4:] == [
        "    Port:           <none>",
        "    Host Port:      <none>",
        "    State:          Waiting",
        "      Reason:       PodInitializing",
        "    Ready:          False",
        "    Restart Count:  0",
        "    Environment:    <none>",
        "    Mounts:         <none>",
    ]
    assert "Status:       Pending" in lines
    assert "  Initialized                 False " in lines


def test_crashloop_shows_the_last_termination():
    crash = {"name": "crash", "kind": "app", "pid": 0, "containerID": "c0ffeecrash",
             "restartCount": 4, "ready": False, "started": False, "image": "busybox",
             "imageID": IMAGE_ID,
             "state": {"waiting": {"reason": "CrashLoopBackOff",
                                   "message": "back-off 40s restarting failed container"}},
             "lastState": {"terminated": {"reason": "Error", "exitCode": 1,
                                          "startedAt": iso(T0 + 70), "finishedAt": iso(T0 + 71),
                                          "containerID": "c0ffeecrash"}}}
    p = plan("crashy", [ctr("crash", command=["sh", "-c", "exit 1"])])
    text = describe.describe(FakeRecord(p, pod_state({"crash": crash})), now=T0 + 80)
    assert section(text, "    Command:", "Conditions:") == [
        "    Command:",
        "      sh",
        "      -c",
        "      exit 1",
        "    State:          Waiting",
        "      Reason:       CrashLoopBackOff",
        "    Last State:     Terminated",
        "      Reason:       Error",
        "      Exit Code:    1",
        "      Started:      Sun, 10 Mar 2024 19:11:20 +0000",
        "      Finished:     Sun, 10 Mar 2024 19:11:21 +0000",
        "    Ready:          False",
        "    Restart Count:  4",
        "    Environment:    <none>",
        "    Mounts:         <none>",
    ]
    assert "  Ready                       False " in text.split("\n")


def test_ports_resources_probes_env_and_mounts():
    web = ctr(
        "web",
        ports=[{"containerPort": 80, "protocol": "TCP", "name": "http"},
               {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}],
        resources={"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "100m"}},
        livenessProbe={"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"},
                       "initialDelaySeconds": 0, "timeoutSeconds": 1, "periodSeconds": 10,
                       "successThreshold": 1, "failureThreshold": 3},
        readinessProbe={"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 2},
        startupProbe={"tcpSocket": {"port": 8080}, "failureThreshold": 30},
        env=[{"name": "GREETING", "value": "hello\nworld"},
             {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                        "fieldPath": "metadata.name"}}},
             {"name": "IP", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                       "fieldPath": "status.podIP"}}},
             {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                "divisor": "1Mi"}}},
             {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu",
                                                                "divisor": "1m"}}}],
        volumeMounts=[{"name": "data", "mountPath": "/var/www", "subPath": "www"},
                      {"name": "data", "mountPath": "/etc/app", "readOnly": True}])
    p = plan("web", [web], volumes=[{"name": "data"}])
    text = describe.describe(FakeRecord(p, pod_state({"web": running("web", T0)})), now=T0)
    assert section(text, "  web:", "Conditions:")[4:] == [
        "    Ports:          80/TCP (http), 53/UDP",
        "    Host Ports:     0/TCP (http), 5353/UDP",
        "    State:          Running",
        "      Started:      Sun, 10 Mar 2024 19:10:10 +0000",
        "    Ready:          True",
        "    Restart Count:  0",
        "    Limits:",
        "      cpu:     500m",
        "      memory:  64Mi",
        "    Requests:",                 # the API server copies a limit into a missing request
        "      cpu:      100m",          # (one alignment block with the probe lines)
        "      memory:   64Mi",
        "    Liveness:   http-get http://:80/ delay=0s timeout=1s period=10s #success=1 #failure=3",
        "    Readiness:  exec [cat /tmp/ready] delay=0s timeout=1s period=2s #success=1 #failure=3",
        "    Startup:    tcp-socket :8080 delay=0s timeout=1s period=10s #success=1 #failure=30",
        "    Environment:",
        "      GREETING:  hello",
        "                 world",
        "      POD:       web (v1:metadata.name)",
        "      IP:         (v1:status.podIP)",     # kubectl resolves metadata.name/namespace only
        "      MEM:       64 (limits.memory)",
        "      CPU:       100 (requests.cpu)",
        "    Mounts:",
        "      /etc/app from data (ro)",
        '      /var/www from data (rw,path="www")',
    ]


@pytest.mark.parametrize("probe, want", [
    ({"httpGet": {"path": "/healthz", "port": "http", "host": "10.0.0.1", "scheme": "HTTPS"}},
     "http-get https://10.0.0.1:http/healthz"),
    ({"httpGet": {"path": "status page?x", "port": 8080}},
     "http-get http://:8080/status%20page%3Fx"),
    ({"httpGet": {"path": "/", "port": 80, "host": "fd00::1"}}, "http-get http://[fd00::1]:80/"),
    ({"tcpSocket": {"port": 5432, "host": "db"}}, "tcp-socket db:5432"),
    ({"exec": {"command": ["sh", "-c", "test -f /ok"]}}, "exec [sh -c test -f /ok]"),
    ({"grpc": {"port": 9000, "service": ""}}, "grpc <pod>:9000 "),
])
def test_probe_formats(probe, want):
    assert describe.describe_probe(probe) == \
        want + " delay=0s timeout=1s period=10s #success=1 #failure=3"


def test_resource_env_values():
    def ref(resource: str) -> dict:
        return {"name": "V", "valueFrom": {"resourceFieldRef": {"resource": resource}}}

    spec = {"name": "x", "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m"}},
            "env": [ref("limits.cpu"), ref("requests.cpu"), ref("requests.memory")]}
    pod = {"metadata": {"name": "p", "namespace": "default"}}
    assert describe._environment(spec, pod) == [
        "    Environment:",
        "      V:\tnode allocatable (limits.cpu)",   # no limit: the container may use the node
        "      V:\t1 (requests.cpu)",                # 250m in whole cores, rounded up
        "      V:\t1073741824 (requests.memory)",    # the limit, copied into the request
    ]


# --- header -------------------------------------------------------------------------------------

def test_labels_and_annotations_are_sorted_and_long_ones_folded():
    long = "x" * 150
    p = plan("meta", [ctr("c")], labels={"tier": "web", "app": "shop"}, annotations={
        "kubectl.kubernetes.io/last-applied-configuration": "{...}",
        "b": "two\nlines\n", "a": "short", "c": long})
    text = describe.describe(FakeRecord(p, pod_state({"c": running("c", T0)})), now=T0)
    assert section(text, "Labels:       app=shop", "Status:       Running") == [
        "Labels:       app=shop",
        "              tier=web",
        "Annotations:  a: short",
        "              b:",
        "                two",
        "                lines",
        "              c:",
        "                " + "x" * 138 + "...",
    ]


def test_terminating_pod():
    p = plan("bye", [ctr("c")])
    st = pod_state({"c": running("c", T0)}, stopping=True, stop_requested_at=T0 + 100,
                   stop_grace=30)
    during = describe.describe(FakeRecord(p, st), now=T0 + 110).split("\n")
    # deletionTimestamp = request + grace: kubectl says "<invalid>" until the deadline passes
    assert "Status:                    Terminating (lasts <invalid>)" in during
    assert "Termination Grace Period:  30s" in during
    after = describe.describe(FakeRecord(p, st), now=T0 + 135).split("\n")
    assert "Status:                    Terminating (lasts 5s)" in after
    del st["stop_requested_at"], st["stop_grace"]
    unknown = describe.describe(FakeRecord(p, st), now=T0 + 110).split("\n")
    assert "Status:                    Terminating (lasts <unknown>)" in unknown


def test_finished_pod():
    p = plan("job", [ctr("main", command=["echo", "done"])], restart_policy="Never")
    st = pod_state({"main": terminated("main", 0, "Completed", T0 + 1, T0 + 2)},
                   phase="Succeeded", final=True, sandbox_pid=0, finished_at=T0 + 3)
    text = describe.describe(FakeRecord(p, st, active=False), now=T0 + 3600)
    lines = text.split("\n")
    assert lines[7:11] == ["Status:       Succeeded", "IP:           ", "IPs:          <none>",
                           "Containers:"]
    assert section(text, "    State:          Terminated", "Conditions:") == [
        "    State:          Terminated",
        "      Reason:       Completed",
        "      Exit Code:    0",
        "      Started:      Sun, 10 Mar 2024 19:10:11 +0000",
        "      Finished:     Sun, 10 Mar 2024 19:10:12 +0000",
        "    Ready:          False",
        "    Restart Count:  0",
        "    Environment:    <none>",
        "    Mounts:         <none>",
    ]
    assert lines[lines.index("Conditions:"):] == [
        "Conditions:",
        "  Type                        Status",
        "  PodReadyToStartContainers   False ",
        "  Initialized                 True ",
        "  Ready                       False ",
        "  ContainersReady             False ",
        "  PodScheduled                True ",
        "Volumes:                      <none>",
        "QoS Class:                    BestEffort",
        "Node-Selectors:               <none>",
        "Tolerations:                  <none>",
        "Events:                       <none>",
        "",
    ]


def test_start_time_is_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    p = plan("tz", [ctr("c")])
    text = describe.describe(FakeRecord(p, pod_state({"c": running("c", T0)})), now=T0)
    assert "Start Time:   Sun, 10 Mar 2024 14:10:10 -0500" in text.split("\n")


# --- events -------------------------------------------------------------------------------------

def crashloop_events() -> list[dict]:
    """A container restarted 4 times over 5 minutes: the supervisor records a repeat as a new
    event when another one came in between."""
    evs = [event("SandboxReady", "pod sandbox 7 ready, IP 10.244.0.5", "", T0)]
    for i, t in enumerate((T0 + 1, T0 + 11, T0 + 40, T0 + 118)):
        evs.append(event("Started", "Started container crash", "spec.containers{crash}", t))
        evs.append(event("BackOff", "Back-off restarting failed container crash in pod crashy",
                         "spec.containers{crash}", t + 0.5, kind="Warning"))
    evs.append(event("Started", "Started container setup", "spec.containers{setup}", T0 + 0.2))
    return evs


def test_describe_events_table():
    p = plan("crashy", [ctr("crash")], init=[ctr("setup")])
    st = pod_state({}, events=crashloop_events())
    lines = describe.describe(FakeRecord(p, st), now=T0 + 300).split("\n")
    assert lines[lines.index("Events:"):] == [
        "Events:",
        "  Type     Reason        Age                   From     Message",
        "  ----     ------        ----                  ----     -------",
        "  Normal   SandboxReady  5m                    kubelet  "
        "pod sandbox 7 ready, IP 10.244.0.5",
        "  Normal   Started       4m59s                 kubelet  "
        "spec.initContainers{setup}: Started container setup",
        "  Normal   Started       3m2s (x4 over 4m59s)  kubelet  "
        "spec.containers{crash}: Started container crash",
        "  Warning  BackOff       3m1s (x4 over 4m58s)  kubelet  "
        "spec.containers{crash}: Back-off restarting failed container crash in pod crashy",
        "",
    ]


def test_get_events_for_all_pods_sorted_by_last_seen():
    a = FakeRecord(plan("crashy", [ctr("crash")], init=[ctr("setup")]),
                   pod_state({}, events=crashloop_events()))
    b = FakeRecord(plan("web", [ctr("web")]), pod_state({}, events=[
        event("Started", "Started container web", "spec.containers{web}", T0 + 60),
        event("Killing", "Stopping container web", "spec.containers{web}", T0 + 200)]))
    assert describe.events([a, b], now=T0 + 300).split("\n") == [
        "LAST SEEN   TYPE      REASON         OBJECT       MESSAGE",
        "5m          Normal    SandboxReady   pod/crashy   pod sandbox 7 ready, IP 10.244.0.5",
        "4m59s       Normal    Started        pod/crashy   Started container setup",
        "4m          Normal    Started        pod/web      Started container web",
        "3m2s        Normal    Started        pod/crashy   Started container crash",
        "3m1s        Warning   BackOff        pod/crashy   "
        "Back-off restarting failed container crash in pod crashy",
        "100s        Normal    Killing        pod/web      Stopping container web",
    ]


def test_get_events_wide_names_the_container():
    rec = FakeRecord(plan("crashy", [ctr("crash")], init=[ctr("setup")]),
                     pod_state({}, events=crashloop_events()[:3] + crashloop_events()[-1:]))
    assert describe.events([rec], now=T0 + 300, wide=True).split("\n") == [
        "LAST SEEN   TYPE      REASON         OBJECT       SUBOBJECT                    "
        "SOURCE              MESSAGE                                                    "
        "FIRST SEEN   COUNT   NAME",
        "5m          Normal    SandboxReady   pod/crashy                                "
        "kubelet, minikube   pod sandbox 7 ready, IP 10.244.0.5                         "
        "5m           1       crashy.17bb7ce5d0393400",
        "4m59s       Normal    Started        pod/crashy   spec.initContainers{setup}   "
        "kubelet, minikube   Started container setup                                    "
        "4m59s        1       crashy.17bb7ce5dc24f600",
        "4m59s       Normal    Started        pod/crashy   spec.containers{crash}       "
        "kubelet, minikube   Started container crash                                    "
        "4m59s        1       crashy.17bb7ce60bd3fe00",
        "4m58s       Warning   BackOff        pod/crashy   spec.containers{crash}       "
        "kubelet, minikube   Back-off restarting failed container crash in pod crashy   "
        "4m58s        1       crashy.17bb7ce629a16300",
    ]


def test_no_events():
    rec = FakeRecord(plan("quiet", [ctr("c")]), pod_state({}))
    assert describe.events([rec], now=T0) == ""
    # With no volume either, "Volumes:" and "Events:" join the Conditions' alignment block.
    assert describe.describe(rec, now=T0).endswith("Events:                       <none>\n")
