"""The objects a pod reads besides itself: ConfigMap, Secret and PersistentVolumeClaim documents.

A cluster has an API server to hold them; minipod reads them from the manifest file beside the
pods (as `podman kube play` does) and from files given with `run --configmap FILE`. Values are
kept as bytes: a Secret's `data` and a ConfigMap's `binaryData` are base64 in the document
(decoded here, so a bad one is an error naming its key), `stringData` and `data` are text.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from minipod.spec.show import key as _key
from minipod.spec.show import show as _show

KINDS = ("ConfigMap", "Secret", "PersistentVolumeClaim")

# validation.IsConfigMapKey: a file name without '/', at most 253 characters, not "." or "..".
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

_FIELDS = {
    "ConfigMap": {"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"},
    "Secret": {"apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"},
    "PersistentVolumeClaim": {"apiVersion", "kind", "metadata", "spec", "status"},
}


def key_problem(k: object) -> str | None:
    if not isinstance(k, str) or not k:
        return f"a key must be a non-empty string (got {_show(k)})"
    if len(k) > 253 or not _KEY.match(k) or k in (".", ".."):
        return (f"invalid key {_show(k)}: keys are made of letters, digits, '-', '_' and '.' "
                "(at most 253)")
    return None


@dataclass
class Obj:
    kind: str
    name: str
    namespace: str
    data: dict[str, bytes] = field(default_factory=dict)
    binary: set[str] = field(default_factory=set)  # a ConfigMap's binaryData keys (not env)

    def env_data(self) -> dict[str, bytes]:
        """What env reads: a ConfigMap's `data` only (the kubelet never puts binaryData in
        the environment), a Secret's every key."""
        return {k: v for k, v in self.data.items() if k not in self.binary}


@dataclass
class Objects:
    """What the pods of a run can refer to, by (kind, namespace, name). `fallback` is asked
    for what the files do not hold: the node's object store (minipod/objectstore.py), whose
    objects kubectl made; anything with get(kind, namespace, name) -> Obj | None."""
    items: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    fallback: object = None

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        obj = self.items.get((kind, namespace, name))
        if obj is None and self.fallback is not None:
            obj = self.fallback.get(kind, namespace, name)
            if obj is not None:  # the plan reads it again: one answer per run
                self.items[(kind, namespace, name)] = obj
        return obj

    def add(self, obj: Obj) -> None:
        self.items[(obj.kind, obj.namespace, obj.name)] = obj

    def update(self, other: "Objects") -> None:
        self.items.update(other.items)
        self.fallback = self.fallback or other.fallback

    def names(self, kind: str) -> list[str]:
        return sorted(o.name for o in self.items.values() if o.kind == kind)


def parse(doc: dict) -> tuple[Obj | None, list[str]]:
    """One ConfigMap, Secret or PersistentVolumeClaim document: (object, problems)."""
    kind = doc["kind"]
    problems = []
    if doc.get("apiVersion") != "v1":
        problems.append(f"apiVersion: must be v1 for kind {kind} (got "
                        f"{_show(doc.get('apiVersion'))})")
    for k in doc:
        if k not in _FIELDS[kind]:
            problems.append(f"{_key(k)}: unknown field")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return None, problems + ["metadata.name: required"]
    name = meta.get("name")
    ns = meta.get("namespace") or "default"
    if not isinstance(name, str) or not name:
        problems.append("metadata.name: required")
    elif len(name) > 253 or not _NAME.match(name):
        problems.append(f"metadata.name: {_show(name)} is not a valid name (lower-case letters, "
                        "digits, '-' and '.')")
    if not isinstance(ns, str):
        problems.append(f"metadata.namespace: expected a string (got {_show(ns)})")
    obj = Obj(kind, name if isinstance(name, str) else "", ns if isinstance(ns, str) else "")
    if kind == "PersistentVolumeClaim":
        if "spec" in doc and not isinstance(doc["spec"], dict):
            problems.append(f"spec: expected a mapping (got {_show(doc['spec'])})")
        return (None if problems else obj), problems
    text_field = "stringData" if kind == "Secret" else "data"
    b64_field = "data" if kind == "Secret" else "binaryData"
    # A Secret's stringData wins over data for the same key (the API server merges it in).
    for fname, b64 in ((b64_field, True), (text_field, False)):
        values = doc.get(fname)
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(f"{fname}: expected a mapping (got {_show(values)})")
            continue
        for k, v in values.items():
            p = f"{fname}.{_key(k)}"
            if problem := key_problem(k):
                problems.append(f"{p}: {problem}")
                continue
            if not isinstance(v, str):
                problems.append(f"{p}: expected a string (got {_show(v)})"
                                + (": put it in quotes" if isinstance(v, (int, float, bool))
                                   else ""))
                continue
            if b64:
                try:
                    obj.data[k] = base64.b64decode("".join(v.split()), validate=True)
                    if kind == "ConfigMap":
                        obj.binary.add(k)
                except (binascii.Error, ValueError):
                    problems.append(f"{p}: not valid base64")
            else:
                if kind == "ConfigMap" and k in obj.data:
                    problems.append(f"{p}: duplicate of key {_show(k)} in binaryData")
                obj.data[k] = v.encode()
    return (None if problems else obj), problems
