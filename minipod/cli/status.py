"""What users read: kubectl-style tables, the Pod object with its status, crictl-style inspect.

Pure functions of a PodRecord (plan + state on disk), plus live /proc reads for inspect.
"""

from __future__ import annotations

import os
import time

from minipod import state
from minipod.cli import defaults
from minipod.kernel import ns


def age(seconds: float) -> str:
    """kubectl's HumanDuration: 45s, 3m2s, 12m, 5h3m, 3d4h, 40d."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def _statuses(rec: state.PodRecord, key: str, waiting: str) -> list[dict]:
    st = rec.state.get("containers") or {}
    out = []
    for c in rec.plan[key]:
        s = st.get(c["name"]) or {"name": c["name"], "restartCount": 0, "ready": False,
                                  "state": {"waiting": {"reason": waiting}}}
        out.append(s)
    return out


def containers(rec: state.PodRecord) -> list[dict]:
    """App container statuses in spec order."""
    return _statuses(rec, "containers", "ContainerCreating")


def init_containers(rec: state.PodRecord) -> list[dict]:
    out = []
    for c in _statuses(rec, "init_containers", "PodInitializing"):
        t = (c.get("state") or {}).get("terminated") or {}
        if c.get("kind") != "sidecar" and t.get("exitCode") == 0 and not c.get("ready"):
            # A completed init container is ready (prober_manager.go UpdatePodStatus).
            c = {**c, "ready": True}
        out.append(c)
    return out


def broken(rec) -> str | None:
    """What is wrong with a damaged record (state.PodRecord.broken), or None."""
    return getattr(rec, "broken", None)


def phase(rec: state.PodRecord) -> str:
    if broken(rec):
        return state.UNKNOWN  # kubectl's word for a pod whose state nobody can tell
    p = rec.state.get("phase") or state.PENDING
    if not rec.state.get("final") and not rec.active and rec.state:
        return "Unknown"  # the supervisor is gone and nobody recorded an outcome
    return p


def _init_status(rec: state.PodRecord) -> str | None:
    """'Init:1/2', 'Init:CrashLoopBackOff', 'Init:Error' while init containers run."""
    inits = init_containers(rec)
    if not inits or rec.state.get("apps_started") or rec.state.get("final"):
        return None
    for i, c in enumerate(inits):
        s = c.get("state") or {}
        t = s.get("terminated")
        sidecar = c.get("kind") == "sidecar"
        if t and t.get("exitCode") == 0 and not sidecar:
            continue
        if sidecar and c.get("started"):
            continue
        if t and t.get("exitCode"):
            return "Init:" + (t.get("reason") or f"ExitCode:{t['exitCode']}")
        w = s.get("waiting") or {}
        if w.get("reason") and w["reason"] not in ("PodInitializing", "ContainerCreating"):
            return "Init:" + w["reason"]
        return f"Init:{i}/{len(inits)}"
    # Every init container is done and the app containers are not started yet: the kubelet
    # reports them waiting with reason PodInitializing, which is what kubectl shows.
    return "PodInitializing"


def display_status(rec: state.PodRecord) -> str:
    """The STATUS column, following kubectl's printPod."""
    if broken(rec):
        return state.UNKNOWN
    if rec.state.get("stopping"):
        return "Terminating"
    init = _init_status(rec)
    if init:
        return init
    reason = phase(rec)
    has_running = False
    for c in reversed(containers(rec)):
        s = c.get("state") or {}
        if "waiting" in s and s["waiting"].get("reason"):
            reason = s["waiting"]["reason"]
        elif "terminated" in s:
            t = s["terminated"]
            reason = t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal")
                                         else f"ExitCode:{t.get('exitCode')}")
        elif "running" in s and c.get("ready"):
            has_running = True
    if reason == "Completed" and has_running:
        reason = "Running"
    return reason


def ready(rec: state.PodRecord) -> str:
    """Ready app containers and sidecars (a sidecar's readiness counts toward the pod's)."""
    cs = containers(rec) + [c for c in init_containers(rec) if c.get("kind") == "sidecar"]
    n = sum(1 for c in cs if c.get("ready") and not rec.state.get("final"))
    return f"{n}/{len(cs)}"


def restarts(rec: state.PodRecord) -> int:
    return sum(int(c.get("restartCount") or 0) for c in containers(rec) + init_containers(rec))


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


WIDE = ["NODE", "NOMINATED NODE", "READINESS GATES"]


