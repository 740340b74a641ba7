"""Views that make the primitives visible: `minipod ns POD [POD...]`.

Everything here is read from the kernel's own files at the time of the call: the PIDs come
from the pod's state (as `inspect` shows them), the inodes from /proc/PID/ns, the members of a
container (with --all) from /proc/PID/cgroup, so the table is what `readlink /proc/PID/ns/*`
would tell a student, only side by side.
"""

from __future__ import annotations

import os

from minipod import state

NS_TYPES = ("net", "ipc", "uts", "pid", "mnt", "cgroup", "user", "time")
# How a process holds a namespace, compared with the pod's sandbox and with the host (the
# namespaces this minipod command runs in).
PAUSE, OWN, HOST = "shared-with-pause", "own", "host"
# A pinned sandbox (pod/pinned.py): held by a bind mount, the row "(pinned)" shows the pins.
PINNED = "pinned"
MARK = {PAUSE: "=", OWN: "*", HOST: "h", PINNED: "p"}
PINS_ROW = "(pinned)"


def ns_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None  # gone, or a kernel without that namespace type (time: 5.6+)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _cgroup_paths(pid: int) -> set[str]:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return {ln.rstrip("\n").split(":", 2)[2] for ln in f if ln.count(":") >= 2}
    except OSError:
        return set()


def _members(cgroups: dict[str, str]) -> dict[str, list[int]]:
    """PIDs per owner (sandbox or container name), by the cgroup each process is in: this
    finds `minipod exec` processes too, which are not descendants of the container's PID 1."""
    want = {"/" + path.strip("/"): owner for owner, path in cgroups.items()}
    out: dict[str, list[int]] = {owner: [] for owner in cgroups}
    for d in os.listdir("/proc"):
        if d.isdigit():
            for p in _cgroup_paths(int(d)):
                if p in want:
                    out[want[p]].append(int(d))
                    break
    return {k: sorted(v) for k, v in out.items()}


def _pin_inodes(st: dict) -> dict[str, int]:
    """type -> inode of the namespaces a pinned sandbox's bind mounts hold (none in pause mode
    or once the pod is down)."""
    out = {}
    for t, path in ((st.get("pins") or {}).get("files") or {}).items():
        try:
            out[t] = os.stat(path).st_ino  # the bind mount's target: the namespace itself
        except OSError:
            pass
    return out if not st.get("final") else {}


def rows(rec: state.PodRecord, every: bool = False) -> list[dict]:
    """A row per process: the sandbox, each running container's PID 1 (every process in the
    pod with every=True), each namespace type with its inode and how it is held. A pinned
    sandbox has a row of its own, "(pinned)", PID 0, its namespaces those of its pins."""
    plan, st = rec.plan, rec.state
    host = {t: ns_inode(os.getpid(), t) for t in NS_TYPES}
    sandbox_pid = int(st.get("sandbox_pid") or 0) if not st.get("final") else 0
    pause = {t: ns_inode(sandbox_pid, t) for t in NS_TYPES} if sandbox_pid else {}
    pins = _pin_inodes(st)
    procs: list[tuple[str, int]] = []
    if sandbox_pid:
        procs.append(("(sandbox)", sandbox_pid))
    cstat = st.get("containers") or {}
    ctrs = [(c["name"], int((cstat.get(c["name"]) or {}).get("pid") or 0), c["cgroup"])
            for c in plan["init_containers"] + plan["containers"]]
    if every:
        members = _members({"(sandbox)": plan["sandbox_cgroup"],
                            **{name: cg for name, _, cg in ctrs}})
        procs = [("(sandbox)", p) for p in members["(sandbox)"]] or procs
        for name, pid, _ in ctrs:
            procs += [(name, p) for p in members[name]]
    else:
        procs += [(name, pid) for name, pid, _ in ctrs if pid and os.path.exists(f"/proc/{pid}")]
    out = []
    if pins:
        out.append({"pod": rec.name, "container": PINS_ROW, "pid": 0,
                    "comm": (st.get("pins") or {}).get("dir", ""),
                    "namespaces": {t: {"inode": i, "sharing": PINNED} for t, i in pins.items()}})
    for owner, pid in procs:
        nss = {}
        for t in NS_TYPES:
            ino = ns_inode(pid, t)
            if ino is None:
                continue
            if pins.get(t) == ino:
                how = PINNED
            elif owner != "(sandbox)" and pause.get(t) == ino and ino != host.get(t):
                how = PAUSE
            elif ino == host.get(t):
                how = HOST
            else:
                how = OWN
            nss[t] = {"inode": ino, "sharing": how}
        if nss:
            out.append({"pod": rec.name, "container": owner, "pid": pid, "comm": _comm(pid),
                        "namespaces": nss})
    return out


def _sandbox_row(rs: list[dict]) -> dict | None:
    """What stands for the pod's sandbox: pause's row, or (pinned mode) the pins' row with
    pause's pid namespace added when one runs."""
    pause = next((r for r in rs if r["container"] == "(sandbox)"), None)
    pins = next((r for r in rs if r["container"] == PINS_ROW), None)
    if pins is None:
        return pause
    if pause is None:
        return pins
    return {**pause, "namespaces": {**pause["namespaces"], **pins["namespaces"]}}


def shared_between(pods: dict[str, list[dict]]) -> dict[str, list[str]]:
    """Which namespace types all the pods' sandboxes share (`shared`, the host's marked
    `(host)`) and which each pod has for itself (`separate`)."""
    sandboxes = [_sandbox_row(rs) for rs in pods.values()]
    out: dict[str, list[str]] = {"shared": [], "separate": []}
    if not all(sandboxes):
        return out
    for t in NS_TYPES:
        got = [r["namespaces"].get(t) for r in sandboxes]
        if any(g is None for g in got):
            continue
        if len({g["inode"] for g in got}) == 1:
            out["shared"].append(t + (" (host)" if got[0]["sharing"] == HOST else ""))
        else:
            out["separate"].append(t)
    return out


def table(all_rows: list[dict]) -> str:
    head = ["POD", "CONTAINER", "PID", "COMMAND", *NS_TYPES]
    body = [[r["pod"], r["container"], str(r["pid"] or "-"), r["comm"],
             *(f'{r["namespaces"][t]["inode"]}{MARK[r["namespaces"][t]["sharing"]]}'
               if t in r["namespaces"] else "-" for t in NS_TYPES)] for r in all_rows]
    grid = [head] + body
    widths = [max(len(x[i]) for x in grid) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(x, widths)).rstrip() for x in grid]
    legend = "= shared with the pod's pause   * its own   h the host's"
    if any(r["container"] == PINS_ROW for r in all_rows):
        legend += "   p pinned (a bind mount holds it, no process)"
    lines.append(legend)
    return "\n".join(lines)


def ns_view(recs: list[state.PodRecord], every: bool, output: str | None) -> str:
    per_pod = {r.name: rows(r, every) for r in recs}
    all_rows = [x for rs in per_pod.values() for x in rs]
    if output == "json":
        import json

        doc = {"processes": all_rows}
        if len(recs) > 1:
            doc["sharedBetweenPods"] = shared_between(per_pod)
        return json.dumps(doc, indent=2)
    text = table(all_rows)
    if len(recs) > 1:
        sh = shared_between(per_pod)
        text += (f"\nbetween the pods' sandboxes: shared {', '.join(sh['shared']) or 'nothing'}"
                 f"; separate {', '.join(sh['separate']) or 'nothing'}")
    return text
