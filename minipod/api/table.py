"""The meta.k8s.io/v1 Table that `kubectl get` asks for: the server prints, kubectl aligns.

Columns as the API server's pod printer defines them (kubernetes pkg/printers/internalversion
printers.go, podColumnDefinitions and printPod); priority 1 columns are the ones `-o wide`
adds. The STATUS and READY values are minipod's own (cli/status.py), which follow printPod.
"""

from __future__ import annotations

import calendar
import time

COLUMNS = [
    ("Name", "string", "name", 0, "Name must be unique within a namespace."),
    ("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting "
                               "traffic."),
    ("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
    ("Restarts", "string", "", 0, "The number of times the containers in this pod have been "
                                  "restarted and when the last container in this pod has "
                                  "restarted."),
    ("Age", "string", "", 0, "CreationTimestamp is a timestamp representing the server time "
                             "when this object was created."),
    ("IP", "string", "", 1, "IP address allocated to the pod. Routable at least within the "
                            "cluster. Empty if not yet allocated."),
    ("Node", "string", "", 1, "NodeName is a request to schedule this pod onto a specific "
                              "node."),
    ("Nominated Node", "string", "", 1, "nominatedNodeName is set only when this pod preempts "
                                        "other pods on the node."),
    ("Readiness Gates", "string", "", 1, "If specified, all readiness gates will be evaluated "
                                         "for pod readiness."),
]


def epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _restarts(obj: dict, now: float) -> int | str:
    """An integer, or "3 (2m ago)" once a container has restarted (printPod)."""
    from minipod.cli.status import age

    st = obj.get("status") or {}
    total, last = 0, None
    for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        total += int(c.get("restartCount") or 0)
        fin = epoch(((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
        if c.get("restartCount") and fin and (last is None or fin > last):
            last = fin
    if total and last:
        return f"{total} ({age(now - last)} ago)"
    return total


def row(obj: dict, rec_status: tuple[str, str], include: str, now: float) -> dict:
    from minipod.cli.status import age

    ready, shown = rec_status
    meta = obj["metadata"]
    created = epoch(meta.get("creationTimestamp"))
    st = obj.get("status") or {}
    gates = (obj.get("spec") or {}).get("readinessGates")
    cells = [meta["name"], ready, shown, _restarts(obj, now),
             age(now - created) if created else "<unknown>",
             st.get("podIP") or "<none>", (obj.get("spec") or {}).get("nodeName") or "<none>",
             st.get("nominatedNodeName") or "<none>",
             f"0/{len(gates)}" if gates else "<none>"]
    return cells_row(cells, obj, include)


def cells_row(cells: list, obj: dict, include: str) -> dict:
    """A Table row: its cells, and the object as `includeObject` asks (Object, None, or by
    default its metadata only)."""
    r: dict = {"cells": cells}
    if include == "Object":
        r["object"] = obj
    elif include != "None":
        r["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": obj["metadata"]}
    return r


def table(rows: list[dict], rv: int | None = None) -> dict:
    t = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
         "columnDefinitions": [{"name": n, "type": ty, "format": f, "description": d,
                                "priority": p} for n, ty, f, p, d in COLUMNS],
         "rows": rows}
    if rv is not None:
        t["metadata"]["resourceVersion"] = str(rv)
    return t


def wants_table(accept: str) -> bool:
    """`application/json;as=Table;v=v1;g=meta.k8s.io, application/json`: the first choice."""
    for part in accept.split(","):
        params = {k.strip(): v.strip() for k, _, v in
                  (p.partition("=") for p in part.split(";")[1:])}
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return True
    return False


EVENT_COLUMNS = [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Subobject", 1),
                 ("Source", 1), ("Message", 0), ("First Seen", 1), ("Count", 1), ("Name", 1)]


def event_table(events: list[dict], rv: int, now: float) -> dict:
    """`kubectl get events` (printEvent): LAST SEEN TYPE REASON OBJECT MESSAGE, -o wide more."""
    from minipod.cli.status import age

    rows = []
    for e in events:
        src = e.get("source") or {}
        first, last = epoch(e.get("firstTimestamp")), epoch(e.get("lastTimestamp"))
        obj = e["involvedObject"]
        rows.append({"cells": [
            age(now - last) if last else "<unknown>", e["type"], e["reason"],
            f"{obj['kind'].lower()}/{obj['name']}", obj.get("fieldPath", ""),
            ", ".join(x for x in (src.get("component"), src.get("host")) if x),
            e["message"], age(now - first) if first else "<unknown>", e.get("count", 1),
            e["metadata"]["name"]],
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": e["metadata"]}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(rv)},
            "columnDefinitions": [{"name": n, "type": "integer" if n == "Count" else "string",
                                   "format": "name" if n == "Name" else "", "description": n,
                                   "priority": p} for n, p in EVENT_COLUMNS],
            "rows": rows}
