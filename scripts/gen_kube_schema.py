#!/usr/bin/env python3
"""Write minipod/spec/kube_schema.json: the field names and value types of the Kubernetes objects
minipod reads (Pod and the workloads that carry a pod template), from the Kubernetes OpenAPI
document as the official Python client encodes it.

Usage: scripts/gen_kube_schema.py MODELS_DIR > minipod/spec/kube_schema.json
MODELS_DIR is kubernetes/client/models of the `kubernetes` wheel (kubernetes-client/python,
generated from the Kubernetes OpenAPI spec; `pip download kubernetes==VERSION --no-deps`, unzip).
Only the text of the models is read (no import): one line per field,
    name: TYPE = Field(..., serialization_alias="jsonName", ...)

Type codes in the output (a leading "!" marks a field the OpenAPI document lists as required):
    s string   i integer   b boolean   n number   x integer or string (IntOrString)
    q quantity (a string or a number: resource.Quantity, which the client flattens to str)
    * anything (RawExtension, JSON)   []T a list of T   {}T a map of string to T
    Name  an object type in "types"
"""

from __future__ import annotations

import json
import os
import re
import sys

ROOTS = {"Pod": "V1Pod", "Deployment": "V1Deployment", "StatefulSet": "V1StatefulSet",
         "DaemonSet": "V1DaemonSet", "ReplicaSet": "V1ReplicaSet", "Job": "V1Job",
         "CronJob": "V1CronJob"}
# Quantity fields: the OpenAPI document's $ref resource.Quantity, a plain str in the client.
QUANTITIES = {"limits", "requests", "overhead", "sizeLimit", "divisor", "capacity",
              "allocatable", "storage"}
_CLASS = re.compile(r"^class (\w+)\(BaseModel\):", re.M)
_FIELD = re.compile(r"^    (\w+): ([^=\n]+?)(?: = (?:Field\((.*)\)|None))?\s*$", re.M)
_ALIAS = re.compile(r'serialization_alias="(\w+)"')


def _name(cls: str) -> str:
    return cls[2:] if cls.startswith("V1") and cls[2:3].isupper() else cls


def parse_type(t: str, refs: set[str]) -> tuple[str, bool]:
    """(code, optional) of a client annotation."""
    t = t.strip()
    if t.startswith("Optional[") and t.endswith("]"):
        return parse_type(t[9:-1], refs)[0], True
    if t.startswith("List[") and t.endswith("]"):
        return "[]" + parse_type(t[5:-1], refs)[0], False
    if t.startswith("Dict[str, ") and t.endswith("]"):
        return "{}" + parse_type(t[10:-1], refs)[0], False
    simple = {"StrictStr": "s", "StrictInt": "i", "StrictBool": "b", "datetime": "s",
              "StrictInt | StrictStr": "x", "Union[StrictFloat, StrictInt]": "n", "Any": "*",
              "object": "*"}
    if t in simple:
        return simple[t], False
    if t.startswith("Union[Annotated[bytes"):
        return "s", False  # []byte: base64 text
    if "|" in t or t.startswith("Union["):
        return "*", False
    if re.fullmatch(r"\w+", t):
        refs.add(t)
        return _name(t), False
    raise SystemExit(f"unknown type {t!r}")


def model(path: str) -> tuple[str, dict[str, str], set[str]]:
    text = open(path, encoding="utf-8").read()
    cls = _CLASS.search(text)
    if not cls:
        raise SystemExit(f"{path}: no model class")
    fields, refs = {}, set()
    for m in _FIELD.finditer(text):
        attr, typ, args = m.groups()
        if attr.startswith("_") or typ.startswith("ClassVar"):
            continue
        alias = _ALIAS.search(args or "")
        json_name = alias.group(1) if alias else attr
        code, optional = parse_type(typ, refs)
        if json_name in QUANTITIES and code.lstrip("{}") == "s":
            code = code[:-1] + "q"
        fields[json_name] = code if optional else "!" + code
    return cls.group(1), fields, refs


def main(models: str) -> None:
    by_class = {}
    for f in os.listdir(models):
        if f.endswith(".py") and f != "__init__.py":
            m = _CLASS.search(open(os.path.join(models, f), encoding="utf-8").read())
            if m:
                by_class[m.group(1)] = os.path.join(models, f)
    version = re.search(r"The version of the OpenAPI document: (\S+)",
                        open(by_class["V1Pod"], encoding="utf-8").read())
    types: dict[str, dict[str, str]] = {}
    todo = list(ROOTS.values())
    while todo:
        cls = todo.pop()
        if _name(cls) in types:
            continue
        _, fields, refs = model(by_class[cls])
        if cls in ROOTS.values() and "status" in fields:
            # Written by the server; minipod drops it (and needs none of its types).
            fields.pop("status")
            refs = {r for r in refs if _name(r) in {t.lstrip("![]{}") for t in fields.values()}}
        types[_name(cls)] = fields
        todo += sorted(refs)
    out = {
        "_source": ("Kubernetes OpenAPI document " + (version.group(1) if version else "?")
                    + ", as encoded by the kubernetes Python client (kubernetes-client/python,"
                    " kubernetes/client/models); written by scripts/gen_kube_schema.py"),
        "roots": {k: _name(v) for k, v in ROOTS.items()},
        "types": dict(sorted(types.items())),
    }
    json.dump(out, sys.stdout, indent=0, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
