#!/usr/bin/env python3
"""Write minipod/spec/kube_schema.json: the field names and value types of the Kubernetes objects
minipod reads (Pod and the workloads that carry a pod template), from the Kubernetes OpenAPI
document as the official Python client encodes it.

Usage: scripts/gen_kube_schema.py MODELS_DIR > minipod/spec/kube_schema.json
       scripts/gen_kube_schema.py --docs MODELS_DIR > minipod/spec/kube_docs.json
MODELS_DIR is kubernetes/client/models of the `kubernetes` wheel (kubernetes-client/python,
generated from the Kubernetes OpenAPI spec; `pip download kubernetes==VERSION --no-deps`, unzip).
Only the text of the models is read (no import): one line per field,
    name: TYPE = Field(..., serialization_alias="jsonName", ...)

Type codes in the output (a leading "!" marks a field the OpenAPI document lists as required):
    s string   i integer   b boolean   n number   x integer or string (IntOrString)
    q quantity (a string or a number: resource.Quantity, which the client flattens to str)
    * anything (RawExtension, JSON)   []T a list of T   {}T a map of string to T
    Name  an object type in "types"

--docs writes the descriptions instead, {type: {"": the type's, field: the field's}}, of the
types the API server (minipod/api/openapi.py) documents: Pod (not its status's types),
ConfigMap and Secret; `kubectl explain` shows them. A separate file, because validation, which
loads kube_schema.json on every run, needs none of it. The client drops the description of a
field whose type is an object, so such a field has only its type's.
"""

from __future__ import annotations

import ast
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
_DESCRIPTION = re.compile(r'description=("(?:[^"\\]|\\.)*")')
_DOCSTRING = re.compile(r'^class \w+\(BaseModel\):\n    """\n(.*?)\n\n    Attributes:', re.M | re.S)
DOC_ROOTS = ("V1Pod", "V1ConfigMap", "V1Secret")


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


def model_docs(path: str) -> dict[str, str]:
    """{"": the class's description, json field name: its description} of a model file."""
    text = open(path, encoding="utf-8").read()
    doc = _DOCSTRING.search(text)
    out = {"": " ".join(doc.group(1).split())} if doc else {}
    for m in _FIELD.finditer(text):
        attr, _, args = m.groups()
        alias = _ALIAS.search(args or "")
        desc = _DESCRIPTION.search(args or "")
        if desc and not attr.startswith("_"):
            out[alias.group(1) if alias else attr] = ast.literal_eval(desc.group(1))
    return out


def docs(by_class: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    todo = list(DOC_ROOTS)
    while todo:
        cls = todo.pop()
        if _name(cls) in out:
            continue
        _, _, refs = model(by_class[cls])
        out[_name(cls)] = model_docs(by_class[cls])
        todo += sorted(r for r in refs if r != "V1PodStatus")
    return dict(sorted(out.items()))


def main(models: str, want_docs: bool = False) -> None:
    by_class = {}
    for f in os.listdir(models):
        if f.endswith(".py") and f != "__init__.py":
            m = _CLASS.search(open(os.path.join(models, f), encoding="utf-8").read())
            if m:
                by_class[m.group(1)] = os.path.join(models, f)
    version = re.search(r"The version of the OpenAPI document: (\S+)",
                        open(by_class["V1Pod"], encoding="utf-8").read())
    source = ("Kubernetes OpenAPI document " + (version.group(1) if version else "?")
              + ", as encoded by the kubernetes Python client (kubernetes-client/python,"
              " kubernetes/client/models); written by scripts/gen_kube_schema.py")
    if want_docs:
        json.dump({"_source": source, "docs": docs(by_class)}, sys.stdout, indent=0,
                  separators=(",", ":"), sort_keys=True)
        sys.stdout.write("\n")
        return
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
        "_source": source,
        "roots": {k: _name(v) for k, v in ROOTS.items()},
        "types": dict(sorted(types.items())),
    }
    json.dump(out, sys.stdout, indent=0, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    if sys.argv[1] == "--docs":
        main(sys.argv[2], want_docs=True)
    else:
        main(sys.argv[1])