def ps(records: list[state.PodRecord], wide: bool = False) -> str:
    """kubectl get pods; wide: its -o wide columns (IP, NODE, NOMINATED NODE, READINESS
    GATES)."""
    rows = [["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"] + (WIDE if wide else [])]
    now = time.time()
    extra = [_node(), "<none>", "<none>"] if wide else []
    for r in records:
        if broken(r):
            rows.append([r.name, "0/0", state.UNKNOWN, "0", age(now - r.plan["created"]),
                         "<none>"] + extra)
            continue
        ip = (r.state.get("network") or {}).get("ip") or "<none>"
        gates = len((r.plan.get("manifest") or {}).get("spec", {}).get("readinessGates") or [])
        row_extra = extra[:2] + [f"0/{gates}" if gates else "<none>"] if wide else []
        rows.append([r.name, ready(r), display_status(r), str(restarts(r)),
                     age(now - r.plan["created"]), ip if not r.state.get("final") else "<none>"]
                    + row_extra)
    return table(rows)


def _iso(t: float | None) -> str | None:
    if not t:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def damage_notes(records) -> str:
    """One line per damaged record, for stderr under a table (the table says only Unknown)."""
    return "".join(f'warning: pod "{r.name}" is Unknown: {broken(r)} (minipod rm -f '
                   f"{r.name} removes what is left of it)\n" for r in records if broken(r))


def _damaged_object(rec) -> dict:
    """What can be said of a pod whose record is damaged: its name, Unknown, and why."""
    plan = rec.plan if rec.has_plan else {}
    meta = {"name": rec.name, "namespace": plan.get("namespace", "default"),
            "creationTimestamp": _iso(rec.plan["created"])}
    if plan.get("uid"):
        meta["uid"] = plan["uid"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {},
            "status": {"phase": state.UNKNOWN, "reason": "Damaged", "message": broken(rec)}}


