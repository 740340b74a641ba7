"""Pods (and their events) over the API: each is an ordinary minipod pod.

A POSTed pod goes through the same steps as `minipod run -d`: minipod's validation (its
messages, as the 422's causes), imagePullPolicy, the plan, a detached supervisor
(cli/runner.py). DELETE is `minipod stop` with the grace period, then `minipod rm`. Reads are
the watch hub's snapshot (watch.py), so every object carries its resourceVersion.

Pod names are unique on the node, not per namespace: a pod's directory is named after it
(state.py). Creating "web" in namespace b while a "web" runs in a is 409 AlreadyExists.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time

from minipod.api import selectors, table
from minipod.api.status import ApiError, not_found
from minipod.errors import Conflict, MinipodError, NotFound, SpecError

log = logging.getLogger("minipod.api")

# runner.Daemon forks, and the child runs a little Python before it execs: imported now, so
# that the child of this threaded server never needs the import lock another thread may hold.
from minipod.cli import runner  # noqa: E402
from minipod.kubelet import janitor as _janitor  # noqa: E402,F401
from minipod.pod import pause as _pause  # noqa: E402,F401


def _ns(obj: dict) -> str:
    return obj["metadata"].get("namespace") or "default"


def _pod_list(api, req, ns: str | None):
    rv, items = api.hub.snapshot()
    sel_l = selectors.labels(req.arg("labelSelector"))
    sel_f = selectors.fields(req.arg("fieldSelector"), selectors.POD_FIELDS)
    out = [(o, p) for o, p in items if (ns is None or _ns(o) == ns)
           and sel_l(o["metadata"].get("labels")) and sel_f(o)]
    return rv, out, (sel_l, sel_f)


def list_pods(api, req, ns: str | None = None):
    if req.flag("watch"):
        from minipod.api import watchstream

        return watchstream.pods(api, req, ns)
    rv, items, _ = _pod_list(api, req, ns)
    if table.wants_table(req.headers.get("Accept") or ""):
        now = time.time()
        include = req.arg("includeObject") or "Metadata"
        return 200, table.table([table.row(o, p, include, now) for o, p in items], rv)
    return 200, {"kind": "PodList", "apiVersion": "v1",
                 "metadata": {"resourceVersion": str(rv)}, "items": [o for o, _ in items]}


def _find(api, ns: str, name: str) -> tuple[dict, tuple[str, str]]:
    _, items = api.hub.snapshot()
    for o, p in items:
        if o["metadata"]["name"] == name and _ns(o) == ns:
            return o, p
    raise not_found("pods", name)


def get(api, req, ns: str, name: str):
    obj, printed = _find(api, ns, name)
    if table.wants_table(req.headers.get("Accept") or ""):
        return 200, table.table([table.row(obj, printed, req.arg("includeObject") or
                                           "Metadata", time.time())],
                                int(obj["metadata"]["resourceVersion"]))
    return 200, obj


def create(api, req, ns: str, doc: dict | None = None):
    doc = req.json_body() if doc is None else doc
    if doc.get("kind") != "Pod" or doc.get("apiVersion") != "v1":
        raise ApiError(400, f"this URL takes a v1 Pod (got apiVersion {doc.get('apiVersion')!r},"
                            f" kind {doc.get('kind')!r})")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise ApiError(422, "Pod is invalid: metadata: Required value")
    if meta.get("namespace") not in (None, "", ns):
        raise ApiError(400, "the namespace of the provided object does not match the namespace"
                            " sent on the request")
    meta["namespace"] = ns
    for k in ("resourceVersion", "uid", "creationTimestamp"):
        meta.pop(k, None)  # set by the server, as the API server does
    doc.pop("status", None)
    from minipod import objectstore
    from minipod.spec import spec

    shown = meta.get("name") or meta.get("generateName") or ""
    try:
        # The configMaps and secrets its volumes and env read: the node's object store's.
        res = spec.loads(json.dumps(doc), source=f'Pod "{shown}"',
                         store=objectstore.Store(api.cfg))
    except SpecError as e:
        causes = [{"reason": "FieldValueInvalid", "message": p,
                   "field": p.split(":", 1)[0]} for p in e.problems]
        msg = e.problems[0] if len(e.problems) == 1 else "[" + ", ".join(e.problems) + "]"
        raise ApiError(422, f'Pod "{shown}" is invalid: {msg}',
                       details={"name": shown, "kind": "Pod", "causes": causes}) from None
    (lp,) = res.pods
    req.warnings += [w.split(": ", 1)[1] if w.startswith('Pod "') else w
                     for w in res.warnings]
    name = lp.pod.metadata.name
    if req.arg("dryRun"):
        raise ApiError(400, "dryRun is not supported by minipod (the manifest is valid)")
    with api.lock:  # one create at a time: the check below and the claim on disk
        _launch(api, req, lp, name, res.objects)
    api.hub.refresh()
    return 201, _find(api, ns, name)[0]


def _launch(api, req, lp, name: str, objects) -> None:
    from minipod import state
    from minipod.images import pull
    from minipod.images.store import ImageStore
    from minipod.pod import plan as planmod

    cfg = api.cfg
    if os.path.isdir(state.pod_dir(cfg.root, name)):
        raise ApiError(409, f'pods "{name}" already exists',
                       details={"name": name, "kind": "pods"})
    err = io.StringIO()
    try:
        store = ImageStore(cfg.image_root)
        seen = set()
        for c in [*(lp.pod.spec.init_containers or []), *lp.pod.spec.containers]:
            if (c.image, c.image_pull_policy) not in seen:
                seen.add((c.image, c.image_pull_policy))
                pull.ensure(store, cfg, c.image, c.image_pull_policy, err=err)
        plan = planmod.build(lp, cfg, store, f'pod "{name}"', objects)
        pid = runner.launch(plan, cfg, runner.Daemon(True, cfg.janitor))
    except Conflict as e:
        raise ApiError(409, str(e)) from None
    except MinipodError as e:
        raise ApiError(500, f'pod "{name}" could not be started: {e}',
                       reason="InternalError") from None
    finally:
        req.warnings += [ln.removeprefix("warning: ") for ln in err.getvalue().splitlines()
                         if ln.startswith("warning: ")]
    # The detached daemon's janitor is our child (runner forks it): reap it when the pod ends.
    threading.Thread(target=_reap, args=(pid,), daemon=True).start()


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def delete(api, req, ns: str, name: str):
    obj, _ = _find(api, ns, name)
    opts = {}
    if int(req.headers.get("Content-Length") or 0):
        opts = req.json_body()
    grace = opts.get("gracePeriodSeconds")
    if grace is None:
        grace = req.int_arg("gracePeriodSeconds")
    if grace is None:
        grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
        raise ApiError(400, f"gracePeriodSeconds: {grace!r} is not a non-negative integer")
    with api.hub.cond:
        first = name not in api.hub.deleting
        if first or grace < api.hub.deleting[name][1]:  # a shorter grace wins, as in k8s
            api.hub.deleting[name] = (time.time(), grace)
    if first or grace == 0:
        threading.Thread(target=_stop_and_remove, args=(api, name, grace), daemon=True,
                         name=f"delete-{name}").start()
    api.hub.refresh()
    try:
        return 200, _find(api, ns, name)[0]
    except ApiError:
        return 200, obj  # gone already


def _stop_and_remove(api, name: str, grace: int) -> None:
    try:
        try:
            runner.stop(name, api.cfg, grace)
        except NotFound:
            return
        runner.remove(name, api.cfg, force=True)
    except NotFound:
        pass
    except Exception:
        log.exception("delete pod %s", name)
    finally:
        api.hub.refresh()


_FORBIDDEN = ("spec: Forbidden: pod updates may not change fields other than "
              "`spec.containers[*].image`,`spec.initContainers[*].image`,"
              "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
              "tolerations),`spec.terminationGracePeriodSeconds` (minipod: and not those "
              "either: delete the pod and create it again)")


def patch(api, req, ns: str, name: str):
    """Labels and annotations of a pod may change (kubectl apply's last-applied annotation
    does on every apply); its spec may not, here as for a running pod in Kubernetes. The
    patch is applied to the pod's manifest (patch.py), and what it changed is checked."""
    from minipod import state
    from minipod.api import patch as patchmod

    ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
    p = patchmod.parse(ctype, req.body())
    try:
        _find(api, ns, name)
    except ApiError:
        if ctype != patchmod.APPLY:
            raise
        # Server-side apply of a pod that does not exist: create it from the applied object.
        return create(api, req, ns, dict(p))
    with api.lock:
        rec = state.PodRecord(api.cfg.root, name).require()
        plan = dict(rec.plan)
        manifest = json.loads(json.dumps(plan.get("manifest") or {}))
        if ctype == patchmod.APPLY:  # the whole object: its spec as written, or a change
            p = {k: v for k, v in p.items() if k != "status"}
            if p.get("spec") == manifest.get("spec"):
                p.pop("spec", None)
        new = patchmod.apply(manifest, ctype, p, "Pod")
        if new.get("spec") != manifest.get("spec") or \
                {k for k in set(new) | set(manifest) if new.get(k) != manifest.get(k)} - \
                {"metadata", "spec", "apiVersion", "kind", "status"}:
            raise ApiError(422, f'Pod "{name}" is invalid: {_FORBIDDEN}')
        old_m, new_m = manifest.get("metadata") or {}, new.get("metadata") or {}
        changed = {k for k in set(old_m) | set(new_m) if old_m.get(k) != new_m.get(k)}
        if changed - {"labels", "annotations", "resourceVersion", "uid", "creationTimestamp",
                      "managedFields", "generateName"}:
            raise ApiError(422, f'Pod "{name}" is invalid: metadata: Forbidden: only labels and '
                                "annotations of a pod can change")
        m = manifest.setdefault("metadata", {})
        for key in ("labels", "annotations"):
            if key in changed:
                m[key] = {str(k): str(v) for k, v in (new_m.get(key) or {}).items()}
                if not m[key]:
                    del m[key]
        plan["manifest"] = manifest
        state.write_json(os.path.join(rec.dir, "plan.json"), plan)
    api.hub.refresh()
    return 200, _find(api, ns, name)[0]


