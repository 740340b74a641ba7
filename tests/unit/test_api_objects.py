"""The object store, the patch forms, and the protobuf reader and writer behind the API's
ConfigMaps and Secrets and its OpenAPI v2 document."""

from __future__ import annotations

import base64
import json
import os
import struct
from types import SimpleNamespace

import pytest

from minipod.api import openapi, patch
from minipod.api import protobuf as pb
from minipod.api.status import ApiError
from minipod.objectstore import Store, fs_type
from minipod.spec import objects as objmod
from minipod.spec import spec


def _cfg(tmp_path):
    return SimpleNamespace(root=str(tmp_path / "run"), data_root=str(tmp_path / "data"))


def _cm(name: str, ns: str = "default", **data) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns}, "data": data}


# --- the store -------------------------------------------------------------------------------

def test_store_writes_reads_lists_and_leaves_nothing_after_delete(tmp_path):
    store = Store(_cfg(tmp_path))
    with store.locked():
        first = store.write("ConfigMap", _cm("a", greeting="hi"))
        store.write("ConfigMap", _cm("b", "other", x="1"))
        again = store.write("ConfigMap", _cm("a", greeting="hello"))
    assert int(again["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert [d["metadata"]["name"] for d in store.list("ConfigMap")] == ["a", "b"]
    assert [d["metadata"]["name"] for d in store.list("ConfigMap", "other")] == ["b"]
    obj = store.get("ConfigMap", "default", "a")
    assert obj.data == {"greeting": b"hello"}
    assert store.get("ConfigMap", "default", "nope") is None
    assert store.read("ConfigMap", "..", "a") is None  # never a path out of the store
    with store.locked():
        store.delete("ConfigMap", "default", "a")
        store.delete("ConfigMap", "other", "b")
        assert store.delete("ConfigMap", "other", "b") is None
    assert not os.path.exists(os.path.join(str(tmp_path / "data"), "objects"))


def test_the_file_and_the_flag_come_before_the_store(tmp_path):
    store = Store(_cfg(tmp_path))
    with store.locked():
        store.write("ConfigMap", _cm("cfg", k="store"))
        store.write("ConfigMap", _cm("only-store", k="store"))
    pod = """\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox
    env:
    - {name: A, valueFrom: {configMapKeyRef: {name: cfg, key: k}}}
    - {name: B, valueFrom: {configMapKeyRef: {name: only-store, key: k}}}
"""
    res = spec.loads(pod, store=store)
    assert res.objects.get("ConfigMap", "default", "only-store").data == {"k": b"store"}
    assert res.objects.get("ConfigMap", "default", "cfg").data == {"k": b"store"}
    own = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {k: file}\n---\n"
    res = spec.loads(own + pod, store=store)
    assert res.objects.get("ConfigMap", "default", "cfg").data == {"k": b"file"}
    given = objmod.Objects()
    given.add(objmod.Obj("ConfigMap", "cfg", "default", {"k": b"flag"}))
    res = spec.loads(pod, given=given, store=store)
    assert res.objects.get("ConfigMap", "default", "cfg").data == {"k": b"flag"}
    with pytest.raises(Exception) as e:
        spec.loads(pod.replace("only-store", "missing"), store=store)
    assert "configmap 'missing' not found" in str(e.value.problems)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting the secrets' tmpfs needs root")
def test_secrets_live_on_a_tmpfs_of_their_own_removed_with_the_last(tmp_path):
    store = Store(_cfg(tmp_path))
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "s", "namespace": "default"},
              "data": {"pw": base64.b64encode(b"x").decode()}}
    try:
        with store.locked():
            store.write("Secret", secret)
        path = os.path.join(store.dir("Secret"), "default", "s.json")
        assert fs_type(path)[1] == "tmpfs" and os.stat(path).st_mode & 0o777 == 0o600
        assert store.get("Secret", "default", "s").data == {"pw": b"x"}
        with store.locked():
            store.delete("Secret", "default", "s")
        assert fs_type(store.dir("Secret"))[1] != "tmpfs"
        assert not os.path.exists(os.path.join(str(tmp_path / "run"), "objects"))
    finally:
        if fs_type(store.dir("Secret"))[0] == store.dir("Secret"):
            os.system(f"umount {store.dir('Secret')}")


# --- patches ---------------------------------------------------------------------------------

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}},
       "spec": {"containers": [{"name": "c", "image": "busybox",
                                "env": [{"name": "X", "value": "1"}]},
                               {"name": "d", "image": "busybox"}],
                "tolerations": [{"key": "k"}]}}


