"""The OpenAPI documents' schemas: v2 (/openapi/v2), which kubectl validates manifests with and
computes apply's strategic merge patches from, for v1 Pod, ConfigMap and Secret; and the same
schemas in v3's form (components.schemas of /openapi/v3/api/v1, discovery.py), which
kubectl 1.35's `explain` reads (kubectl 1.20's reads v2).

Who reads it: kubectl 1.20 validates every `apply`/`create -f` on the client against it (and
fails without it unless --validate=false), asking for gnostic's protobuf encoding only
(Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf); kubectl 1.35 validates on
the server (fieldValidation=Strict, discovery.py's v3 document) but takes the patch strategies
of `apply` from here, since v3's patch operations name no strategic merge patch body.

Where the schemas come from: the Pod's types are minipod's own catalogue of the API's fields,
spec/kube_schema.json (generated from the Kubernetes OpenAPI document), so what kubectl 1.20
refuses on the client is what minipod's own validation knows; ConfigMap and Secret are small
enough to write here. The catalogue keeps no patch strategies, so PATCH_META adds those of
k8s.io/api core/v1 types.go (patchStrategy/patchMergeKey tags): kubectl merges a list with a
merge key item by item, and replaces a list without one -- the server (patch.py) must agree.
The descriptions `explain` shows come from the same models, spec/kube_docs.json.

What explain needs: the schema of a kind carries x-kubernetes-group-version-kind, which is how
both kubectls find it (1.35 matches it against the one on the kind's path operations in the v3
document; 1.20 looks the kind up in v2's definitions by it).
"""

from __future__ import annotations

import json
from functools import cache

from minipod.api import protobuf as pb

CORE, META = "io.k8s.api.core.v1.", "io.k8s.apimachinery.pkg.apis.meta.v1."
_META_TYPES = {"ObjectMeta", "ManagedFieldsEntry", "OwnerReference", "LabelSelector",
               "LabelSelectorRequirement"}
# What kubectl asks for; the answer's Content-Type has a '.' for the '@', which Go's
# mime.ParseMediaType refuses (kubectl 1.20: "mime: unexpected content after media subtype"),
# as kube-openapi's handler answers.
PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

# (type, field) -> (x-kubernetes-patch-strategy, x-kubernetes-patch-merge-key or "")
PATCH_META = {
    ("PodSpec", "volumes"): ("merge,retainKeys", "name"),
    ("PodSpec", "initContainers"): ("merge", "name"),
    ("PodSpec", "containers"): ("merge", "name"),
    ("PodSpec", "ephemeralContainers"): ("merge", "name"),
    ("PodSpec", "imagePullSecrets"): ("merge", "name"),
    ("PodSpec", "hostAliases"): ("merge", "ip"),
    ("PodSpec", "topologySpreadConstraints"): ("merge", "topologyKey"),
    ("PodSpec", "schedulingGates"): ("merge", "name"),
    ("PodSpec", "resourceClaims"): ("merge,retainKeys", "name"),
    ("PodSpec", "evictionResponders"): ("merge", "name"),
    ("Container", "ports"): ("merge", "containerPort"),
    ("Container", "env"): ("merge", "name"),
    ("Container", "volumeMounts"): ("merge", "mountPath"),
    ("Container", "volumeDevices"): ("merge", "devicePath"),
    ("EphemeralContainer", "ports"): ("merge", "containerPort"),
    ("EphemeralContainer", "env"): ("merge", "name"),
    ("EphemeralContainer", "volumeMounts"): ("merge", "mountPath"),
    ("EphemeralContainer", "volumeDevices"): ("merge", "devicePath"),
    ("ObjectMeta", "finalizers"): ("merge", ""),
    ("ObjectMeta", "ownerReferences"): ("merge", "uid"),
}

_OBJECTS = {  # the same type codes as kube_schema.json ("*": any value)
    "ConfigMap": {"apiVersion": "s", "kind": "s", "metadata": "ObjectMeta", "data": "{}s",
                  "binaryData": "{}s", "immutable": "b"},
    "Secret": {"apiVersion": "s", "kind": "s", "metadata": "ObjectMeta", "data": "{}s",
               "stringData": "{}s", "type": "s", "immutable": "b"},
}
KINDS = ("Pod", "ConfigMap", "Secret")


def model_name(t: str) -> str:
    if t in _META_TYPES:
        return META + t
    return CORE + t.removeprefix("CoreV1")


def _schema(code: str) -> dict:
    code = code.lstrip("!")
    if code.startswith("[]"):
        return {"type": "array", "items": _schema(code[2:])}
    if code.startswith("{}"):
        return {"type": "object", "additionalProperties": _schema(code[2:])}
    leaves = {"s": {"type": "string"}, "i": {"type": "integer", "format": "int64"},
              "b": {"type": "boolean"}, "n": {"type": "number", "format": "double"},
              "x": {"type": "string", "format": "int-or-string"}, "q": {"type": "string"},
              "*": {}}
    if code in leaves:
        return dict(leaves[code])
    return {"$ref": "#/definitions/" + model_name(code)}


@cache
def types() -> dict[str, dict[str, str]]:
    """Every type reachable from the three kinds, {type: {field: code}}."""
    from minipod.spec import kube_schema

    known = {**kube_schema.types(), **_OBJECTS}
    known["Pod"] = {**known["Pod"], "status": "*"}  # `get -o yaml` output, applied again
    known["ManagedFieldsEntry"] = {**known["ManagedFieldsEntry"], "fieldsV1": "*"}
    out, todo = {}, list(KINDS)
    while todo:
        t = todo.pop()
        if t in out:
            continue
        out[t] = known[t]
        todo += [c.lstrip("![]{}") for c in known[t].values() if c.lstrip("![]{}") in known]
    return out


