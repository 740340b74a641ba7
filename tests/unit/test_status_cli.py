"""What `get` shows: kubectl's STATUS words, ready init containers, container IDs with their
scheme, the API server's defaults, -o wide columns, JSONPath, and delete's grace rules."""

from __future__ import annotations

import re

import pytest

from minipod.cli import defaults, delete, jsonpath, status
from minipod.errors import UsageError


class Rec:
    def __init__(self, plan: dict, state: dict, active: bool = True):
        self.plan, self.state, self.name, self.active = plan, state, plan["name"], active


def _plan(**spec) -> dict:
    return {"name": "p", "namespace": "default", "uid": "u", "created": 0,
            "restart_policy": "Always", "grace_seconds": 30, "qos_class": "BestEffort",
            "containers": [{"name": "app"}],
            "init_containers": [{"name": "i1"}, {"name": "i2"}],
            "manifest": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                         "spec": {"containers": [{"name": "app", "image": "busybox"}], **spec}}}


def _done(name: str) -> dict:
    return {"name": name, "kind": "init", "ready": False, "restartCount": 0,
            "containerID": "abc" + name,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                     "containerID": "abc" + name}}}


def _waiting(name: str, reason: str) -> dict:
    return {"name": name, "kind": "app", "ready": False, "restartCount": 0,
            "state": {"waiting": {"reason": reason}}}


@pytest.fixture(autouse=True)
def node(monkeypatch):
    monkeypatch.setattr(status, "_node", lambda: "node1")
    monkeypatch.setattr(status, "_host_ip", lambda: "192.0.2.10")


def test_between_the_last_init_container_and_the_app_it_is_pod_initializing():
    st = {"phase": "Pending", "containers": {"i1": _done("i1"), "i2": _done("i2"),
                                              "app": _waiting("app", "PodInitializing")}}
    assert status.display_status(Rec(_plan(), st)) == "PodInitializing"
    st["containers"]["i2"] = {**_waiting("i2", "PodInitializing"), "kind": "init"}
    assert status.display_status(Rec(_plan(), st)) == "Init:1/2"


def test_a_completed_init_container_is_ready_and_ids_have_the_scheme():
    st = {"phase": "Running", "apps_started": True,
          "containers": {"i1": _done("i1"), "i2": _done("i2"),
                         "app": {**_waiting("app", "CrashLoopBackOff"), "containerID": "x9",
                                 "lastState": {"terminated": {"exitCode": 1,
                                                              "containerID": "x8"}}}}}
    obj = status.pod_object(Rec(_plan(), st))
    inits = obj["status"]["initContainerStatuses"]
    assert [c["ready"] for c in inits] == [True, True]
    assert inits[0]["state"]["terminated"]["containerID"] == "minipod://abci1"
    [app] = obj["status"]["containerStatuses"]
    assert app["containerID"] == "minipod://x9"
    assert app["lastState"]["terminated"]["containerID"] == "minipod://x8"


def test_the_api_servers_defaults_are_shown():
    spec = defaults.pod_spec({"containers": [
        {"name": "a", "image": "busybox", "ports": [{"containerPort": 80}],
         "readinessProbe": {"httpGet": {"port": 80}}},
        {"name": "b", "image": "busybox:1.36", "imagePullPolicy": "Never"}],
        "volumes": [{"name": "v"}]})
    a, b = spec["containers"]
    assert (a["imagePullPolicy"], b["imagePullPolicy"]) == ("Always", "Never")
    assert a["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert (a["terminationMessagePath"], a["terminationMessagePolicy"]) == (
        "/dev/termination-log", "File")
    assert a["readinessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                                   "timeoutSeconds": 1, "periodSeconds": 10,
                                   "successThreshold": 1, "failureThreshold": 3}
    for k, v in {"dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                 "schedulerName": "default-scheduler", "securityContext": {},
                 "enableServiceLinks": True, "terminationGracePeriodSeconds": 30,
                 "serviceAccountName": "default"}.items():
        assert spec[k] == v
    assert spec["volumes"] == [{"name": "v", "emptyDir": {}}]
    assert defaults.pod_spec({"dnsPolicy": "Default"})["dnsPolicy"] == "Default"


def test_wide_has_kubectls_columns():
    st = {"phase": "Running", "apps_started": True, "network": {"ip": "10.244.0.9"},
          "containers": {"i1": _done("i1"), "i2": _done("i2"),
                         "app": {"name": "app", "ready": True, "restartCount": 0,
                                 "state": {"running": {}}}}}
    head, row = status.ps([Rec(_plan(), st)], wide=True).splitlines()
    cols = re.split(r"\s{2,}", head)
    assert cols == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                    "NOMINATED NODE", "READINESS GATES"]
    cells = re.split(r"\s{2,}", row)
    assert cells[:3] + cells[5:] == ["p", "1/1", "Running", "10.244.0.9", "node1", "<none>",
                                     "<none>"]


POD = {"kind": "List", "items": [
    {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "web"}},
     "spec": {"containers": [{"name": "c1"}, {"name": "c2"}]},
     "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"},
                                                    {"type": "Initialized",
                                                     "status": "True"}]}},
    {"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c3"}]},
     "status": {"conditions": [{"type": "Ready", "status": "False"}]}}]}


@pytest.mark.parametrize("template, out", [
    ("{.items[*].metadata.name}", "a b"),
    ("{.items[0].spec.containers[*].name}", "c1 c2"),
    ('{range .items[*]}{.metadata.name}{"\\t"}{.status.podIP}{"\\n"}{end}', "a\t10.0.0.1\nb\t\n"),
    ('{.items[?(@.status.podIP)].metadata.name}', "a"),
    ('{.items[0].status.conditions[?(@.type=="Ready")].status}', "True"),
    ('{.items[?(@.metadata.name!="a")].metadata.name}', "b"),
    ("{.items[-1].metadata}", '{"name":"b"}'),
    ("{.items[0].metadata.labels.app\\.kubernetes\\.io/name}", "web"),
    ("{.items[0].metadata.labels['app.kubernetes.io/name']}", "web"),
    ("{..podIP}", "10.0.0.1"),
    ("name={.items[1].metadata.name} missing={.nope.nope}", "name=b missing="),
    ("{.items[0:1].metadata.name}", "a"),
    ("{.kind}", "List"),
])
def test_jsonpath_is_kubectls(template, out):
    assert jsonpath.render(template, POD) == out


def test_jsonpath_errors_are_one_line():
    with pytest.raises(jsonpath.JSONPathError, match="unclosed"):
        jsonpath.render("{.items", POD)
    with pytest.raises(jsonpath.JSONPathError, match="range without end"):
        jsonpath.render("{range .items[*]}x", POD)


@pytest.mark.parametrize("grace, now, force, effective", [
    (-1, False, False, -1), (5, False, False, 5), (0, False, False, 1), (-1, True, False, 1),
    (-1, False, True, 0), (0, False, True, 0), (7, False, True, 7)])
def test_delete_grace_rules_are_kubectls(grace, now, force, effective):
    assert delete.grace_period(grace, now, force) == effective


def test_delete_now_and_grace_period_together_is_a_usage_error():
    with pytest.raises(UsageError, match="--now and --grace-period"):
        delete.grace_period(3, True, False)