def test_merge_patch_and_json_patch():
    assert patch.merge({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == \
        {"a": {"c": 2, "d": 3}}
    doc = {"data": {"a": "1"}, "list": [1, 2]}
    out = patch.json_patch(doc, [{"op": "add", "path": "/data/b", "value": "2"},
                                 {"op": "remove", "path": "/data/a"},
                                 {"op": "add", "path": "/list/-", "value": 3},
                                 {"op": "move", "from": "/list/0", "path": "/first"},
                                 {"op": "test", "path": "/first", "value": 1}])
    assert out == {"data": {"b": "2"}, "list": [2, 3], "first": 1} and doc["data"] == {"a": "1"}
    with pytest.raises(ApiError) as e:
        patch.json_patch(doc, [{"op": "replace", "path": "/nope/x", "value": 1}])
    assert e.value.code == 422


def test_strategic_merge_uses_the_merge_keys_kubectl_uses():
    p = {"metadata": {"labels": {"b": "2"}},
         "spec": {"$setElementOrder/containers": [{"name": "d"}, {"name": "c"}],
                  "containers": [{"name": "c", "env": [{"name": "Y", "value": "2"}],
                                  "$setElementOrder/env": [{"name": "X"}, {"name": "Y"}]}],
                  "tolerations": [{"key": "other"}]}}
    out = patch.apply(POD, patch.STRATEGIC, p, "Pod")
    assert out["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert [c["name"] for c in out["spec"]["containers"]] == ["d", "c"]
    assert out["spec"]["containers"][1]["env"] == [{"name": "X", "value": "1"},
                                                   {"name": "Y", "value": "2"}]
    assert out["spec"]["tolerations"] == [{"key": "other"}]  # no merge key: replaced
    out = patch.apply(POD, patch.STRATEGIC,
                      {"spec": {"containers": [{"name": "d", "$patch": "delete"}]}}, "Pod")
    assert [c["name"] for c in out["spec"]["containers"]] == ["c"]
    out = patch.apply(_cm("x", a="1", b="2"), patch.STRATEGIC, {"data": {"b": None, "c": "3"}},
                      "ConfigMap")
    assert out["data"] == {"a": "1", "c": "3"}
    out = patch.apply(_cm("x", a="1"), patch.STRATEGIC,
                      {"data": {"$patch": "replace", "z": "9"}}, "ConfigMap")
    assert out["data"] == {"z": "9"}


def test_patch_content_types():
    with pytest.raises(ApiError) as e:
        patch.parse("text/plain", b"{}")
    assert e.value.code == 415
    with pytest.raises(ApiError) as e:
        patch.parse(patch.MERGE, b"{nope")
    assert e.value.code == 400
    assert patch.parse(patch.APPLY, b"data: {a: b}\n") == {"data": {"a": "b"}}


# --- protobuf --------------------------------------------------------------------------------

def _envelope(kind: str, raw: bytes) -> bytes:
    type_meta = pb.string(1, "v1") + pb.string(2, kind)
    return pb.MAGIC + pb.message(1, type_meta) + pb.message(2, raw) + pb.message(3, b"") + \
        pb.message(4, b"")


def _entry(num: int, k: str, v: bytes) -> bytes:
    return pb.message(num, pb.message(1, k.encode()) + pb.message(2, v))


def test_decode_configmap_and_secret_as_kubectl_135_sends_them():
    # Byte for byte what `kubectl create configmap c1 --from-literal=a=b` sent (1.35.2).
    sent = (b'k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\x1c\n\x12\n\x02c1\x12\x00\x1a\x00"\x00'
            b'*\x002\x008\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00"\x00')
    assert pb.decode_object(sent) == {"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": "c1"}, "data": {"a": "b"}}
    meta = (pb.string(1, "s") + pb.string(3, "ns") + pb.uint(7, 0)
            + pb.message(8, pb.uint(1, 86400)) + _entry(11, "app", b"web")
            + pb.string(14, "f1") + pb.string(14, "f2"))
    raw = (pb.message(1, meta) + _entry(2, "pw", b"\x00\xffbin") + pb.string(3, "Opaque")
           + _entry(4, "txt", b"t") + pb.uint(5, 1) + pb.string(99, "from a newer client"))
    got = pb.decode_object(_envelope("Secret", raw))
    assert got == {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
                   "metadata": {"name": "s", "namespace": "ns", "labels": {"app": "web"},
                                "creationTimestamp": "1970-01-02T00:00:00Z",
                                "finalizers": ["f1", "f2"]},
                   "data": {"pw": base64.b64encode(b"\x00\xffbin").decode()},
                   "stringData": {"txt": "t"}}


@pytest.mark.parametrize("body", [b"{}", b"k8s\x00\n\x05\n\x02v1", _envelope("Pod", b""),
                                  b"k8s\x00\x12\xff\xff\xff\xff\x0f"])
def test_decode_refuses_what_it_cannot_read(body):
    with pytest.raises(pb.DecodeError):
        pb.decode_object(body)


def test_varints_round_trip():
    for n in (0, 1, 127, 128, 300, 1 << 35, (1 << 63) - 1, -1, -300):
        num, wt, v = next(pb.fields(pb.uint(5, n)))
        assert (num, wt) == (5, pb.VARINT) and pb._int64(v) == n
    assert struct.unpack("<d", next(pb.fields(pb.double(1, 2.5)))[2].to_bytes(8, "little")) \
        == (2.5,)


def _read_schema(buf: bytes) -> dict:
    """gnostic's Schema back into OpenAPI JSON (only what encode_schema writes)."""
    s: dict = {}
    for num, _, v in pb.fields(buf):
        if num == 1:
            s["$ref"] = v.decode()
        elif num == 2:
            s["format"] = v.decode()
        elif num == 4:
            s["description"] = v.decode()
        elif num == 19:
            s.setdefault("required", []).append(v.decode())
        elif num == 21:
            s["additionalProperties"] = _read_schema(next(pb.fields(v))[2])
        elif num == 22:
            s["type"] = next(pb.fields(v))[2].decode()
        elif num == 23:
            s["items"] = _read_schema(next(pb.fields(v))[2])
        elif num == 25:
            s["properties"] = {}
            for _, _, named in pb.fields(v):
                f = dict((n, x) for n, _, x in pb.fields(named))
                s["properties"][f[1].decode()] = _read_schema(f.get(2, b""))
        elif num == 31:
            f = dict((n, x) for n, _, x in pb.fields(v))
            s[f[1].decode()] = json.loads(dict((n, x) for n, _, x in pb.fields(f[2]))[2])
    return s


def test_openapi_v2_protobuf_holds_the_json_document():
    doc = openapi.document()
    fields = {n: v for n, _, v in pb.fields(openapi.document_protobuf())}
    assert fields[1] == b"2.0"
    defs = {}
    for _, _, named in pb.fields(fields[9]):
        f = dict((n, x) for n, _, x in pb.fields(named))
        defs[f[1].decode()] = _read_schema(f[2])
    assert defs == doc["definitions"]
    container = defs["io.k8s.api.core.v1.Container"]
    assert container["properties"]["env"]["x-kubernetes-patch-merge-key"] == "name"
    assert container["required"] == ["name"]
    assert defs["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"][
        "x-kubernetes-patch-strategy"] == "merge,retainKeys"
    assert defs["io.k8s.api.core.v1.Secret"]["x-kubernetes-group-version-kind"] == \
        [{"group": "", "kind": "Secret", "version": "v1"}]
    # Every reference resolves (kubectl refuses the whole document otherwise).
    refs = set()

    def walk(s):
        if "$ref" in s:
            refs.add(s["$ref"].removeprefix("#/definitions/"))
        for sub in [*s.get("properties", {}).values(), s.get("items"),
                    s.get("additionalProperties")]:
            if sub:
                walk(sub)

    for s in defs.values():
        walk(s)
    assert refs <= set(defs)


def test_openapi_v3_schemas_are_the_v2_ones_and_every_ref_resolves():
    from minipod.api import discovery

    doc = json.loads(discovery._core()[0])
    schemas = doc["components"]["schemas"]
    assert set(schemas) == set(openapi.document()["definitions"])
    refs = []

    def walk(s):
        if "$ref" in s:
            assert set(s) == {"$ref"}, s  # v3 ignores a $ref's siblings: they go around allOf
            refs.append(s["$ref"])
        for sub in [*s.get("properties", {}).values(), *s.get("allOf", []), s.get("items"),
                    s.get("additionalProperties")]:
            if sub:
                walk(sub)

    for s in schemas.values():
        walk(s)
    assert refs and all(r.startswith("#/components/schemas/") for r in refs)
    assert {r.removeprefix("#/components/schemas/") for r in refs} <= set(schemas)
    # What explain shows: the descriptions, and the kind by which it finds a schema, the same
    # as on the kind's path operations.
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["description"].startswith("Pod is a collection of containers")
    gvk = doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"][
        "x-kubernetes-group-version-kind"]
    assert pod["x-kubernetes-group-version-kind"] == [gvk]
    spec = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]
    assert spec["containers"]["items"] == {
        "$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    assert schemas["io.k8s.api.core.v1.Container"]["properties"]["image"][
        "description"].startswith("Container image name.")
    # The hash kubectl caches the document by changes with it.
    root = discovery.openapi_v3_root(None, None)[1]
    assert root["paths"]["api/v1"]["serverRelativeURL"] == \
        f"/openapi/v3/api/v1?hash={discovery._core()[1]}"
