"""Workload documents (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) checked as
the API server checks them, not only their pod template.

minipod runs a workload's pod template as one pod (spec.py, as podman kube play does); the pod
template is checked there as a Pod. Here is the rest of the object: the apiVersion (the retired
betas are gone from the API server, which answers `no matches for kind`), the structure of every
field against the API's schema (kube_schema), metadata, the selector (apps/v1 requires one and it
must select the template's labels: pkg/apis/apps/validation), the counts, and the restartPolicy
each controller allows its template (Always for the apps, OnFailure or Never for a Job).
"""

from __future__ import annotations

import json
from typing import Any

from minipod.spec import kube_schema
from minipod.spec.checks import INT32_MAX, _label_problem, _qualified_name_problem
from minipod.spec.checks import _subdomain_problem
from minipod.spec.kube_fields import schema_object
from minipod.spec.show import cut, show

API_VERSIONS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
                "ReplicaSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}
KINDS = frozenset(API_VERSIONS)

# Counts the API server requires to be >= 0 (ValidateNonnegativeField), per kind.
_COUNTS = {
    "Deployment": ("replicas", "minReadySeconds", "revisionHistoryLimit",
                   "progressDeadlineSeconds"),
    "StatefulSet": ("replicas", "minReadySeconds", "revisionHistoryLimit"),
    "ReplicaSet": ("replicas", "minReadySeconds"),
    "DaemonSet": ("minReadySeconds", "revisionHistoryLimit"),
    "Job": ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"),
    "CronJob": ("startingDeadlineSeconds", "successfulJobsHistoryLimit",
                "failedJobsHistoryLimit"),
}


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def template_path(kind: str) -> str:
    """Where a workload keeps its pod template (YAML path, with a trailing dot)."""
    return "spec.jobTemplate.spec.template." if kind == "CronJob" else "spec.template."


def template(doc: dict, kind: str) -> dict:
    """The pod template (metadata + spec) of a workload document, {} if it has none."""
    spec = _dict(doc.get("spec"))
    if kind == "CronJob":
        spec = _dict(_dict(spec.get("jobTemplate")).get("spec"))
    return _dict(spec.get("template"))


def api_version_problem(doc: dict, kind: str) -> str | None:
    api = doc.get("apiVersion")
    if api == API_VERSIONS[kind]:
        return None
    # kubectl's words for an apiVersion the server does not serve (extensions/v1beta1,
    # apps/v1beta1 and apps/v1beta2 were removed in 1.16, batch/v1beta1 in 1.25).
    return (f'apiVersion: no matches for kind "{kind}" in version "{api}"'
            f" (use apiVersion: {API_VERSIONS[kind]})")


def _without_template(doc: dict, kind: str) -> dict:
    """The document with the pod template's spec taken out (it is checked as a Pod), its
    metadata kept, and the server-written status dropped."""
    out = {k: v for k, v in doc.items() if k != "status"}
    spec = dict(_dict(out.get("spec")))
    holder = spec
    if kind == "CronJob":
        jt = dict(_dict(spec.get("jobTemplate")))
        jts = dict(_dict(jt.get("spec")))
        jt["spec"], spec["jobTemplate"] = jts, jt
        holder = jts
    tmpl = holder.get("template")
    if isinstance(tmpl, dict):
        holder["template"] = {k: v for k, v in tmpl.items() if k != "spec"}
    if isinstance(out.get("spec"), dict):
        out["spec"] = spec
    return out


def _metadata_problems(meta: Any, path: str, name_required: bool) -> list[str]:
    if not isinstance(meta, dict):
        return []
    out = []
    name = meta.get("name")
    if isinstance(name, str) and name:
        if problem := _subdomain_problem(name):
            out.append(f"{path}.name: {problem}")
    elif name_required and not meta.get("generateName"):
        out.append(f"{path}.name: required")
    labels = meta.get("labels")
    for k, v in _dict(labels).items():
        if isinstance(k, str) and (problem := _qualified_name_problem(k)):
            out.append(f"{path}.labels: key {problem}")
    ns = meta.get("namespace")
    if isinstance(ns, str) and ns and (problem := _label_problem(ns)):
        out.append(f"{path}.namespace: {problem}")
    return out


