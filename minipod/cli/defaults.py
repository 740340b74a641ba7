"""The fields the API server fills into a Pod's spec (pkg/apis/core/v1/defaults.go and the
admission plugins every cluster runs), so that `get -o yaml|json` shows what kubectl shows.

Pure: a manifest's spec in, a defaulted copy out. A value the manifest sets is kept.
"""

from __future__ import annotations

import copy


def pull_policy(image: str) -> str:
    """SetDefaults_Container: Always for :latest or no tag (and no digest), else IfNotPresent."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    return "Always" if "@" not in image and tag in ("", "latest") else "IfNotPresent"


def _probe(p: dict) -> None:
    for k, v in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                 ("failureThreshold", 3)):
        p.setdefault(k, v)
    for handler in (p.get("httpGet"),):
        if isinstance(handler, dict):
            handler.setdefault("path", "/")
            handler.setdefault("scheme", "HTTP")


def _container(c: dict) -> None:
    c.setdefault("imagePullPolicy", pull_policy(c.get("image") or ""))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        if isinstance(c.get(kind), dict):
            _probe(c[kind])
    for hook in ((c.get("lifecycle") or {}).get(k) for k in ("postStart", "preStop")):
        if isinstance(hook, dict) and isinstance(hook.get("httpGet"), dict):
            hook["httpGet"].setdefault("path", "/")
            hook["httpGet"].setdefault("scheme", "HTTP")


def pod_spec(spec: dict) -> dict:
    """A copy of spec with the API server's defaults filled in."""
    s = copy.deepcopy(spec)
    for kind in ("initContainers", "containers"):
        for c in s.get(kind) or []:
            if isinstance(c, dict):
                _container(c)
    s.setdefault("restartPolicy", "Always")
    s.setdefault("terminationGracePeriodSeconds", 30)
    s.setdefault("dnsPolicy", "ClusterFirst")
    s.setdefault("securityContext", {})
    s.setdefault("schedulerName", "default-scheduler")
    s.setdefault("enableServiceLinks", True)
    # The ServiceAccount and Priority admission plugins, and the default tolerations.
    s.setdefault("serviceAccountName", "default")
    s.setdefault("serviceAccount", s["serviceAccountName"])
    s.setdefault("priority", 0)
    s.setdefault("preemptionPolicy", "PreemptLowerPriority")
    for v in s.get("volumes") or []:
        if isinstance(v, dict) and set(v) == {"name"}:
            v["emptyDir"] = {}  # SetDefaults_Volume
    return s