def pod_object(rec: state.PodRecord) -> dict:
    """The Kubernetes Pod as `kubectl get pod -o yaml` would show it."""
    if broken(rec):
        return _damaged_object(rec)
    plan, st = rec.plan, rec.state
    manifest = plan.get("manifest") or {}
    meta = dict(manifest.get("metadata") or {})
    meta.update(name=plan["name"], namespace=plan["namespace"], uid=plan["uid"],
                creationTimestamp=_iso(plan["created"]))
    spec = dict(manifest.get("spec") or {})
    spec.setdefault("restartPolicy", plan["restart_policy"])
    spec.setdefault("terminationGracePeriodSeconds", plan["grace_seconds"])
    spec = defaults.pod_spec(spec)
    spec["nodeName"] = _node()
    cs = [_k8s_status(c) for c in containers(rec)]
    ics = [_k8s_status(c) for c in init_containers(rec)]
    ph = phase(rec)
    sidecars = [c for c in init_containers(rec) if c.get("kind") == "sidecar"]
    all_ready = bool(cs) and all(c.get("ready") for c in cs + sidecars) \
        and not st.get("final")
    initialized = not ics or bool(st.get("apps_started"))
    sandbox_up = bool(st.get("sandbox_pid") or (st.get("pins") or {}).get("dir")) \
        and not st.get("final")
    started = _iso(st.get("started_at"))

    def cond(kind: str, ok: bool) -> dict:
        return {"type": kind, "status": "True" if ok else "False",
                "lastTransitionTime": started or _iso(plan["created"])}

    ip = (st.get("network") or {}).get("ip")
    status = {
        "phase": ph,
        "conditions": [cond("PodReadyToStartContainers", sandbox_up),
                       cond("Initialized", initialized), cond("Ready", all_ready),
                       cond("ContainersReady", all_ready), cond("PodScheduled", True)],
        "hostIP": _host_ip(),
        "podIP": ip if not st.get("final") else None,
        "podIPs": [{"ip": ip}] if ip and not st.get("final") else None,
        "startTime": started,
        "initContainerStatuses": ics or None,
        "containerStatuses": cs,
        "qosClass": plan["qos_class"],
    }
    if st.get("message"):
        status["message"] = st["message"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": {k: v for k, v in status.items() if v is not None}}


def _k8s_status(c: dict) -> dict:
    s = {k: c.get(k) for k in ("name", "ready", "restartCount", "image", "imageID")}
    s["started"] = "running" in (c.get("state") or {})
    s["state"] = {k: {f: x for f, x in v.items() if f != "stopSent"}
                  for k, v in (c.get("state") or {}).items()}
    s["lastState"] = {k: _with_scheme(v) for k, v in (c.get("lastState") or {}).items()}
    s["state"] = {k: _with_scheme(v) for k, v in s["state"].items()}
    if c.get("containerID"):
        s["containerID"] = _scheme(c["containerID"])
    return {k: v for k, v in s.items() if v is not None}


def _scheme(cid: str) -> str:
    """A container ID as the CRI reports it: `<runtime>://<id>` (containerd://...)."""
    return cid if "://" in cid else "minipod://" + cid


def _with_scheme(st: dict) -> dict:
    if isinstance(st, dict) and st.get("containerID"):
        return {**st, "containerID": _scheme(st["containerID"])}
    return st


def inspect(rec: state.PodRecord) -> dict:
    """Runtime facts in the spirit of `crictl inspectp`: PIDs, namespace inodes, cgroups, net."""
    plan, st = rec.require().plan, rec.state
    sandbox_pid = st.get("sandbox_pid") or 0
    net = st.get("network") or {}
    cstat = st.get("containers") or {}
    ctrs = []
    for c in plan["init_containers"] + plan["containers"]:
        s = cstat.get(c["name"], {})
        pid = s.get("pid") or 0
        ctrs.append({
            "name": c["name"], "id": s.get("containerID", ""), "pid": pid,
            "state": next(iter(s.get("state") or {"unknown": {}})),
            "restartCount": s.get("restartCount", 0),
            "image": c["image_ref"], "imageDigest": c["image_digest"],
            "namespaces": ns.inodes(pid) if pid else {},
            "cgroup": c["cgroup"], "argv": c["argv"], "logDir": c["log_dir"],
            "capabilities": c["caps"],
        })
    return {
        "name": plan["name"], "namespace": plan["namespace"], "uid": plan["uid"],
        "phase": phase(rec), "status": display_status(rec),
        "createdAt": _iso(plan["created"]), "qosClass": plan["qos_class"],
        "supervisor": {"pid": st.get("supervisor_pid") if rec.active else 0,
                       # 0 once the janitor is gone: never a PID it no longer owns (1, reused).
                       "janitorPid": st.get("janitor_pid") if rec.active and state.process_alive(
                           st.get("janitor_pid"), st.get("janitor_start")) else 0,
                       "janitorKind": st.get("janitor_kind", "")},
        "sandbox": {"mode": plan.get("sandbox_mode", "pause"),
                    "pid": sandbox_pid, "pause": (st.get("pause") or {}) if sandbox_pid
                    or plan.get("sandbox_mode") != "pinned" else {},
                    "namespaces": sandbox_namespaces(plan, st),
                    **pinned_view(plan, st),
                    "cgroup": plan["sandbox_cgroup"], "hostname": plan["hostname"],
                    # The node's namespaces it shares (hostNetwork takes uts too); pid is the
                    # pod's own, pause its PID 1, unless hostPID.
                    "hostNamespaces": [n for n, on in (
                        ("net", plan.get("host_network")), ("uts", plan.get("host_network")),
                        ("ipc", plan.get("host_ipc")), ("pid", plan.get("host_pid"))) if on],
                    "netns": plan.get("netns", "")},
        "cgroups": {"driver": st.get("cgroup_driver", ""), "pod": plan["pod_cgroup"],
                    "parent": plan["cgroup_parent"], "limits": plan["pod_limits"]},
        "network": {"ip": net.get("ip", ""), "gateway": net.get("gateway", ""),
                    "prefixLength": net.get("prefixlen"), "bridge": plan["bridge"],
                    "hostNetwork": bool(plan.get("host_network")),
                    "hostVeth": "" if plan.get("host_network") else plan["host_veth"],
                    "podInterface": "" if plan.get("host_network") else "eth0",
                    "subnet": plan["subnet"]},
        "dirs": {"run": plan["run_dir"], "data": plan["data_dir"]},
        "containers": ctrs,
    }


def sandbox_namespaces(plan: dict, st: dict) -> dict:
    """The sandbox's namespace inodes: pause's (pause mode), or the pinned ones, with pause's
    pid and the rest of its own when shareProcessNamespace keeps one (pinned mode)."""
    pid = st.get("sandbox_pid") or 0
    out = ns.inodes(pid) if pid else {}
    files = (st.get("pins") or {}).get("files") or {}
    for t, path in files.items():
        try:
            out[t] = os.stat(path).st_ino
        except OSError:
            out[t] = None
    return out


def pinned_view(plan: dict, st: dict) -> dict:
    """inspect's words for a pinned sandbox (pod/pinned.py): where the pins are, and why a
    pause runs if one does."""
    if plan.get("sandbox_mode") != "pinned":
        return {}
    pins = st.get("pins") or {}
    out = {"pinDir": plan.get("pin_dir", ""), "pins": pins.get("files") or {},
           "shm": pins.get("shm") or ""}
    if st.get("sandbox_pid"):
        out["pauseFor"] = ("the pod's PID namespace (shareProcessNamespace): a PID namespace "
                           "cannot be pinned")
    return out


def _node() -> str:
    import socket

    return socket.gethostname()


def _host_ip() -> str | None:
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source
            return s.getsockname()[0]
    except OSError:
        return None