def _selects(selector: dict, labels: dict) -> bool:
    """metav1.LabelSelectorAsSelector(selector).Matches(labels)."""
    for k, v in _dict(selector.get("matchLabels")).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        e = _dict(e)
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        has = key in labels
        if op == "In" and not (has and labels[key] in values):
            return False
        if op == "NotIn" and has and labels[key] in values:
            return False
        if op == "Exists" and not has:
            return False
        if op == "DoesNotExist" and has:
            return False
    return True


def _selector_problems(selector: Any, labels: dict, required: bool) -> list[str]:
    if selector is None:
        return []  # apps/v1: "required", from the schema
    if not isinstance(selector, dict):
        return []  # a type problem, from the schema
    out = []
    exprs = selector.get("matchExpressions") or []
    if required and not selector.get("matchLabels") and not exprs:
        out.append("spec.selector: empty selector is invalid for this kind (it would select"
                   " every pod)")
    for i, e in enumerate(exprs if isinstance(exprs, list) else []):
        e, p = _dict(e), f"spec.selector.matchExpressions[{i}]"
        op, values = e.get("operator"), e.get("values") or []
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            out.append(f"{p}.operator: must be one of In, NotIn, Exists, DoesNotExist (got"
                       f" {show(op)})")
        elif op in ("In", "NotIn") and not values:
            out.append(f"{p}.values: must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist") and values:
            out.append(f"{p}.values: may not be specified when `operator` is 'Exists' or"
                       " 'DoesNotExist'")
    if not out and not _selects(selector, labels):
        out.append("spec.template.metadata.labels: `selector` does not match template `labels`"
                   f" (selector {_compact(selector)}, labels {_compact(labels)})")
    return out


def _compact(v: Any) -> str:
    return cut(json.dumps(v, separators=(",", ":"), default=str), 120)


def _restart_policy_problem(kind: str, tmpl: dict) -> str | None:
    written = _dict(tmpl.get("spec")).get("restartPolicy")
    policy = written or "Always"  # SetDefaults_PodSpec
    allowed = ("OnFailure", "Never") if kind in ("Job", "CronJob") else ("Always",)
    if policy in allowed or not isinstance(policy, str):
        return None
    if not written:
        return (f"{template_path(kind)}spec.restartPolicy: required for a {kind}: OnFailure or"
                " Never (the default, Always, is not allowed)")
    return (f"{template_path(kind)}spec.restartPolicy: a {kind}'s pod template must have"
            f" restartPolicy {' or '.join(allowed)} (got {show(policy)})")


def problems(doc: dict, kind: str) -> list[str]:
    """What the API server would refuse in a workload document, outside its pod template's
    spec. An apiVersion it does not serve is the only problem reported (nothing else can be
    checked against a version that does not exist)."""
    if problem := api_version_problem(doc, kind):
        return [problem]
    out = schema_object(_without_template(doc, kind), kube_schema.root(kind) or kind, "")
    out += _metadata_problems(doc.get("metadata"), "metadata", name_required=True)
    tmpl = template(doc, kind)
    tpath = template_path(kind)
    out += _metadata_problems(tmpl.get("metadata"), tpath + "metadata", name_required=False)
    spec = _dict(doc.get("spec"))
    for field in _COUNTS[kind]:
        v = spec.get(field)
        if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= INT32_MAX:
            out.append(f"spec.{field}: must be between 0 and {INT32_MAX}, inclusive (got"
                       f" {show(v)})")
    labels = _dict(_dict(tmpl.get("metadata")).get("labels"))
    if kind != "CronJob":
        # Job: optional (the controller generates one); apps/v1: required and non-empty.
        out += _selector_problems(spec.get("selector"), labels, required=kind != "Job")
    if (problem := _restart_policy_problem(kind, tmpl)) is not None:
        out.append(problem)
    return out
