"""The Kubernetes API's own field names and value types, for the fields minipod does not model.

kube_fields.FIELDS lists the v1 Pod fields by hand, and leaves opaque what minipod does not look
inside (affinity, tolerations' neighbours, cloud volume sources, ...). The API server's strict
decoding refuses an unknown field anywhere, so a typo inside `affinity` must be an error here
too, not silence. kube_schema.json (written by scripts/gen_kube_schema.py from the Kubernetes
OpenAPI document; its "_source" says which release) gives every object type's fields; the type
codes are explained in that script. Only what the walk needs is kept: names, value types and
which fields are required.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

from minipod.spec.show import show

_FILE = os.path.join(os.path.dirname(__file__), "kube_schema.json")
_DOCS = os.path.join(os.path.dirname(__file__), "kube_docs.json")


@cache
def _data() -> dict:
    with open(_FILE, encoding="utf-8") as f:
        return json.load(f)


def types() -> dict[str, dict[str, str]]:
    """{type name: {json field name: type code}} (a leading "!" on a code: required)."""
    return _data()["types"]


@cache
def docs() -> dict[str, dict[str, str]]:
    """{type name: {"": the type's description, json field name: the field's}}, for the types
    of Pod (not its status), ConfigMap and Secret: what `kubectl explain` shows
    (kube_docs.json, written by scripts/gen_kube_schema.py --docs from the same models)."""
    with open(_DOCS, encoding="utf-8") as f:
        return json.load(f)["docs"]


def root(kind: str) -> str | None:
    """The type of a top-level object of this kind (Pod, Deployment, ...), if known."""
    return _data()["roots"].get(kind)


def strip(code: str) -> tuple[str, bool]:
    """(code without the required mark, required?)."""
    return (code[1:], True) if code.startswith("!") else (code, False)


def is_object(code: str) -> bool:
    """Does a (stripped) code name an object, a list of objects or a map of objects?"""
    base = code.lstrip("[]{}")
    return base in types()


_LEAVES = {"s": "a string", "i": "an integer", "b": "true or false", "n": "a number",
           "x": "an integer or a string", "q": "a quantity (e.g. 128Mi, 500m, 2)"}


def leaf_problem(code: str, value: Any) -> str | None:
    """Why a scalar value does not fit a leaf code, or None (as the API server's JSON decoding
    would refuse it: "80" is not an integer, 80 is not a string)."""
    ok = {
        "s": isinstance(value, str),
        "i": isinstance(value, int) and not isinstance(value, bool),
        "b": isinstance(value, bool),
        "n": isinstance(value, (int, float)) and not isinstance(value, bool),
        "x": isinstance(value, (int, str)) and not isinstance(value, bool),
        "q": isinstance(value, (int, float, str)) and not isinstance(value, bool),
    }.get(code, True)
    if ok:
        return None
    msg = f"expected {_LEAVES[code]} (got {show(value)})"
    if code == "s" and isinstance(value, (int, float, bool)):
        msg += ": put it in quotes"
    return msg


def value_problems(value: Any, code: str, path: str, walk_object) -> list[str]:
    """Problems of a value against a stripped code; objects go to walk_object(node, type, path)
    (which returns its own problems)."""
    if value is None:
        return []
    if code.startswith("[]"):
        if not isinstance(value, list):
            return [f"{path}: expected a list (got {show(value)})"]
        out = []
        for i, v in enumerate(value):
            out += value_problems(v, code[2:], f"{path}[{i}]", walk_object)
        return out
    if code.startswith("{}"):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping (got {show(value)})"]
        out = []
        for k, v in value.items():
            out += value_problems(v, code[2:], f"{path}.{k}", walk_object)
        return out
    if code in types():
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping (got {show(value)})"]
        return walk_object(value, code, path)
    if code == "*":
        return []
    if isinstance(value, (dict, list)):
        return [f"{path}: expected {_LEAVES.get(code, 'a scalar')} (got {show(value)})"]
    problem = leaf_problem(code, value)
    return [f"{path}: {problem}"] if problem else []
