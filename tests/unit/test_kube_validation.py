"""Validation as the API server does it, where minipod does not model the fields: a corpus of
manifests Kubernetes accepts is accepted, and mutations of them are refused naming the path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from minipod.errors import SpecError
from minipod.spec import kube_schema
from minipod.spec.spec import load, loads

VALID = sorted((Path(__file__).parent.parent / "fixtures" / "valid").glob("*.yaml"))
MANIFESTS = sorted((Path(__file__).parent.parent / "fixtures" / "manifests").glob("*.yaml"))


@pytest.mark.parametrize("path", VALID + MANIFESTS, ids=lambda p: p.name)
def test_the_corpus_kubernetes_accepts_is_accepted(path):
    assert load(str(path)).pods


def _docs(name: str) -> list[dict]:
    return list(yaml.safe_load_all((VALID[0].parent / name).read_text()))


def _problems(docs: list[dict]) -> list[str]:
    with pytest.raises(SpecError) as e:
        loads(yaml.safe_dump_all(docs), "m.yaml")
    return e.value.problems


def _mutate(docs, path: str, value, doc: int = 0):
    """A copy of docs with the value at a dotted path (list indexes as numbers) replaced; the
    key `-` deletes it instead."""
    docs = copy.deepcopy(docs)
    node = docs[doc]
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value == "-":
        del node[int(last) if last.isdigit() else last]
    elif isinstance(value, tuple):  # rename the key: a typo
        node[value[0]] = node.pop(last)
    else:
        node[int(last) if last.isdigit() else last] = value
    return docs


T = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"


@pytest.mark.parametrize("file, doc, path, value, problem", [
    # typos inside fields minipod does not implement
    ("pod-scheduling.yaml", 0, f"{T}.0.matchExpressions", ("matchExpression",),
     f"{T}[0].matchExpression: unknown field (did you mean 'matchExpressions'?)"),
    ("pod-scheduling.yaml", 0, "spec.affinity.podAntiAffinity", ("podAntiAfinity",),
     "spec.affinity.podAntiAfinity: unknown field (did you mean 'podAntiAffinity'?)"),
    ("pod-scheduling.yaml", 0, "spec.topologySpreadConstraints.0.maxSkew", ("maxskew",),
     "spec.topologySpreadConstraints[0].maxskew: unknown field (did you mean 'maxSkew'?)"),
    ("pod-scheduling.yaml", 0, "spec.tolerations.1.tolerationSeconds", "6000",
     "spec.tolerations[1].tolerationSeconds: expected an integer (got '6000')"),
    ("pod-scheduling.yaml", 0, "spec.nodeSelector", ["ssd"],
     "spec.nodeSelector: expected a mapping (got a list)"),
    ("pod-scheduling.yaml", 0, "spec.affinity.podAffinity.requiredDuringSchedulingIgnored"
     "DuringExecution.0.topologyKey", "-",
     "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey:"
     " required"),
    ("pod-scheduling.yaml", 0, "spec.readinessGates.0.conditionType", 5,
     "spec.readinessGates[0].conditionType: expected a string (got 5): put it in quotes"),
    ("pod-volumes.yaml", 0, "spec.volumes.1.rbd.monitors", ("monitor",),
     "spec.volumes[1].rbd.monitor: unknown field (did you mean 'monitors'?)"),
    ("pod-volumes.yaml", 0, "spec.volumes.2.cephfs.secretFile", ("secretfile",),
     "spec.volumes[2].cephfs.secretfile: unknown field (did you mean 'secretFile'?)"),
    ("pod-volumes.yaml", 0, "spec.volumes.3.iscsi.lun", "0",
     "spec.volumes[3].iscsi.lun: expected an integer (got '0')"),
    ("pod-volumes.yaml", 0, "spec.volumes.5.ephemeral.volumeClaimTemplate.spec.accessModes",
     ("accessMode",),
     "spec.volumes[5].ephemeral.volumeClaimTemplate.spec.accessMode: unknown field (did you"
     " mean 'accessModes'?)"),
    ("pod-volumes.yaml", 0, "spec.volumes.0.nfs.server", "-",
     "spec.volumes[0].nfs.server: required"),
    # workloads as a whole
    ("workloads.yaml", 0, "apiVersion", "extensions/v1beta1",
     'apiVersion: no matches for kind "Deployment" in version "extensions/v1beta1"'
     " (use apiVersion: apps/v1)"),
    ("workloads.yaml", 1, "apiVersion", "apps/v1beta2",
     'apiVersion: no matches for kind "DaemonSet" in version "apps/v1beta2"'
     " (use apiVersion: apps/v1)"),
    ("workloads.yaml", 4, "apiVersion", "batch/v1beta1",
     'apiVersion: no matches for kind "CronJob" in version "batch/v1beta1"'
     " (use apiVersion: batch/v1)"),
    ("workloads.yaml", 0, "spec.replicas", "3", "spec.replicas: expected an integer (got '3')"),
    ("workloads.yaml", 0, "spec.replicas", -1,
     "spec.replicas: must be between 0 and 2147483647, inclusive (got -1)"),
    ("workloads.yaml", 0, "spec.selector", "-", "spec.selector: required"),
    ("workloads.yaml", 0, "spec.selector.matchLabels.app", "apache",
     'spec.template.metadata.labels: `selector` does not match template `labels` (selector'
     ' {"matchLabels":{"app":"apache"}}, labels {"app":"nginx","tier":"web"})'),
    ("workloads.yaml", 0, "spec.strategy.rollingUpdate", ("rollingupdate",),
     "spec.strategy.rollingupdate: unknown field (did you mean 'rollingUpdate'?)"),
    ("workloads.yaml", 0, "spec.replica", 3, "spec.replica: unknown field (did you mean"
     " 'replicas'?)"),
    ("workloads.yaml", 0, "metadata.name", "Nginx",
     "metadata.name: 'Nginx' is not a valid DNS-1123 subdomain (at most 253 lowercase letters,"
     " digits, '-' or '.', starting and ending with a letter or digit)"),
    ("workloads.yaml", 0, "metadata.labls", {}, "metadata.labls: unknown field (did you mean"
     " 'labels'?)"),
    ("workloads.yaml", 0, "spec.template.spec.restartPolicy", "Never",
     "spec.template.spec.restartPolicy: a Deployment's pod template must have restartPolicy"
     " Always (got 'Never')"),
    ("workloads.yaml", 1, "spec.selector.matchExpressions.0.operator", "Has",
     "spec.selector.matchExpressions[0].operator: must be one of In, NotIn, Exists,"
     " DoesNotExist (got 'Has')"),
    ("workloads.yaml", 2, "spec.selector.matchExpressions.0.values", ["dev"],
     None),  # NotIn dev: still selects tier=frontend
    ("workloads.yaml", 3, "spec.template.spec.restartPolicy", "-",
     "spec.template.spec.restartPolicy: required for a Job: OnFailure or Never (the default,"
     " Always, is not allowed)"),
    ("workloads.yaml", 3, "spec.backoffLimit", -1,
     "spec.backoffLimit: must be between 0 and 2147483647, inclusive (got -1)"),
    ("workloads.yaml", 4, "spec.schedule", "-", "spec.schedule: required"),
    ("workloads.yaml", 4, "spec.jobTemplate.spec.template.spec.containers.0.imagee", "x",
     "spec.jobTemplate.spec.template.spec.containers[0].imagee: unknown field (did you mean"
     " 'image'?)"),
    ("statefulset.yaml", 0, "spec.volumeClaimTemplates.0.spec.resources", ("resource",),
     "spec.volumeClaimTemplates[0].spec.resource: unknown field (did you mean 'resources'?)"),
    ("statefulset.yaml", 0, "spec.serviceName", 1,
     "spec.serviceName: expected a string (got 1): put it in quotes"),
])
def test_a_mutation_is_refused_naming_the_path(file, doc, path, value, problem):
    docs = _docs(file)
    mutated = _mutate(docs, path, value, doc)
    if problem is None:
        loads(yaml.safe_dump_all(mutated), "m.yaml")
        return
    prefix = f"doc {doc + 1}: " if len(docs) > 1 else ""
    problems = _problems(mutated)
    assert prefix + problem in problems
    if isinstance(value, tuple):  # a renamed required field is missing, too
        assert all(p == prefix + problem or p.endswith(": required") for p in problems)
    else:
        assert problems == [prefix + problem]


def test_cluster_only_fields_get_one_warning_each_saying_why():
    res = load(str(VALID[0].parent / "pod-scheduling.yaml"))
    mine = [w.split(": ", 1)[1] for w in res.warnings]
    for field in ("nodeSelector", "affinity", "tolerations", "priorityClassName",
                  "schedulerName", "nodeName", "topologySpreadConstraints"):
        [w] = [w for w in mine if w.startswith(f"spec.{field}:")]
        assert "there is no scheduler and one node" in w
    [w] = [w for w in mine if w.startswith("spec.serviceAccountName:")]
    assert "service account" in w
    assert not any("not implemented" in w for w in mine)


def test_a_cronjob_is_checked_not_run():
    res = load(str(VALID[0].parent / "workloads.yaml"))
    assert "hello-pod" not in [lp.pod.metadata.name for lp in res.pods]
    assert any("(CronJob): checked, not run" in w for w in res.warnings)


def test_the_schema_names_its_source():
    assert "OpenAPI" in kube_schema._data()["_source"]
    assert kube_schema.types()["Affinity"] == {
        "nodeAffinity": "NodeAffinity", "podAffinity": "PodAffinity",
        "podAntiAffinity": "PodAntiAffinity"}
