"""Protocol Buffers' wire format, by hand, for the few messages minipod's API reads or writes.

Why at all: kubectl 1.35's `create configmap` and `create secret` send their object as
application/vnd.kubernetes.protobuf, and nothing a server says makes it send JSON instead (a
415 ends the command: tried, see tests/integration/test_kubectl_objects.py); and kubectl 1.20
reads the OpenAPI v2 document it validates with in gnostic's protobuf encoding only.

Why by hand rather than the protobuf package: both need a dozen messages whose field numbers are
fixed by .proto files (k8s.io/api core/v1 generated.proto, apimachinery meta/v1 and runtime
generated.proto, gnostic openapiv2/OpenAPIv2.proto); generated code would need protoc and all of
those files, while the wire format is five rules: a key is varint(field << 3 | wire type); wire
types 0 varint, 1 fixed 64-bit, 2 length-delimited (bytes, strings, messages, packed lists,
map entries), 5 fixed 32-bit; a map is a repeated entry message {1: key, 2: value}.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator

from minipod.errors import MinipodError

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class DecodeError(MinipodError, ValueError):
    """The bytes are not the protobuf message they claim to be."""


# --- reading --------------------------------------------------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7
        if shift > 63:
            raise DecodeError("varint longer than 10 bytes")


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value): an int for varints and fixed, bytes for LEN."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise DecodeError("field number 0")
        if wt == VARINT:
            v, i = _varint(buf, i)
        elif wt == LEN:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise DecodeError(f"field {num}: {n} bytes announced, {len(buf) - i} left")
            v, i = buf[i:i + n], i + n
        elif wt in (I64, I32):
            size = 8 if wt == I64 else 4
            if i + size > len(buf):
                raise DecodeError(f"field {num}: truncated fixed value")
            v, i = int.from_bytes(buf[i:i + size], "little"), i + size
        else:
            raise DecodeError(f"field {num}: wire type {wt} is not supported")
        yield num, wt, v


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _text(v, what: str) -> str:
    if not isinstance(v, bytes):
        raise DecodeError(f"{what}: expected a length-delimited string")
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{what}: not UTF-8") from None


def decode(buf: bytes, schema: dict) -> dict:
    """A message as the API's JSON: schema = {field number: (json name, type)}, type one of
    "string", "bytes" (base64 in JSON), "bool", "int", "time" (meta/v1 Time), "map:string",
    "map:bytes", "[]string", a nested schema (dict), or ("[]", schema). Unknown fields are
    skipped (a newer client may send more); empty strings and zero integers are left out, as
    the API's JSON omits them (omitempty)."""
    out: dict = {}
    for num, wt, v in fields(buf):
        if num not in schema:
            continue
        name, typ = schema[num]
        if typ == "string":
            s = _text(v, name)
            if s:
                out[name] = s
        elif typ == "bytes":
            out[name] = base64.b64encode(_need_len(v, name)).decode()
        elif typ in ("bool", "int"):
            if wt != VARINT:
                raise DecodeError(f"{name}: expected a varint")
            if typ == "bool":
                out[name] = bool(v)
            elif v:  # a zero is left out, as omitempty leaves it out of the JSON
                out[name] = _int64(v)
        elif typ == "time":
            t = decode(_need_len(v, name), {1: ("s", "int"), 2: ("n", "int")})
            if t.get("s"):
                out[name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t["s"]))
        elif typ in ("map:string", "map:bytes"):
            entry = decode(_need_len(v, name), {1: ("k", "string"),
                                                2: ("v", typ[4:])})
            value = entry.get("v", "")
            out.setdefault(name, {})[entry.get("k", "")] = value
        elif typ == "[]string":
            out.setdefault(name, []).append(_text(v, name))
        elif isinstance(typ, tuple):
            out.setdefault(name, []).append(decode(_need_len(v, name), typ[1]))
        else:
            out[name] = decode(_need_len(v, name), typ)
    return out


def _need_len(v, what: str) -> bytes:
    if not isinstance(v, bytes):
        raise DecodeError(f"{what}: expected a length-delimited field")
    return v


# --- the Kubernetes envelope (apimachinery runtime/generated.proto) -------------------------

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
_TYPE_META = {1: ("apiVersion", "string"), 2: ("kind", "string")}
_UNKNOWN = {1: ("typeMeta", _TYPE_META), 2: ("raw", "bytes"), 3: ("contentEncoding", "string"),
            4: ("contentType", "string")}

# apimachinery pkg/apis/meta/v1/generated.proto; managedFields (17) are the server's to write.
_OWNER_REF = {5: ("apiVersion", "string"), 1: ("kind", "string"), 3: ("name", "string"),
              4: ("uid", "string"), 6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
OBJECT_META = {
    1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
    4: ("selfLink", "string"), 5: ("uid", "string"), 6: ("resourceVersion", "string"),
    7: ("generation", "int"), 8: ("creationTimestamp", "time"),
    9: ("deletionTimestamp", "time"), 10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", "map:string"), 12: ("annotations", "map:string"),
    13: ("ownerReferences", ("[]", _OWNER_REF)), 14: ("finalizers", "[]string")}
# k8s.io/api core/v1/generated.proto
SCHEMAS = {
    ("v1", "ConfigMap"): {1: ("metadata", OBJECT_META), 2: ("data", "map:string"),
                          3: ("binaryData", "map:bytes"), 4: ("immutable", "bool")},
    ("v1", "Secret"): {1: ("metadata", OBJECT_META), 2: ("data", "map:bytes"),
                       3: ("type", "string"), 4: ("stringData", "map:string"),
                       5: ("immutable", "bool")},
    ("v1", "DeleteOptions"): {1: ("gracePeriodSeconds", "int"),
                              2: ("preconditions", {1: ("uid", "string"),
                                                    2: ("resourceVersion", "string")}),
                              3: ("orphanDependents", "bool"),
                              4: ("propagationPolicy", "string"), 5: ("dryRun", "[]string")},
}


def decode_object(body: bytes) -> dict:
    """An object sent as application/vnd.kubernetes.protobuf, as the API's JSON."""
    if not body.startswith(MAGIC):
        raise DecodeError("no 'k8s\\0' prefix: not a Kubernetes protobuf object")
    env = decode(body[len(MAGIC):], _UNKNOWN)
    tm = env.get("typeMeta") or {}
    key = (tm.get("apiVersion", ""), tm.get("kind", ""))
    if env.get("contentEncoding"):
        raise DecodeError(f"content encoding {env['contentEncoding']!r} is not supported")
    if key not in SCHEMAS:
        raise DecodeError(f"minipod reads {', '.join(k for _, k in SCHEMAS)} in protobuf, not "
                          f"{key[1] or 'an object without a kind'} ({key[0] or 'no version'})")
    obj = decode(base64.b64decode(env.get("raw", "")), SCHEMAS[key])
    return {"apiVersion": key[0], "kind": key[1], **obj}


# --- writing --------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(num: int, wt: int) -> bytes:
    return varint(num << 3 | wt)


def message(num: int, body: bytes) -> bytes:
    """A length-delimited field: a string's bytes, a nested message, a map entry."""
    return key(num, LEN) + varint(len(body)) + body


def string(num: int, s: str) -> bytes:
    return message(num, s.encode()) if s else b""


def uint(num: int, n: int) -> bytes:
    return key(num, VARINT) + varint(n)


def boolean(num: int, b: bool) -> bytes:
    return uint(num, 1) if b else b""


def double(num: int, x: float) -> bytes:
    return key(num, I64) + struct.pack("<d", x)
