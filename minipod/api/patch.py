"""PATCH bodies, as the API server applies them: JSON merge patch (RFC 7386), JSON patch
(RFC 6902), strategic merge patch (what `kubectl apply`, `label` and `annotate` send), and
server-side apply's applied object -- for pods (pods.py) and configmaps/secrets (objects.py).

A strategic merge patch is a merge patch that knows lists: a list whose field has a merge key
(openapi.PATCH_META: containers by name, env by name, ...) is merged item by item, any other
list is replaced, and the patch may carry directives -- `$patch: replace|delete|merge`,
`$setElementOrder/<field>`, `$retainKeys`, `$deleteFromPrimitiveList/<field>` -- which
kubectl's three-way diff writes (k8s.io/apimachinery pkg/util/strategicpatch).
"""

from __future__ import annotations

import copy
import json

from minipod.api.status import ApiError

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
TYPES = (MERGE, STRATEGIC, JSON_PATCH, APPLY)


def parse(ctype: str, raw: bytes):
    """The patch document of a PATCH request; ApiError 415/400 for what is not one."""
    ctype = ctype.split(";")[0].strip()
    if ctype not in TYPES:
        raise ApiError(415, f"the body of the request was in an unknown format - accepted "
                            f"media types include: {', '.join(TYPES)}")
    try:
        if ctype == APPLY:
            import yaml

            p = yaml.safe_load(raw)
        else:
            p = json.loads(raw)
    except Exception as e:
        raise ApiError(400, f"the patch is not valid {ctype}: {e}") from None
    if ctype == JSON_PATCH and not isinstance(p, list):
        raise ApiError(400, "a JSON patch must be a list of operations")
    if ctype != JSON_PATCH and not isinstance(p, dict):
        raise ApiError(400, "the patch must be a JSON object")
    return p


def apply(doc: dict, ctype: str, p, type_name: str) -> dict:
    """The object `doc` (not changed) with patch `p` of content type `ctype` applied.
    type_name: its OpenAPI type ("Pod", "ConfigMap", "Secret"), for the strategic merge."""
    ctype = ctype.split(";")[0].strip()
    if ctype == JSON_PATCH:
        return json_patch(doc, p)
    if ctype == STRATEGIC:
        return strategic(doc, p, type_name)
    return merge(doc, p)  # merge patch; server-side apply: the applied object, merged in


# --- RFC 7386 ---------------------------------------------------------------------------------

def merge(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


# --- RFC 6902 ---------------------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"the JSON patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts: list[str], path: str):
    node = doc
    for p in parts:
        if isinstance(node, dict) and p in node:
            node = node[p]
        elif isinstance(node, list) and p.isdigit() and int(p) < len(node):
            node = node[int(p)]
        else:
            raise ApiError(422, f"the JSON patch path {path!r} does not exist")
    return node


def json_patch(doc: dict, ops: list) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, f"a JSON patch operation needs op and path (got {op!r})")
        name, path = op["op"], op["path"]
        parts = _pointer(path)
        if name in ("move", "copy"):
            src = _walk(doc, _pointer(op.get("from", "")), op.get("from", ""))
            value = copy.deepcopy(src)
            if name == "move":
                doc = _remove(doc, _pointer(op["from"]), op["from"])
            doc = _add(doc, parts, value, path)
        elif name == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        elif name == "remove":
            doc = _remove(doc, parts, path)
        elif name == "replace":
            doc = _remove(doc, parts, path)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        elif name == "test":
            if _walk(doc, parts, path) != op.get("value"):
                raise ApiError(422, f"the JSON patch test of {path!r} failed")
        else:
            raise ApiError(400, f"unknown JSON patch operation {name!r}")
    if not isinstance(doc, dict):
        raise ApiError(422, "the JSON patch must leave an object")
    return doc


def _add(doc, parts, value, path):
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list) and (last == "-" or (last.isdigit() and
                                                         int(last) <= len(parent))):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        raise ApiError(422, f"the JSON patch path {path!r} does not exist")
    return doc


def _remove(doc, parts, path):
    if not parts:
        raise ApiError(422, "the JSON patch may not remove the whole object")
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise ApiError(422, f"the JSON patch path {path!r} does not exist")
    return doc


