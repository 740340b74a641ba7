"""The views that make the primitives visible, checked against the kernel's own files:
process titles (`ps`), `minipod tree`, `run --explain`, `run --step`, `explain --script`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "sleep 3600 & exec sleep 3600"]
    resources:
      limits: {{memory: 64Mi, cpu: 500m}}
  - name: side
    image: busybox
    command: ["sleep", "3600"]
"""


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def ps_args() -> dict[int, str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True,
                         check=True).stdout
    return {int(p): a.strip() for p, _, a in (ln.strip().partition(" ")
                                              for ln in out.splitlines()[1:])}


@pytest.mark.parametrize("kind", ["c", "python"])
def test_ps_names_the_pod(mp, c_helpers, kind):
    """`ps -eo pid,args` shows the pod's name for its janitor and its supervisor, as
    containerd-shim shows its -id; comm (ps -o comm, top) too, cut to 15 bytes."""
    mp.write_config(janitor=str(c_helpers / "janitor") if kind == "c" else "python")
    name = "titled-" + kind
    mp.minipod("run", "-d", mp.write("p.yaml", POD.format(name=name)))
    sup = mp.inspect(name)["supervisor"]
    assert sup["janitorKind"] == kind
    args = ps_args()
    for pid, role in ((sup["janitorPid"], "janitor"), (sup["pid"], "supervisor")):
        # The title cannot outgrow the original argv: a long -root is cut, never the name.
        want = f"minipod-{role} -pod {name} -root {mp.root}"
        assert args[pid].startswith(f"minipod-{role} -pod {name} ") and \
            want.startswith(args[pid]), (role, args[pid])
    assert _read(f"/proc/{sup['janitorPid']}/comm") == f"mp-jan:{name}"[:15]
    assert _read(f"/proc/{sup['pid']}/comm") == f"mp-sup:{name}"[:15]
    # The environment is untouched (only argv is rewritten): tools that find a pod's
    # processes by it still do.
    with open(f"/proc/{sup['pid']}/environ", "rb") as f:
        assert f"MINIPOD_CONFIG={mp.config}".encode() in f.read().split(b"\0")
    # Found by its title, the pod is still stopped and removed properly.
    mp.minipod("rm", "-f", name)
    assert not any(name in a for a in ps_args().values())


def _status_nspid(pid: int) -> list[int]:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("NSpid:"):
            return [int(x) for x in line.split()[1:]]
    return []


def _ppid(pid: int) -> int:
    return int(_read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[1])


def cgroup_dir(pid: int, controller: str) -> str:
    """Where the kernel says `pid`'s cgroup is, for `controller` (v1) or the unified tree."""
    lines = [ln.split(":", 2) for ln in _read(f"/proc/{pid}/cgroup").splitlines()]
    for _, ctrls, path in lines:
        if controller in ctrls.split(",") and os.path.isdir(f"/sys/fs/cgroup/{controller}"):
            return f"/sys/fs/cgroup/{controller}{path}"
    path = next(p for _, c, p in lines if c == "")
    return f"/sys/fs/cgroup{path}"


def _ip_json(*args: str, netns_of: int | None = None) -> list[dict]:
    cmd = ["ip", "-j", *args]
    if netns_of:
        cmd = ["nsenter", "--target", str(netns_of), "--net", *cmd]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def _walk(node: dict, parent: dict | None = None):
    yield node, parent
    for k in node["children"]:
        yield from _walk(k, node)