_OBJECT_DOCS = {"Pod": {"status": "Most recently observed status of the pod, as minipod reports"
                                    " it (read only)."}}


@cache
def document() -> dict:
    from minipod.spec import kube_schema

    definitions = {}
    for t, fields in sorted(types().items()):
        props = {}
        docs = {**kube_schema.docs().get(t, {}), **_OBJECT_DOCS.get(t, {})}
        for f, code in sorted(fields.items()):
            s = _schema(code)
            if docs.get(f):
                s["description"] = docs[f]
            if (t, f) in PATCH_META:
                strategy, merge_key = PATCH_META[(t, f)]
                s["x-kubernetes-patch-strategy"] = strategy
                if merge_key:
                    s["x-kubernetes-patch-merge-key"] = merge_key
            props[f] = s
        d: dict = {"type": "object", "properties": props}
        if docs.get(""):
            d["description"] = docs[""]
        required = sorted(f for f, code in fields.items() if code.startswith("!"))
        if required:
            d["required"] = required
        if t in KINDS:
            d["x-kubernetes-group-version-kind"] = [{"group": "", "kind": t, "version": "v1"}]
        definitions[model_name(t)] = d
    return {"swagger": "2.0", "info": {"title": "minipod", "version": "v1"}, "paths": {},
            "definitions": definitions}


def _v3(s: dict) -> dict:
    """A v2 schema in v3's form: refs point into components.schemas, and a ref with a
    description of its own goes into allOf, since v3 ignores a $ref's siblings (as the API
    server writes it; both explain and its type names follow allOf)."""
    s = dict(s)
    if "$ref" in s:
        ref = {"$ref": s.pop("$ref").replace("#/definitions/", "#/components/schemas/")}
        return {**s, "allOf": [ref]} if s else ref
    for k in ("items", "additionalProperties"):
        if k in s:
            s[k] = _v3(s[k])
    if "properties" in s:
        s["properties"] = {f: _v3(v) for f, v in s["properties"].items()}
    return s


def v3_schemas() -> dict:
    """components.schemas of /openapi/v3/api/v1: the v2 definitions, converted."""
    return {name: _v3(s) for name, s in document()["definitions"].items()}


@cache
def document_json() -> bytes:
    return json.dumps(document(), sort_keys=True).encode()


# --- gnostic's protobuf encoding (gnostic-models openapiv2/OpenAPIv2.proto) ----------------

def _any_yaml(num: int, value) -> bytes:
    """An Any {2: yaml}: gnostic keeps an extension's value as YAML text (JSON is YAML)."""
    return pb.message(num, pb.string(2, json.dumps(value, sort_keys=True)))


def _named_any(num: int, name: str, value) -> bytes:
    return pb.message(num, pb.string(1, name) + _any_yaml(2, value))


def encode_schema(s: dict) -> bytes:
    """Schema: 1 _ref, 2 format, 4 description, 19 required, 21 additional_properties
    (AdditionalPropertiesItem {1: schema}), 22 type (TypeItem {1: value}), 23 items (ItemsItem
    {1: schema}), 25 properties (Properties {1: NamedSchema {1 name, 2 value}}), 31 vendor
    extensions. An object's properties are written even when empty: a Properties message
    present is what makes kubectl read it as an object type rather than a map."""
    out = pb.string(1, s.get("$ref", "")) + pb.string(2, s.get("format", ""))
    out += pb.string(4, s.get("description", ""))
    for r in s.get("required", []):
        out += pb.string(19, r)
    if "additionalProperties" in s:
        out += pb.message(21, pb.message(1, encode_schema(s["additionalProperties"])))
    if "type" in s:
        out += pb.message(22, pb.string(1, s["type"]))
    if "items" in s:
        out += pb.message(23, pb.message(1, encode_schema(s["items"])))
    if "properties" in s:
        out += pb.message(25, b"".join(
            pb.message(1, pb.string(1, name) + pb.message(2, encode_schema(v)))
            for name, v in s["properties"].items()))
    for k, v in sorted(s.items()):
        if k.startswith("x-"):
            out += _named_any(31, k, v)
    return out


@cache
def document_protobuf() -> bytes:
    """Document: 1 swagger, 2 info (Info {1 title, 2 version}), 8 paths (Paths), 9 definitions
    (Definitions {1: NamedSchema})."""
    doc = document()
    info = pb.string(1, doc["info"]["title"]) + pb.string(2, doc["info"]["version"])
    defs = b"".join(pb.message(1, pb.string(1, name) + pb.message(2, encode_schema(s)))
                    for name, s in doc["definitions"].items())
    return (pb.string(1, doc["swagger"]) + pb.message(2, info) + pb.message(8, b"")
            + pb.message(9, defs))


def serve(api, req, **_):
    """GET /openapi/v2: protobuf when the client asks for it (kubectl does), else JSON."""
    accept = req.headers.get("Accept") or ""
    protobuf = "protobuf" in accept and "json" not in accept.split(",")[0]
    body = document_protobuf() if protobuf else document_json()
    h = req.h
    h.send_response(200)
    h.send_header("Content-Type", PROTOBUF if protobuf else "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.send_header("Cache-Control", "no-cache, private")
    h.end_headers()
    h.wfile.write(body)
