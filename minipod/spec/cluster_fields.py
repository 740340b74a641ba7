"""Pod fields that only a cluster gives a meaning to, and why each means nothing on one host.

They are valid Kubernetes, so a manifest written for a cluster must run here: each is checked
like any other field (unknown names inside, value types), then ignored with one warning that
says why, rather than the generic "not implemented yet" (nothing will ever implement them here).
"""

from __future__ import annotations

_SCHEDULING = ("there is no scheduler and one node: minipod runs every pod on this host")
_ACCOUNTS = "there is no API server to issue service account tokens"

WHY: dict[str, str] = {
    **{f"spec.{f}": _SCHEDULING for f in (
        "nodeSelector affinity tolerations topologySpreadConstraints schedulerName"
        " schedulingGates priorityClassName priority preemptionPolicy nodeName"
        " schedulingGroup").split()},
    **{f"spec.{f}": _ACCOUNTS for f in (
        "serviceAccountName serviceAccount automountServiceAccountToken").split()},
    "spec.enableServiceLinks": "there are no Services whose variables it would add",
    "spec.readinessGates": "there are no controllers to set the conditions it waits for",
    "metadata.finalizers": "there are no controllers to act on them",
}


def warning(pattern: str) -> str | None:
    """The warning for an ignored cluster-only field, or None if it is not one."""
    why = WHY.get(pattern)
    return f"ignored: {why}" if why else None