def put(api, req, ns: str, name: str):
    raise ApiError(422, f'Pod "{name}" is invalid: spec: Forbidden: minipod does not replace '
                        "pods: delete the pod and create it again")


def _event_objects(api, ns: str | None) -> list[dict]:
    from minipod import state
    from minipod.cli import describe, status

    out = []
    for n in state.names(api.cfg.root):
        try:
            rec = state.PodRecord(api.cfg.root, n)
        except MinipodError:
            continue
        if rec.creating or status.broken(rec):
            continue
        pns = rec.plan.get("namespace") or "default"
        if ns is not None and pns != ns:
            continue
        node = status._node()
        for e in describe.pod_events(rec):
            first, last = e["firstTimestamp"], e["lastTimestamp"]
            iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
            out.append({
                "kind": "Event", "apiVersion": "v1",
                "metadata": {"name": f"{n}.{round(first * 1e9):x}", "namespace": pns,
                             "creationTimestamp": iso(first),
                             "resourceVersion": str(api.hub.rv)},
                "involvedObject": {"kind": "Pod", "namespace": pns, "name": n,
                                   "uid": rec.plan.get("uid"), "apiVersion": "v1",
                                   **({"fieldPath": e["fieldPath"]} if e["fieldPath"] else {})},
                "reason": e["reason"], "message": e["message"], "type": e["type"],
                "count": e["count"], "firstTimestamp": iso(first), "lastTimestamp": iso(last),
                "source": {"component": describe.EVENT_SOURCE, "host": node},
                "reportingComponent": describe.EVENT_SOURCE, "reportingInstance": node})
    return out


def list_events(api, req, ns: str | None = None):
    if req.flag("watch"):
        raise ApiError(405, "minipod does not watch events", reason="MethodNotAllowed")
    sel = selectors.fields(req.arg("fieldSelector"), selectors.EVENT_FIELDS, kind="events")
    items = sorted((e for e in _event_objects(api, ns) if sel(e)),
                   key=lambda e: e["lastTimestamp"])
    if table.wants_table(req.headers.get("Accept") or ""):
        return 200, table.event_table(items, api.hub.rv, time.time())
    return 200, {"kind": "EventList", "apiVersion": "v1",
                 "metadata": {"resourceVersion": str(api.hub.rv)}, "items": items}


def _namespace(name: str) -> dict:
    return {"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def list_namespaces(api, req):
    _, items = api.hub.snapshot()
    from minipod.objectstore import Store

    names = sorted({"default"} | {_ns(o) for o, _ in items} | Store(api.cfg).namespaces())
    return 200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {},
                 "items": [_namespace(n) for n in names]}


def get_namespace(api, req, ns: str):
    return 200, _namespace(ns)  # every namespace exists: a pod's manifest names it
