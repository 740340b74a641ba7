"""ConfigMaps and Secrets over the API, kept in the node's object store (minipod/objectstore.py)
for pods to read: create (JSON, YAML, or the protobuf kubectl 1.35's `create configmap/secret`
sends), get, list, delete, PATCH (every form kubectl sends: patch.py) and PUT, in any
namespace, with the API server's semantics where kubectl shows them:

- a Secret's `data` is base64; `stringData` is merged into it on every write and never stored;
- `immutable: true` refuses every later change of the data (and of `immutable` itself), in
  the API server's words (core/validation ValidateConfigMapUpdate, ValidateSecretUpdate);
- fieldValidation=Strict (kubectl 1.35) refuses an unknown field with the server's message;
  without it (kubectl 1.20, which validated on the client) one is dropped with a warning;
- the Table `kubectl get` prints: NAME DATA AGE, and NAME TYPE DATA AGE for secrets.

No watch: nothing kubectl does with these objects needs one (`delete` lists, finds nothing,
and is done, since a delete here is immediate -- there are no finalizers).
"""

from __future__ import annotations

import base64
import random
import time
import uuid

from minipod.api import patch as patchmod
from minipod.api import selectors, table
from minipod.api.status import ApiError, not_found
from minipod.objectstore import KINDS, Store, valid_name

MAX_SIZE = 1 << 20  # core/validation: a ConfigMap's or Secret's data, at most 1 MiB
_FIELDS = {"ConfigMap": {"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"},
           "Secret": {"apiVersion", "kind", "metadata", "data", "stringData", "type",
                      "immutable"}}
_META = {"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
         "generation", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
         "labels", "annotations", "ownerReferences", "finalizers", "managedFields"}
_SELECTABLE = {"metadata.name": ("metadata", "name"),
               "metadata.namespace": ("metadata", "namespace")}
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # names.SimpleNameGenerator


def _store(api) -> Store:
    return Store(api.cfg)


def _body(req) -> dict:
    ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
    if ctype == "application/vnd.kubernetes.protobuf":
        from minipod.api import protobuf

        try:
            return protobuf.decode_object(req.body())
        except protobuf.DecodeError as e:
            raise ApiError(400, f"the protobuf body could not be decoded: {e}") from None
    return req.json_body()


# --- reads ----------------------------------------------------------------------------------

def _data_count(doc: dict) -> int:
    return len(doc.get("data") or {}) + len(doc.get("binaryData") or {})


def _row(doc: dict, kind: str, include: str, now: float) -> dict:
    from minipod.cli.status import age

    meta = doc["metadata"]
    created = table.epoch(meta.get("creationTimestamp"))
    cells = [meta["name"]] + ([doc.get("type", "Opaque")] if kind == "Secret" else [])
    cells += [_data_count(doc), age(now - created) if created else "<unknown>"]
    return table.cells_row(cells, doc, include)


def _table(docs: list[dict], kind: str, req) -> dict:
    """printers.go configMapColumnDefinitions / secretColumnDefinitions."""
    cols = [("Name", "string", "name", "Name must be unique within a namespace.")]
    if kind == "Secret":
        cols.append(("Type", "string", "", "The type of the secret"))
    cols += [("Data", "integer", "", "The number of entries in the data"),
             ("Age", "string", "", "CreationTimestamp is a timestamp representing the server "
                                   "time when this object was created.")]
    now = time.time()
    include = req.arg("includeObject") or "Metadata"
    rv = max((int(d["metadata"].get("resourceVersion") or 0) for d in docs), default=0)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(rv)},
            "columnDefinitions": [{"name": n, "type": t, "format": f, "description": d,
                                   "priority": 0} for n, t, f, d in cols],
            "rows": [_row(d, kind, include, now) for d in docs]}


