"""Label and field selectors, as the API server parses them (k8s.io/apimachinery labels and
fields): `app=web,tier!=db`, `env in (a,b)`, `!legacy`; fields only `=`, `==`, `!=`."""

from __future__ import annotations

import re

from minipod.api.status import ApiError

# The pod fields the API server lets a field selector name (pkg/registry/core/pod
# strategy.go ToSelectableFields), and where they live in the object.
POD_FIELDS = {
    "metadata.name": ("metadata", "name"), "metadata.namespace": ("metadata", "namespace"),
    "spec.nodeName": ("spec", "nodeName"), "spec.restartPolicy": ("spec", "restartPolicy"),
    "spec.schedulerName": ("spec", "schedulerName"),
    "spec.serviceAccountName": ("spec", "serviceAccountName"),
    "spec.hostNetwork": ("spec", "hostNetwork"), "status.phase": ("status", "phase"),
    "status.podIP": ("status", "podIP"), "status.nominatedNodeName": ("status", "nominated"),
}
EVENT_FIELDS = {
    "metadata.name": ("metadata", "name"), "metadata.namespace": ("metadata", "namespace"),
    "involvedObject.kind": ("involvedObject", "kind"),
    "involvedObject.namespace": ("involvedObject", "namespace"),
    "involvedObject.name": ("involvedObject", "name"),
    "involvedObject.uid": ("involvedObject", "uid"),
    "involvedObject.apiVersion": ("involvedObject", "apiVersion"),
    "involvedObject.resourceVersion": ("involvedObject", "resourceVersion"),
    "involvedObject.fieldPath": ("involvedObject", "fieldPath"),
    "reason": ("reason",), "source": ("source", "component"), "type": ("type",),
}

_SET = re.compile(r"\s*(!?)\s*([A-Za-z0-9._/-]+)\s*(?:(notin|in)\s*\(([^)]*)\)|"
                  r"(==|=|!=)\s*([A-Za-z0-9._-]*))?\s*$")


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [p for p in out if p.strip()]


def labels(text: str | None):
    """A predicate over a labels dict, or ApiError 400 naming the bad requirement."""
    if not text:
        return lambda _: True
    reqs = []
    for part in _split(text):
        m = _SET.match(part)
        if not m:
            raise ApiError(400, f"unable to parse requirement: {part.strip()!r}: not a valid "
                                "label selector")
        neg, key, setop, values, op, value = m.groups()
        if neg and (setop or op):
            raise ApiError(400, f"unable to parse requirement: {part.strip()!r}")
        if setop:
            vals = {v.strip() for v in values.split(",") if v.strip()}
            reqs.append(lambda lb, k=key, vs=vals, inn=setop == "in":
                        (lb.get(k) in vs) if inn else (lb.get(k) not in vs))
        elif op:
            reqs.append(lambda lb, k=key, v=value, eq=op != "!=":
                        (lb.get(k) == v) if eq else (lb.get(k) != v))
        else:
            reqs.append(lambda lb, k=key, absent=bool(neg): (k not in lb) if absent else
                        (k in lb))
    return lambda lb: all(r(lb or {}) for r in reqs)


def fields(text: str | None, known: dict, kind: str = "pods"):
    """A predicate over an object, or ApiError 400 for a field the server cannot select on."""
    if not text:
        return lambda _: True
    reqs = []
    for part in _split(text):
        m = re.fullmatch(r"\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise ApiError(400, f"invalid selector: {part.strip()!r}; can't understand "
                                f"{part.strip()!r}")
        key, op, value = m.groups()
        if key not in known:
            raise ApiError(400, f'field label not supported: {key}' if kind == "pods" else
                           f'"{key}" is not a known field selector: only "'
                           + '", "'.join(sorted(known)) + '"')
        reqs.append((known[key], op != "!=", value))

    def get(obj: dict, path: tuple) -> str:
        v = obj
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, bool):
            return "true" if v else "false"
        return "" if v is None else str(v)

    return lambda obj: all((get(obj, p) == v) == eq for p, eq, v in reqs)
