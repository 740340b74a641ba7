"""`?watch=1`: a chunked stream of newline-separated watch events, from the hub (watch.py)."""

from __future__ import annotations

import json
import time

from minipod.api import table
from minipod.api.status import ApiError, failure

BOOKMARK_EVERY = 15.0


def pods(api, req, ns: str | None):
    from minipod.api import pods as podsmod, selectors

    sel_l = selectors.labels(req.arg("labelSelector"))
    sel_f = selectors.fields(req.arg("fieldSelector"), selectors.POD_FIELDS)
    as_table = table.wants_table(req.headers.get("Accept") or "")
    include = req.arg("includeObject") or "Metadata"
    timeout = req.int_arg("timeoutSeconds")
    bookmarks = req.flag("allowWatchBookmarks")
    rv_arg = req.arg("resourceVersion") or ""
    # kubectl >= 1.32 (WatchListClient) lists through the watch: every object as ADDED, then a
    # bookmark annotated k8s.io/initial-events-end, then the changes.
    send_initial = req.flag("sendInitialEvents")
    if rv_arg not in ("", "0") and not send_initial:
        try:
            start = int(rv_arg)
        except ValueError:
            raise ApiError(400, f'resourceVersion: Invalid value: "{rv_arg}": must be an '
                                "integer (a resourceVersion this server gave)") from None
        initial = []
    else:  # from "now": every matching pod as ADDED first, as the API server does
        start, items = api.hub.snapshot()
        initial = [(start, "ADDED", o, p) for o, p in items]

    def matches(obj: dict) -> bool:
        return ((ns is None or podsmod._ns(obj) == ns) and
                sel_l(obj["metadata"].get("labels")) and sel_f(obj))

    def encode(kind: str, obj: dict, printed) -> bytes:
        if as_table and kind in ("ADDED", "MODIFIED", "DELETED"):
            obj = table.table([table.row(obj, printed, include, time.time())],
                              int(obj["metadata"]["resourceVersion"]))
        return json.dumps({"type": kind, "object": obj}).encode() + b"\n"

    out = req.stream("application/json")
    deadline = time.monotonic() + timeout if timeout else None
    last_sent = time.monotonic()
    rv = start
    try:
        for _, kind, obj, printed in initial:
            if matches(obj):
                out.write(encode(kind, obj, printed))
        if send_initial:
            out.write(json.dumps({"type": "BOOKMARK", "object": {
                "kind": "Pod", "apiVersion": "v1", "metadata": {
                    "resourceVersion": str(start),
                    "annotations": {"k8s.io/initial-events-end": "true"}}}}).encode() + b"\n")
        out.flush()
        while deadline is None or time.monotonic() < deadline:
            evs = api.hub.events_since(rv, 1.0)
            if evs is None:  # too old: kubectl lists again
                out.write(json.dumps({"type": "ERROR", "object": failure(
                    410, f"too old resource version: {rv} ({api.hub.oldest + 1})",
                    "Expired")}).encode() + b"\n")
                break
            for erv, kind, obj, printed in evs:
                rv = erv
                if matches(obj):
                    out.write(encode(kind, obj, printed))
                    last_sent = time.monotonic()
            if bookmarks and time.monotonic() - last_sent > BOOKMARK_EVERY:
                out.write(json.dumps({"type": "BOOKMARK", "object": {
                    "kind": "Pod", "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(api.hub.rv)}}}).encode() + b"\n")
                last_sent = time.monotonic()
            out.flush()
            if out.client_gone():
                return None
        out.close()
    except OSError:
        pass
    return None