def list_objects(api, req, resource: str, ns: str | None = None):
    kind = KINDS[resource]
    if req.flag("watch"):
        raise ApiError(405, f"minipod does not watch {resource}", reason="MethodNotAllowed")
    sel_l = selectors.labels(req.arg("labelSelector"))
    known = dict(_SELECTABLE, **({"type": ("type",)} if kind == "Secret" else {}))
    sel_f = selectors.fields(req.arg("fieldSelector"), known, kind=resource)
    store = _store(api)
    with store.locked():
        docs = [d for d in store.list(kind, ns)
                if sel_l(d["metadata"].get("labels")) and sel_f(d)]
    if table.wants_table(req.headers.get("Accept") or ""):
        return 200, _table(docs, kind, req)
    rv = max((int(d["metadata"].get("resourceVersion") or 0) for d in docs),
             default=int(time.time() * 1000))
    return 200, {"kind": f"{kind}List", "apiVersion": "v1",
                 "metadata": {"resourceVersion": str(rv)}, "items": docs}


def _read(store: Store, kind: str, resource: str, ns: str, name: str) -> dict:
    doc = store.read(kind, ns, name) if valid_name(name) else None
    if doc is None:
        raise not_found(resource, name)
    return doc


def get(api, req, resource: str, ns: str, name: str):
    kind = KINDS[resource]
    store = _store(api)
    with store.locked():
        doc = _read(store, kind, resource, ns, name)
    if table.wants_table(req.headers.get("Accept") or ""):
        return 200, _table([doc], kind, req)
    return 200, doc


# --- writes ---------------------------------------------------------------------------------

def _invalid(kind: str, name: str, problems: list[str]) -> ApiError:
    msg = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
    # kubectl prints "The <kind> "<name>" is invalid: <field>: <message>" from the causes.
    return ApiError(422, f'{kind} "{name}" is invalid: {msg}',
                    details={"name": name, "kind": kind,
                             "causes": [{"reason": "FieldValueInvalid",
                                         "message": p.partition(": ")[2] or p,
                                         "field": p.partition(": ")[0]} for p in problems]})


def _normalise(req, doc: dict, kind: str, ns: str, strict: bool) -> dict:
    """The object as it will be stored: known fields only, stringData merged into data, the
    problems minipod's own parser finds (spec/objects.py) as a 422."""
    from minipod.spec import objects

    if doc.get("kind") != kind or doc.get("apiVersion") != "v1":
        raise ApiError(400, f"this URL takes a v1 {kind} (got apiVersion "
                            f"{doc.get('apiVersion')!r}, kind {doc.get('kind')!r})")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise _invalid(kind, "", ["metadata.name: Required value: name or generateName is "
                                  "required"])
    unknown = sorted(f'unknown field "{k}"' for k in doc if k not in _FIELDS[kind])
    unknown += sorted(f'unknown field "metadata.{k}"' for k in meta if k not in _META)
    if unknown and strict:
        raise ApiError(400, f'{kind} in version "v1" cannot be handled as a {kind}: strict '
                            f"decoding error: {', '.join(unknown)}")
    req.warnings += unknown
    if meta.get("namespace") not in (None, "", ns):
        raise ApiError(400, "the namespace of the provided object does not match the namespace"
                            " sent on the request")
    out = {k: v for k, v in doc.items() if k in _FIELDS[kind]}
    out["metadata"] = {k: v for k, v in meta.items() if k in _META and k != "managedFields"}
    out["metadata"]["namespace"] = ns
    if kind == "Secret":
        data = dict(out.get("data") or {})
        string = out.pop("stringData", None)
        if isinstance(string, dict):
            for k, v in string.items():
                data[k] = base64.b64encode(v.encode()).decode() if isinstance(v, str) else v
        elif string is not None:
            raise _invalid(kind, meta.get("name") or "", ["stringData: expected a mapping"])
        if data or "data" in out:
            out["data"] = data
        out["type"] = out.get("type") or "Opaque"
    obj, problems = objects.parse(dict(out, metadata={**out["metadata"],
                                                      "name": out["metadata"].get("name")
                                                      or "placeholder"}))
    if problems:
        raise _invalid(kind, meta.get("name") or "", problems)
    size = sum(len(v) for v in obj.data.values())
    if size > MAX_SIZE:
        raise _invalid(kind, meta.get("name") or "",
                       [f"data: Too long: may not be more than {MAX_SIZE} bytes"])
    return out


def _strict(req) -> bool:
    return (req.arg("fieldValidation") or "").lower() == "strict"