def test_tree_is_what_the_kernel_shows(mp):
    """`minipod tree -o json`: the processes with their parents and NSpid as /proc has them,
    the cgroup leaves with the limits and members cgroupfs has, the links as `ip` shows them."""
    name = "treed"
    mp.minipod("run", "-d", mp.write("p.yaml", POD.format(name=name)))
    info = mp.inspect(name)
    app = next(c["pid"] for c in info["containers"] if c["name"] == "app")
    # app's shell forks its background sleep right away: wait for it to be there.
    mp.wait(lambda: len(open(f"{cgroup_dir(app, 'pids')}/cgroup.procs").read().split()) == 2,
            what="app's child")
    doc = json.loads(mp.minipod("tree", name, "-o", "json").stdout)

    nodes = {n["pid"]: (n, p) for n, p in _walk(doc["processes"])}
    sup = info["supervisor"]
    assert doc["processes"]["pid"] == sup["janitorPid"]
    assert nodes[sup["pid"]][0]["role"] == "supervisor"
    assert nodes[info["sandbox"]["pid"]][0]["role"] == "sandbox"
    for pid, (n, parent) in nodes.items():
        assert n["nspid"] == _status_nspid(pid), pid
        if parent:
            assert _ppid(pid) == parent["pid"], pid
    # Every process of the pod is in the tree: what cgroupfs lists for each container.
    for c in info["containers"]:
        members = sorted(int(x) for x in open(
            f"{cgroup_dir(c['pid'], 'pids')}/cgroup.procs").read().split())
        assert nodes[c["pid"]][0]["role"] == f"container {c['name']}"
        assert nodes[c["pid"]][0]["nspid"][-1] == 1  # PID 1 of its own pid namespace
        for pid in members:
            assert pid in nodes, (c["name"], pid)
        leaf = next(g for g in doc["cgroups"]["tree"]["children"][0]["children"]
                    if g["role"] == f"container {c['name']}")
        assert leaf["procs"] == members
        assert leaf["usage"]["pids.current"] == str(len(members))
    app_leaf = next(g for g in doc["cgroups"]["tree"]["children"][0]["children"]
                    if g["role"] == "container app")
    mem = cgroup_dir(app, "memory")
    v1 = os.path.exists(f"{mem}/memory.limit_in_bytes")
    assert app_leaf["limits"]["memory.max"] == _read(
        f"{mem}/memory.limit_in_bytes" if v1 else f"{mem}/memory.max") == "67108864"
    cpu = cgroup_dir(app, "cpu")
    want_cpu = (f"{_read(cpu + '/cpu.cfs_quota_us')} {_read(cpu + '/cpu.cfs_period_us')}"
                if v1 else _read(f"{cpu}/cpu.max"))
    assert app_leaf["limits"]["cpu.max"] == want_cpu == "50000 100000"

    net = doc["network"]
    (br,) = _ip_json("addr", "show", "dev", mp.bridge)
    assert net["bridge"]["index"] == br["ifindex"]
    assert net["bridge"]["addresses"] == [f'{a["local"]}/{a["prefixlen"]}'
                                          for a in br["addr_info"] if a["family"] == "inet"]
    (veth,) = _ip_json("link", "show", "dev", net["hostVeth"]["name"])
    assert net["hostVeth"]["master"] == veth["master"] == mp.bridge
    (eth0,) = _ip_json("addr", "show", "dev", "eth0", netns_of=info["sandbox"]["pid"])
    assert net["pod"]["eth0"]["index"] == eth0["ifindex"] == veth["link_index"]
    assert net["hostVeth"]["index"] == eth0["link_index"] == net["pod"]["eth0"]["peerIndex"]
    assert net["pod"]["eth0"]["addresses"] == [
        f'{a["local"]}/{a["prefixlen"]}' for a in eth0["addr_info"] if a["family"] == "inet"]
    assert net["pod"]["ip"] == info["network"]["ip"] == eth0["addr_info"][0]["local"]
    assert net["pod"]["netns"] == os.stat(f"/proc/{info['sandbox']['pid']}/ns/net").st_ino

    text = mp.minipod("tree", name).stdout
    assert f"{app} [1] sh -c sleep 3600 & exec sleep 3600" not in text  # it exec'd: sleep
    assert f"{app} [1] sleep 3600  (container app)" in text
    assert f"{net['hostVeth']['name']}@if{eth0['ifindex']}" in text
    graph = mp.minipod("tree", name, "-o", "dot").stdout
    assert graph.startswith("digraph minipod {") and graph.count("{") == graph.count("}")
    assert all(f"pid{pid} " in graph for pid in nodes)
    mp.minipod("rm", "-f", name)


def _explained(mp, name: str) -> tuple[list[dict], str]:
    p = mp.minipod("run", "-d", "--explain", "-o", "json",
                   mp.write("p.yaml", POD.format(name=name)))
    lines = p.stdout.splitlines()
    assert lines[-1] == name
    return [json.loads(ln) for ln in lines[:-1]], p.stderr


