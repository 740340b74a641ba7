"""Discovery: what kubectl reads before its first request (and caches in ~/.kube/cache).

Only the legacy forms: kubectl asks for aggregated discovery (apidiscovery.k8s.io/v2) first
and falls back to these when the answer is plain application/json.

OpenAPI: kubectl validates a manifest itself unless the server says it does. kubectl 1.35
finds that out from /openapi/v3/api/v1 -- the `fieldValidation` query parameter on the
operations of pods, configmaps and secrets -- and then sends fieldValidation=Strict and leaves
validation (minipod's own) to the server. The v3 document holds those operations and the
schemas (openapi.py: the v2 definitions in v3's form), which `kubectl explain` reads; it finds
a kind's schema by the x-kubernetes-group-version-kind of its path operations. The patch
operations have no requestBody, so kubectl 1.35's `apply` does not build its strategic merge
patches from v3 and takes them from v2 as before. kubectl 1.20 knows no v3 and validates on the
client with /openapi/v2 (openapi.py).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache

VERBS = ["create", "delete", "get", "list", "watch"]
OBJECT_VERBS = ["create", "delete", "get", "list", "patch", "update"]  # objects.py: no watch


def version(api, req, **_):
    from minipod import __version__

    return 200, {"major": "1", "minor": "35", "gitVersion": f"v1.35.0-minipod-{__version__}",
                 "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                 "goVersion": "", "compiler": "minipod", "platform": "linux/amd64"}


def api(api, req, **_):
    return 200, {"kind": "APIVersions", "versions": ["v1"],
                 "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                 "serverAddress": "127.0.0.1"}]}


def _res(name, kind, namespaced=True, verbs=VERBS, short=None, singular=""):
    r = {"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind,
         "verbs": verbs}
    if short:
        r["shortNames"] = short
    return r


def api_v1(api, req, **_):
    return 200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        _res("pods", "Pod", short=["po"], singular="pod", verbs=VERBS + ["patch"]),
        _res("pods/log", "Pod", verbs=["get"]),
        _res("pods/exec", "PodExecOptions", verbs=["create", "get"]),
        _res("pods/attach", "PodAttachOptions", verbs=["create", "get"]),
        _res("pods/portforward", "PodPortForwardOptions", verbs=["create", "get"]),
        _res("pods/status", "Pod", verbs=["get"]),
        _res("configmaps", "ConfigMap", short=["cm"], singular="configmap", verbs=OBJECT_VERBS),
        _res("secrets", "Secret", singular="secret", verbs=OBJECT_VERBS),
        _res("events", "Event", short=["ev"], singular="event", verbs=["get", "list"]),
        _res("namespaces", "Namespace", namespaced=False, short=["ns"], singular="namespace",
             verbs=["get", "list"]),
    ]}


def apis(api, req, **_):
    return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}


def healthz(api, req, **_):
    req.h.send_response(200)
    req.h.send_header("Content-Type", "text/plain")
    req.h.send_header("Content-Length", "2")
    req.h.end_headers()
    req.h.wfile.write(b"ok")


def _param(name, desc):
    return {"name": name, "in": "query", "description": desc, "schema": {"type": "string"}}


def _core_doc() -> dict:
    from minipod.api import openapi

    fv = _param("fieldValidation", "Strict: minipod's own validation, every problem named.")
    dry = _param("dryRun", "not supported by minipod")
    paths = {}
    for resource, kind in (("pods", "Pod"), ("configmaps", "ConfigMap"), ("secrets", "Secret")):
        op = {"responses": {"200": {"description": "OK"}},
              "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": kind}}
        base = f"/api/v1/namespaces/{{namespace}}/{resource}"
        paths[base] = {"post": {**op, "x-kubernetes-action": "post", "parameters": [fv, dry]},
                       "get": {**op, "x-kubernetes-action": "list"}}
        paths[base + "/{name}"] = {
            "get": {**op, "x-kubernetes-action": "get"},
            "patch": {**op, "x-kubernetes-action": "patch", "parameters": [fv, dry]},
            "put": {**op, "x-kubernetes-action": "put", "parameters": [fv, dry]},
            "delete": {**op, "x-kubernetes-action": "delete"}}
    return {"openapi": "3.0.0", "info": {"title": "minipod", "version": "v1"}, "paths": paths,
            "components": {"schemas": openapi.v3_schemas()}}


@cache
def _core() -> tuple[bytes, str]:
    """The v3 document of api/v1 and its hash: kubectl caches it by the hash in the URL, so
    the hash changes with the content."""
    body = json.dumps(_core_doc(), sort_keys=True).encode()
    return body, hashlib.sha512(body).hexdigest()[:32].upper()


def openapi_v3_root(api, req, **_):
    url = f"/openapi/v3/api/v1?hash={_core()[1]}"
    return 200, {"paths": {"api/v1": {"serverRelativeURL": url}}}


def openapi_v3_core(api, req, **_):
    return 200, json.loads(_core()[0])


def openapi_v2(api, req, **_):
    from minipod.api import openapi

    return openapi.serve(api, req)