# --- strategic merge patch ----------------------------------------------------------------------

def _fields(type_name: str | None) -> dict[str, str]:
    from minipod.api import openapi

    return openapi.types().get(type_name or "", {})


def _meta(type_name: str | None, field: str) -> tuple[str, str]:
    from minipod.api import openapi

    return openapi.PATCH_META.get((type_name or "", field), ("", ""))


def strategic(original, patch, type_name: str | None):
    """Apply a strategic merge patch to a map of OpenAPI type `type_name` (None: a plain map,
    merged as a merge patch would)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    body = {k: v for k, v in patch.items() if not k.startswith("$")}
    if directive == "replace":
        return _strip(body)
    out = dict(original) if isinstance(original, dict) else {}
    fields = _fields(type_name)
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") or k.startswith("$deleteFromPrimitiveList/"):
            continue
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
            continue
        code = fields.get(k, "").lstrip("!")
        strategy, key = _meta(type_name, k)
        item_type = code.lstrip("[]{}") or None
        if isinstance(v, list):
            merged = _list(out.get(k), v, item_type, "merge" in strategy, key)
            drop = patch.get(f"$deleteFromPrimitiveList/{k}")
            if isinstance(drop, list):
                merged = [x for x in merged if x not in drop]
            order = patch.get(f"$setElementOrder/{k}")
            if isinstance(order, list):
                merged = _order(merged, order, key)
            out[k] = merged
        elif isinstance(v, dict):
            sub = item_type if code and not code.startswith("{}") else None
            if code.startswith("{}"):  # a map (data, labels): each value of the item type
                if v.get("$patch") in ("replace", "delete"):
                    if v["$patch"] == "delete":
                        out.pop(k, None)
                    else:
                        out[k] = _strip(v)
                    continue
                cur = dict(out.get(k) or {})
                for mk, mv in v.items():
                    if mk.startswith("$"):
                        continue
                    if mv is None:
                        cur.pop(mk, None)
                    else:
                        cur[mk] = strategic(cur.get(mk), mv, item_type)
                out[k] = cur
            else:
                res = strategic(out.get(k), v, sub)
                if res is None:
                    out.pop(k, None)
                else:
                    out[k] = res
        else:
            out[k] = copy.deepcopy(v)
    for k in patch:  # deletions from a primitive list the patch does not otherwise name
        if k.startswith("$deleteFromPrimitiveList/") and k[25:] not in patch:
            drop = patch[k]
            out[k[25:]] = [x for x in out.get(k[25:]) or [] if x not in drop]
    keep = patch.get("$retainKeys")
    if isinstance(keep, list):
        out = {k: v for k, v in out.items() if k in keep}
    return out


def _list(cur, patch: list, item_type: str | None, merging: bool, key: str) -> list:
    cur = list(cur) if isinstance(cur, list) else []
    if not merging:
        return [_strip(x) if isinstance(x, dict) else copy.deepcopy(x) for x in patch
                if not (isinstance(x, dict) and x.get("$patch"))]
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [_strip(x) for x in patch if not (isinstance(x, dict) and x.get("$patch"))]
    if not key:  # a merged list of scalars (finalizers): the union, in order
        return cur + [x for x in patch if x not in cur]
    out = list(cur)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise ApiError(422, f"a strategic merge patch list item needs its merge key "
                                f"{key!r} (got {item!r})")
        at = next((i for i, x in enumerate(out) if isinstance(x, dict)
                   and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del out[at]
            continue
        if at is None:
            out.append(strategic({}, item, item_type))
        else:
            out[at] = strategic(out[at], item, item_type)
    return out


def _order(items: list, order: list, key: str) -> list:
    """$setElementOrder: the patch's order first, then the rest as they were."""
    def ident(x):
        return x.get(key) if key and isinstance(x, dict) else x

    wanted = [ident(o) if isinstance(o, dict) else o for o in order]
    pos = {w: i for i, w in enumerate(wanted)}
    return sorted(items, key=lambda x: pos.get(ident(x), len(pos)))


def _strip(node):
    """A patch value as data: directives removed."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if not k.startswith("$")}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node