def _ns(pid: int, t: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{t}").st_ino


def test_explain_names_every_step_the_pod_took(mp):
    """`run --explain`: every primitive the pod was built from, with the values the kernel
    has now: the cgroup directories and limits, the sandbox's namespaces, each container's
    joins, mounts and pivot_root, the veth as `ip` shows it, the started processes."""
    import glob

    before = set(glob.glob("/tmp/minipod-explain-*"))
    name = "explained"
    recs, _ = _explained(mp, name)
    info = mp.inspect(name)
    pause = info["sandbox"]["pid"]
    steps = [r for r in recs if not r.get("begin")]
    stages = [r["stage"] for r in recs if r.get("begin")]
    assert stages == ["cgroups", "sandbox",
                      "container app: namespaces and root filesystem",
                      "container side: namespaces and root filesystem", "network",
                      "container app: start", "container side: start"]

    def find(pred) -> list[dict]:
        return [r for r in steps if pred(r)]

    # cgroups: each container's directory, as the kernel reports it, was made and explained,
    # its memory limit written there, and its process moved in (systemd: a unit that holds
    # the process and carries the limit).
    app = next(c for c in info["containers"] if c["name"] == "app")
    if info["cgroups"]["driver"] == "systemd":
        units = find(lambda r: r["what"].startswith("new systemd unit"))
        for c in info["containers"]:
            (unit,) = [r for r in units if r["values"]["pids"] == [c["pid"]]]
            assert cgroup_dir(c["pid"], "memory").endswith("/" + unit["values"]["unit"])
            assert unit["shell"].startswith(f"systemd-run --scope --unit={unit['values']['unit']}")
            if c["name"] == "app":
                props = unit["values"]["props"]
                assert props.get("MemoryMax", props.get("MemoryLimit")) == 67108864
    else:
        made = {r["values"]["path"] for r in find(lambda r: r["what"].startswith("new cgroup"))}
        for c in info["containers"]:
            for ctrl in ("memory", "pids"):
                d = cgroup_dir(c["pid"], ctrl)
                assert d in made, (d, made)
                assert find(lambda r: r["shell"] == f"echo {c['pid']} > {d}/cgroup.procs"), d
        mem = cgroup_dir(app["pid"], "memory")
        limit = find(lambda r: r["values"].get("value") == "67108864")
        assert [r["values"]["path"] for r in limit] in (
            [f"{mem}/memory.limit_in_bytes"], [f"{mem}/memory.max"])
        assert limit[0]["shell"] == f"echo 67108864 > {limit[0]['values']['path']}"

    # The sandbox: the namespaces it made are pause's.
    (new,) = find(lambda r: r["stage"] == "sandbox" and r["syscall"].startswith("unshare("))
    # (pid too: pause is PID 1 of the pod's own PID namespace, so the fork that makes it)
    assert new["shell"] == "unshare --mount --net --uts --ipc --pid --fork"
    for t in ("net", "ipc", "uts", "mnt"):
        assert new["values"]["inodes"][t] == _ns(pause, t)
    assert find(lambda r: r["shell"] == f"hostname {name}")
    (runs,) = find(lambda r: r["what"].startswith("pause runs"))
    assert runs["values"]["pid"] == pause

    for c in info["containers"]:
        mine = [r for r in steps if r["stage"].startswith(f"container {c['name']}:")]
        (join,) = [r for r in mine if r["syscall"].startswith("setns")]
        assert join["shell"] == f"nsenter --target {pause} --ipc --uts --net --mount"
        for t in ("net", "ipc", "uts"):
            assert join["values"]["inodes"][t] == _ns(pause, t) == _ns(c["pid"], t)
        own, cg = [r for r in mine if r["syscall"].startswith("unshare(")]
        assert own["shell"] == "unshare --mount --pid --fork"
        # Its cgroup namespace last, once it is in its own cgroup (that cgroup is the root).
        assert cg["shell"] == "unshare --cgroup"
        assert own["values"]["inodes"]["mnt"] == _ns(c["pid"], "mnt")
        rootfs = f"{mp.root}/pods/{name}/rootfs/{c['name']}"
        assert [r for r in mine if r["values"].get("fstype") == "overlay"
                and r["values"]["target"] == rootfs]
        assert [r for r in mine if r["values"].get("target") == f"{rootfs}/proc"]
        assert [r for r in mine if r["shell"].startswith(f"cd {rootfs} && pivot_root . .")]
        assert [r for r in mine if r["shell"].startswith("setpriv --bounding-set -all,")]
        (started,) = [r for r in mine if r["what"].startswith(f'container "{c["name"]}" runs')]
        assert started["values"]["pid"] == c["pid"]
        assert started["values"]["nspid"][-1] == 1
        for t in ("net", "ipc", "uts", "pid", "mnt"):
            assert started["values"]["inodes"][t] == _ns(c["pid"], t)
        assert started["values"]["inodes"]["pid"] != _ns(pause, "pid")

    # The network: the veth `ip` shows, in pause's netns, with the pod's address.
    (veth,) = find(lambda r: r["syscall"].startswith("rtnetlink RTM_NEWLINK kind=veth"))
    (link,) = _ip_json("link", "show", "dev", veth["values"]["host_veth"])
    assert link["ifindex"] == veth["values"]["host_index"] and link["master"] == mp.bridge
    assert veth["values"]["netns"] == _ns(pause, "net")
    assert veth["shell"].startswith(f"ip link add {link['ifname']} ")
    assert veth["shell"].endswith(f"type veth peer name eth0 netns /proc/{pause}/ns/net")
    (eth0,) = _ip_json("addr", "show", "dev", "eth0", netns_of=pause)
    (addr,) = find(lambda r: "RTM_NEWADDR" in r["syscall"] and "pod's netns" in r["syscall"])
    assert addr["values"]["ip"] == info["network"]["ip"] == eth0["addr_info"][0]["local"]
    assert addr["values"]["index"] == eth0["ifindex"]

    # Nothing of it reaches the workloads, and the CLI's file is gone.
    with open(f"/proc/{pause}/environ", "rb") as f:
        assert b"MINIPOD_EXPLAIN" not in f.read()
    assert set(glob.glob("/tmp/minipod-explain-*")) == before
    mp.minipod("rm", "-f", name)


def test_explain_is_off_by_default(mp):
    p = mp.minipod("run", "-d", mp.write("p.yaml", POD.format(name="quiet")))
    assert p.stdout == "quiet\n"
    mp.minipod("rm", "-f", "quiet")


def _until_prompt(proc, timeout: float = 60) -> list[str]:
    """stdout lines up to and with "press Enter to continue" (or EOF); read with os.read, so
    that select() sees every byte not yet taken (a buffered readline would hide them)."""
    import select
    import time

    lines: list[str] = []
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        while "\n" in proc.pending:
            line, proc.pending = proc.pending.split("\n", 1)
            lines.append(line)
            if line.strip() == "press Enter to continue":
                return lines
        if not select.select([fd], [], [], 1)[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return lines
        proc.pending += chunk.decode()
    proc.kill()
    raise AssertionError(f"no stop within {timeout}s: {lines}")


def _members(d: str) -> list[int]:
    return [int(x) for x in open(f"{d}/cgroup.procs").read().split()]


def _cmd(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def test_step_stops_after_each_stage(mp):
    """`run --step`: after each stage exactly that stage's work exists; Enter goes on."""
    name = "stepped"
    path = mp.write("p.yaml", POD.format(name=name))
    proc = subprocess.Popen([sys.executable, "-m", "minipod", "run", "-d", "--step", path],
                            env=mp.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.pending = ""
    try:
        out = _until_prompt(proc)
        assert out[0] == "── stopped after: cgroups", out
        dirs = [ln.split("cgroup ", 1)[1] for ln in out if ln.startswith("     cgroup ")]
        assert len(dirs) == 4  # the pod, the sandbox, app, side
        for d in dirs:
            assert os.path.isdir(d) and _members(d) == [], d
        pod_dir, sandbox_dir, app_dir, side_dir = dirs
        proc.stdin.write("\n")
        proc.stdin.flush()

        out = _until_prompt(proc)
        assert out[0] == "── stopped after: sandbox", out
        pause = int(out[2].split("PID ")[1].split(",")[0])
        assert _members(sandbox_dir) == [pause] and _read(f"/proc/{pause}/comm") == "pause"
        assert _ns(pause, "net") != _ns(os.getpid(), "net")
        assert [x["ifname"] for x in _ip_json("link", netns_of=pause)] == ["lo"]
        assert _members(app_dir) == _members(side_dir) == []
        proc.stdin.write("\n")
        proc.stdin.flush()

        out = _until_prompt(proc)
        assert out[0] == "── stopped after: network", out
        veth = out[2].split("veth ")[1].split()[0]
        (link,) = _ip_json("link", "show", "dev", veth)
        assert link["master"] == mp.bridge
        (eth0,) = _ip_json("addr", "show", "dev", "eth0", netns_of=pause)
        assert f'{eth0["addr_info"][0]["local"]}/' in out[2]
        # The containers wait before exec (in their cgroups already, not yet their command).
        for d in (app_dir, side_dir):
            (waiting,) = _members(d)
            assert not _cmd(waiting).startswith(("sh ", "sleep ")), _cmd(waiting)
        proc.stdin.write("\n")
        proc.stdin.flush()

        out = _until_prompt(proc)
        assert out[0] == "── stopped after: container app", out
        app = int(out[2].split(" as PID ")[1].split()[0])
        # Its command runs (the shell may not have exec'd its sleep yet; while it does, its
        # cmdline reads empty for a moment: the kernel has switched to the new memory and not
        # yet copied the arguments in -- CI met that once, under load).
        mp.wait(lambda: _cmd(app) in ("sh -c sleep 3600 & exec sleep 3600", "sleep 3600"),
                timeout=10, what=f"the app container's command (cmdline {_cmd(app)!r})")
        assert app in _members(app_dir)
        (side,) = _members(side_dir)
        assert not _cmd(side).startswith("sleep"), "side started before Enter"
        proc.stdin.write("\n")
        proc.stdin.flush()

        out = _until_prompt(proc)
        assert out[0] == "── stopped after: container side", out
        assert _cmd(side) == "sleep 3600"
        proc.stdin.write("\n")
        proc.stdin.close()
        rest = proc.pending + proc.stdout.read()
        assert proc.wait(30) == 0, proc.stderr.read()
        assert rest == f"{name}\n"
        assert mp.pod(name)["status"]["phase"] == "Running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    mp.minipod("rm", "-f", name)


def test_script_builds_the_same_pod_by_hand(mp):
    """`explain --script` builds the pod with util-linux, iproute2 and coreutils alone: the
    containers share pause's (here: sleep's) net, ipc and uts and have their own pid and mnt,
    the limits are set, the IP answers; `explain --cleanup` leaves nothing behind."""
    name = "byhand"
    path = mp.write("p.yaml", POD.format(name=name))
    build = mp.minipod("explain", "--script", path).stdout
    cleanup = mp.minipod("explain", "--cleanup", path).stdout
    assert "minipod" not in "".join(ln for ln in build.splitlines() if not ln.startswith("#")
                                    and "STATE=" not in ln and "/pods/" not in ln
                                    and "minipod/images" not in ln and "lowerdir" not in ln)
    state = os.path.join(mp.root, "byhand", name)
    try:
        r = subprocess.run(["bash", "-c", build], capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr
        sandbox = int(_read(f"{state}/sandbox.pid"))
        app, side = (int(_read(f"{state}/{c}.pid")) for c in ("app", "side"))
        for pid in (app, side):
            for t in ("net", "ipc", "uts"):
                assert _ns(pid, t) == _ns(sandbox, t) != _ns(os.getpid(), t)
            for t in ("pid", "mnt"):
                assert _ns(pid, t) not in (_ns(sandbox, t), _ns(os.getpid(), t))
            assert _status_nspid(pid)[-1] == 1
            assert _cmd(pid) == "sleep 3600" or _cmd(pid).startswith("sh -c sleep 3600")
            mounts = [ln.split()[4] for ln in _read(f"/proc/{pid}/mountinfo").splitlines()]
            assert "/.oldroot" not in mounts and "/proc" in mounts
            bnd = next(ln for ln in _read(f"/proc/{pid}/status").splitlines()
                       if ln.startswith("CapBnd:"))
            assert int(bnd.split()[1], 16) == 0xa80425fb  # containerd's 14 default caps
        assert _ns(app, "pid") != _ns(side, "pid")
        hostname = subprocess.run(["nsenter", "--target", str(app), "--uts", "cat",
                                   "/proc/sys/kernel/hostname"], capture_output=True,
                                  text=True).stdout.strip()
        assert hostname == name
        mem = cgroup_dir(app, "memory")
        assert _read(f"{mem}/memory.limit_in_bytes" if os.path.exists(
            f"{mem}/memory.limit_in_bytes") else f"{mem}/memory.max") == "67108864"
        (eth0,) = _ip_json("addr", "show", "dev", "eth0", netns_of=app)
        ip = eth0["addr_info"][0]["local"]
        ping = subprocess.run(["/bin/busybox", "ping", "-c", "1", "-W", "3", ip],
                              capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        r = subprocess.run(["bash", "-c", cleanup], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(state)
    for pid in (sandbox, app, side):
        assert not os.path.exists(f"/proc/{pid}") or " Z" in _read(f"/proc/{pid}/stat")
    # The rest (links, cgroups, mounts, processes under this test's root) is the mp fixture's
    # check that the host is as it was.