def create(api, req, resource: str, ns: str, doc: dict | None = None):
    kind = KINDS[resource]
    doc = _body(req) if doc is None else doc
    out = _normalise(req, doc, kind, ns, _strict(req))
    meta = out["metadata"]
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = meta["generateName"][:58] + "".join(random.choices(_NAME_CHARS, k=5))
    name = meta.get("name") or ""
    if not name:
        raise _invalid(kind, "", ["metadata.name: Required value: name or generateName is "
                                  "required"])
    if req.arg("dryRun"):
        raise ApiError(400, f"dryRun is not supported by minipod (the {kind} is valid)")
    for k in ("resourceVersion", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"):
        meta.pop(k, None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    store = _store(api)
    with store.locked():
        if store.read(kind, ns, name) is not None:
            raise ApiError(409, f'{resource} "{name}" already exists',
                           details={"name": name, "kind": resource})
        return 201, store.write(kind, out)


def _check_update(kind: str, old: dict, new: dict) -> None:
    """ValidateConfigMapUpdate / ValidateSecretUpdate, for what minipod stores."""
    problems = []
    if kind == "Secret" and new.get("type") != old.get("type"):
        problems.append(f'type: Invalid value: "{new.get("type")}": field is immutable')
    if old.get("immutable"):
        locked = "field is immutable when `immutable` is set"
        if not new.get("immutable"):
            problems.append(f"immutable: Forbidden: {locked}")
        for f in ("data", "binaryData"):
            if (new.get(f) or {}) != (old.get(f) or {}):
                problems.append(f"{f}: Forbidden: {locked}")
    if problems:
        raise _invalid(kind, old["metadata"]["name"], problems)


def _update(api, req, kind: str, resource: str, ns: str, name: str, change) -> dict:
    """Read, change (a function of the stored object), check, write: under the store lock."""
    store = _store(api)
    with store.locked():
        old = _read(store, kind, resource, ns, name)
        new = _normalise(req, change(old), kind, ns, _strict(req))
        meta = new["metadata"]
        if meta.get("name") != name:
            raise ApiError(400, f"the name of the object ({meta.get('name')!r}) does not match "
                                f"the name on the URL ({name!r})")
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"].get("resourceVersion"):
            raise ApiError(409, f'Operation cannot be fulfilled on {resource} "{name}": the '
                                "object has been modified; please apply your changes to the "
                                "latest version and try again", reason="Conflict",
                           details={"name": name, "kind": resource})
        for k in ("uid", "creationTimestamp"):  # the server's, whatever the client sent
            meta[k] = old["metadata"].get(k)
        _check_update(kind, old, new)
        if req.arg("dryRun"):
            raise ApiError(400, f"dryRun is not supported by minipod (the {kind} is valid)")
        if {**new, "metadata": {**meta, "resourceVersion": None}} == \
                {**old, "metadata": {**old["metadata"], "resourceVersion": None}}:
            return old  # no change: the same resourceVersion, as the API server answers
        return store.write(kind, new)


def patch(api, req, resource: str, ns: str, name: str):
    kind = KINDS[resource]
    ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
    p = patchmod.parse(ctype, req.body())
    if ctype == patchmod.APPLY:  # server-side apply of an object that is not there: create it
        store = _store(api)
        with store.locked():
            missing = store.read(kind, ns, name) is None
        if missing:
            return create(api, req, resource, ns, dict(p))
    # The patch may not rename the object; its resourceVersion, if any, is a precondition.
    return 200, _update(api, req, kind, resource, ns, name,
                        lambda old: patchmod.apply(old, ctype, p, kind))


def put(api, req, resource: str, ns: str, name: str):
    kind = KINDS[resource]
    doc = _body(req)
    return 200, _update(api, req, kind, resource, ns, name, lambda old: doc)


def delete(api, req, resource: str, ns: str, name: str):
    kind = KINDS[resource]
    if int(req.headers.get("Content-Length") or 0):
        _body(req)  # DeleteOptions: nothing in them changes an immediate delete
    store = _store(api)
    with store.locked():
        doc = _read(store, kind, resource, ns, name)
        store.delete(kind, ns, name)
    return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                 "details": {"name": name, "kind": resource, "uid": doc["metadata"].get("uid")}}
