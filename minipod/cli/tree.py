"""`minipod tree [POD]`: a pod as three trees side by side, all read from the kernel now.

- processes: from the janitor down (janitor -> supervisor -> pause, each container's PID 1 and
  its children), by the parent PIDs in /proc/PID/stat, with the host PID and the PID inside
  the process's own pid namespace (the last field of NSpid in /proc/PID/status);
- cgroups: the pod's slice and its leaves, with memory/cpu/pids limits and current use, read
  through the cgroup driver (v1, v2, systemd: the driver knows where the files are);
- network: the bridge and its address, the host end of the veth, and its peer eth0 inside the
  pod's network namespace, with the pod's IP.

`-o json` gives the same as data, `-o dot` a Graphviz digraph (`| dot -Tsvg > pod.svg`).
"""

from __future__ import annotations

import json
import os

from minipod import state

# --- processes -------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, comm) of a live process; None for a zombie or a gone one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            head, _, rest = f.read().rpartition(")")
    except OSError:
        return None
    fields = rest.split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), head.partition("(")[2]


def nspid(pid: int) -> list[int]:
    """The PID in every pid namespace the process is in, outermost (the host's) first."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []


def _args(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))):
            kids.setdefault(st[0], []).append(int(d))
    return {k: sorted(v) for k, v in kids.items()}


def _cgroup_owner(pid: int, owners: dict[str, str]) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            paths = {ln.rstrip("\n").split(":", 2)[2] for ln in f if ln.count(":") >= 2}
    except OSError:
        return None
    for p in paths:
        if p in owners:
            return owners[p]
    return None


def processes(rec: state.PodRecord) -> dict | None:
    """The process tree of a running pod, rooted at its janitor (or its supervisor)."""
    plan, st = rec.plan, rec.state
    if st.get("final"):
        return None
    roles: dict[int, str] = {}
    jan, sup = st.get("janitor_pid"), st.get("supervisor_pid")
    if jan and state.process_alive(jan, st.get("janitor_start")):
        roles[jan] = "janitor"
    if sup and state.process_alive(sup, st.get("supervisor_start")):
        roles[sup] = "supervisor"
    if st.get("sandbox_pid"):
        roles[int(st["sandbox_pid"])] = "sandbox"
    cstat = st.get("containers") or {}
    for c in plan["init_containers"] + plan["containers"]:
        if pid := (cstat.get(c["name"]) or {}).get("pid"):
            roles.setdefault(int(pid), f"container {c['name']}")
    # Other processes (a container's children, `minipod exec`) belong to whichever cgroup
    # they are in.
    owners = {"/" + plan["sandbox_cgroup"].strip("/"): "sandbox"}
    owners |= {"/" + c["cgroup"].strip("/"): c["name"]
               for c in plan["init_containers"] + plan["containers"]}
    root = next((p for p, r in roles.items() if r == "janitor"), None) or \
        next((p for p, r in roles.items() if r == "supervisor"), None) or \
        next((p for p, r in roles.items() if r == "sandbox"), None)
    if root is None or _stat(root) is None:
        return None
    kids = _children()

    def node(pid: int, depth: int = 0) -> dict:
        st_ = _stat(pid)
        role = roles.get(pid)
        if role is None:
            owner = _cgroup_owner(pid, owners)
            role = f"in {owner}" if owner else ""
        return {"pid": pid, "nspid": nspid(pid), "comm": st_[1] if st_ else "?",
                "args": _args(pid), "role": role,
                "children": [node(k, depth + 1) for k in kids.get(pid, []) if depth < 32]}

    return node(root)


# --- cgroups ---------------------------------------------------------------------------------

LIMIT_FILES = ("memory.max", "cpu.max", "pids.max")
USAGE_FILES = ("memory.current", "pids.current")


def cgroups(rec: state.PodRecord, driver) -> dict:
    plan = rec.plan
    leaves = [(plan["sandbox_cgroup"], "sandbox")]
    leaves += [(c["cgroup"], f"container {c['name']}")
               for c in plan["init_containers"] + plan["containers"]]

    def group(path: str, role: str, children: list) -> dict:
        exists = any(os.path.isdir(p) for p in driver.paths(path).values())
        return {"group": path, "role": role, "exists": exists,
                "paths": driver.paths(path) if exists else {},
                "limits": {f: _strip(driver.read(path, f)) for f in LIMIT_FILES} if exists else {},
                "usage": {f: _strip(driver.read(path, f)) for f in USAGE_FILES} if exists else {},
                "procs": sorted(driver.procs(path)) if exists and not children else [],
                "children": children}

    pod = group(plan["pod_cgroup"], "pod", [group(g, r, []) for g, r in leaves])
    return {"driver": driver.name, "tree": group(plan["cgroup_parent"], "parent", [pod])
            | {"procs": []}}


def _strip(v: str | None) -> str | None:
    return v.strip() if isinstance(v, str) else v


# --- network ---------------------------------------------------------------------------------


def network(rec: state.PodRecord) -> dict:
    from minipod.net import show

    plan, st = rec.plan, rec.state
    sandbox = int(st.get("sandbox_pid") or 0) if not st.get("final") else 0
    from minipod.kernel import ns

    # Pinned mode: the netns is held by a bind mount, not by a process (pod/pinned.py).
    pin = ((st.get("pins") or {}).get("files") or {}).get("net") if not st.get("final") else None
    inode = None
    if pin:
        try:
            inode = os.stat(pin).st_ino
        except OSError:
            inode, pin = None, None
    holder = pin or sandbox or None
    return {"bridge": show.host_link(plan["bridge"]),
            "hostVeth": show.host_link(plan["host_veth"]),
            "pod": {"netns": inode if pin else ns.inode(sandbox, "net") if sandbox else None,
                    "heldBy": holder,
                    "eth0": show.netns_link(holder, "eth0") if holder else None,
                    "ip": (st.get("network") or {}).get("ip", "")}}


def sandbox(rec: state.PodRecord) -> dict:
    """What holds the pod's namespaces: pause's PID, or the pins and their inodes."""
    st = rec.state
    mode = st.get("sandbox_mode") or rec.plan.get("sandbox_mode", "pause")
    pins = (st.get("pins") or {}) if not st.get("final") else {}
    files = pins.get("files") or {}
    out: dict = {"mode": mode, "pause": int(st.get("sandbox_pid") or 0)
                 if not st.get("final") else 0}
    if mode == "pinned":
        inodes = {}
        for t, p in files.items():
            try:
                inodes[t] = os.stat(p).st_ino
            except OSError:
                inodes[t] = None
        out |= {"dir": pins.get("dir", ""), "pins": files, "inodes": inodes,
                "shm": pins.get("shm", "")}
    return out


def build(rec: state.PodRecord, driver) -> dict:
    return {"pod": rec.name, "sandboxMode": rec.state.get("sandbox_mode", "pause"),
            "sandbox": sandbox(rec),
            "processes": processes(rec), "cgroups": cgroups(rec, driver),
            "network": network(rec)}


# --- text ------------------------------------------------------------------------------------


def _lines(node: dict, label, prefix: str = "", last: bool = True, top: bool = True):
    yield ("" if top else prefix + ("└─ " if last else "├─ ")) + label(node)
    kids = node["children"]
    sub = "" if top else prefix + ("   " if last else "│  ")
    for i, k in enumerate(kids):
        yield from _lines(k, label, sub, i == len(kids) - 1, False)


def _proc_label(n: dict) -> str:
    inner = f" [{n['nspid'][-1]}]" if len(n["nspid"]) > 1 else ""
    role = f"  ({n['role']})" if n["role"] else ""
    args = n["args"] or n["comm"]
    return f"{n['pid']}{inner} {args[:70]}{role}"


def _mib(v: str | None) -> str:
    if v is None:
        return "-"
    if v.isdigit():
        return f"{int(v) / 1048576:.1f}Mi"
    return v


def _cg_label(n: dict) -> str:
    name = n["group"].rsplit("/", 1)[-1] if n["role"] != "parent" else n["group"]
    if not n["exists"]:
        return f"{name}  ({n['role']}, gone)"
    lim, use = n["limits"], n["usage"]
    cpu = lim.get("cpu.max") or "-"
    parts = [f"mem {_mib(use.get('memory.current'))}/{_mib(lim.get('memory.max'))}",
             f"cpu {cpu.replace(' ', '/')}",
             f"pids {use.get('pids.current') or '-'}/{lim.get('pids.max') or '-'}"]
    procs = f"  procs {','.join(map(str, n['procs']))}" if n["procs"] else ""
    return f"{name}  ({n['role']})  {'  '.join(parts)}{procs}"


def text(doc: dict) -> str:
    out = [f"pod {doc['pod']}  (sandbox: {doc['sandboxMode']})"]
    sb = doc.get("sandbox") or {}
    if sb.get("mode") == "pinned":
        pause = (f"; pause {sb['pause']} holds only the PID namespace (shareProcessNamespace)"
                 if sb.get("pause") else "; no pause process")
        out.append(f"pinned namespaces  {sb.get('dir') or '(none)'}{pause}")
        for t, p in (sb.get("pins") or {}).items():
            out.append(f"  {t}:[{sb['inodes'].get(t)}]  bind mount on {p}")
        if sb.get("shm"):
            out.append(f"  /dev/shm: tmpfs on {sb['shm']}")
    out.append("processes  host PID [PID in its pid namespace]")
    if doc["processes"]:
        out += ["  " + ln for ln in _lines(doc["processes"], _proc_label)]
    else:
        out.append("  (not running)")
    cg = doc["cgroups"]
    out.append(f"cgroups  ({cg['driver']}; memory used/limit, cpu quota/period, pids "
               "current/max)")
    out += ["  " + ln for ln in _lines(cg["tree"], _cg_label)]
    net = doc["network"]
    out.append("network")
    br, veth, pod = net["bridge"], net["hostVeth"], net["pod"]
    if br:
        out.append(f"  {br['name']} (bridge, index {br['index']}) {' '.join(br['addresses'])}")
    else:
        out.append("  (no bridge)")
    if veth:
        out.append(f"  └─ {veth['name']}@if{veth['peerIndex']} (veth, host end, index "
                   f"{veth['index']}, master {veth.get('master', '-')})")
        eth = pod["eth0"]
        if eth:
            held = (f"the pin {pod['heldBy']}" if isinstance(pod["heldBy"], str)
                    else f"PID {pod['heldBy']}")
            out.append(f"     ⇄ {eth['name']}@if{eth['peerIndex']} (index {eth['index']}) "
                       f"{' '.join(eth['addresses'])}  in net:[{pod['netns']}] held by {held}")
    else:
        out.append("  └─ (no veth)")
    return "\n".join(out)


def dot(docs: list[dict]) -> str:
    """Graphviz: a cluster per pod, processes and cgroups and links as nodes; solid edges
    are parent -> child, dashed ones "is in this cgroup" and "holds this netns"."""
    out = ["digraph minipod {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];']

    def q(s: str) -> str:
        return json.dumps(s)

    for i, doc in enumerate(docs):
        p = f"p{i}_"
        out.append(f"  subgraph cluster_{i} {{ label={q('pod ' + doc['pod'])};")
        procs: list[tuple[str, dict]] = []

        def walk(n: dict, parent: str | None) -> None:
            nid = f"{p}pid{n['pid']}"
            inner = f" [{n['nspid'][-1]}]" if len(n["nspid"]) > 1 else ""
            label = f"{n['pid']}{inner} {n['comm']}\n{n['role']}"  # json.dumps: \\n
            out.append(f"    {nid} [label={q(label)}];")
            procs.append((nid, n))
            if parent:
                out.append(f"    {parent} -> {nid};")
            for k in n["children"]:
                walk(k, nid)

        if doc["processes"]:
            walk(doc["processes"], None)
        groups: dict[str, str] = {}

        def gwalk(n: dict, parent: str | None) -> None:
            gid = f"{p}cg{len(groups)}"
            groups[n["group"]] = gid
            out.append(f"    {gid} [shape=folder, label={q(_cg_label(n))}];")
            if parent:
                out.append(f"    {parent} -> {gid};")
            for k in n["children"]:
                gwalk(k, gid)
            for pid in n["procs"]:
                if any(x["pid"] == pid for _, x in procs):
                    out.append(f"    {p}pid{pid} -> {gid} [style=dashed];")

        gwalk(doc["cgroups"]["tree"], None)
        net = doc["network"]
        if net["bridge"]:
            out.append(f"    {p}br [shape=ellipse, label="
                       f"{q(net['bridge']['name'] + ' ' + ' '.join(net['bridge']['addresses']))}];")
        if net["hostVeth"]:
            out.append(f"    {p}veth [shape=ellipse, label={q(net['hostVeth']['name'])}];")
            if net["bridge"]:
                out.append(f"    {p}br -> {p}veth;")
            if net["pod"]["eth0"]:
                eth = net["pod"]["eth0"]
                out.append(f"    {p}eth0 [shape=ellipse, label="
                           f"{q('eth0 ' + ' '.join(eth['addresses']))}];")
                out.append(f"    {p}veth -> {p}eth0 [dir=both];")
                held = net["pod"]["heldBy"]
                if isinstance(held, str):  # a pin: a node of its own
                    out.append(f"    {p}pin [shape=note, label={q('pin ' + held)}];")
                    out.append(f"    {p}pin -> {p}eth0 [style=dashed];")
                elif held:
                    out.append(f"    {p}pid{held} -> {p}eth0 [style=dashed];")
        out.append("  }")
    out.append("}")
    return "\n".join(out)


def view(recs: list[state.PodRecord], driver, output: str | None) -> str:
    docs = [build(r, driver) for r in recs]
    if output == "json":
        return json.dumps(docs[0] if len(docs) == 1 else docs, indent=2)
    if output == "dot":
        return dot(docs)
    return "\n\n".join(text(d) for d in docs)
