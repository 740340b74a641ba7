"""The pinned sandbox (`sandbox: pinned`, pod/pinned.py): a pod whose net, ipc and uts
namespaces are held by bind mounts under the runtime root, as CRI-O's pinns holds them, with no
pause process. Observed as a user would: the processes and cgroups of the pod, the inodes of the
containers' namespaces against those of the pin files, HTTP over the pod IP, a restart, and the
host after `rm`, after a SIGKILL of the supervisor and after a failed set-up (the `mp` fixture
also compares the host's mounts, links, netns names, cgroups and processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import reap_orphans

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

WEB = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{minipod.io/sandbox: {mode}}}
spec:
  terminationGracePeriodSeconds: 1
  {extra}
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      mkdir -p /www && echo "hello from $HOSTNAME" > /www/index.html
      exec httpd -f -p 80 -h /www
  - name: shell
    image: busybox
    command: ["sleep", "3600"]
"""


def run(mp, name: str, mode: str = "pinned", extra: str = "") -> dict:
    mp.minipod("run", "-d", mp.write(f"{name}.yaml", WEB.format(name=name, mode=mode,
                                                                 extra=extra)))
    return mp.inspect(name)


def ino(path: str) -> int:
    return os.stat(path).st_ino


def ns_ino(pid: int, kind: str) -> int:
    return ino(f"/proc/{pid}/ns/{kind}")


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def _try(fn):
    try:
        return fn()
    except (OSError, AssertionError):
        return None


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def pod_processes(info: dict) -> list[int]:
    """Every process in the pod's cgroup tree, found from /proc/PID/cgroup."""
    group = "/" + info["cgroups"]["pod"].strip("/")
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cgroup") as f:
                paths = {ln.rstrip("\n").split(":", 2)[2] for ln in f if ln.count(":") >= 2}
        except OSError:
            continue
        if any(p == group or p.startswith(group + "/") for p in paths):
            out.append(int(d))
    return out


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(path)]


def ip_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [ln.split()[0] for ln in out.stdout.splitlines() if ln.strip()]


def restarted(mp, name: str, container: str, old: int) -> dict | None:
    c = next(c for c in mp.inspect(name)["containers"] if c["name"] == container)
    return c if c["pid"] and c["pid"] != old and c["state"] == "running" else None


def test_a_pinned_pod_has_no_pause_and_its_containers_share_the_pinned_namespaces(mp):
    info = run(mp, "pin", extra="securityContext:\n    sysctls:\n"
                                "    - {name: net.ipv4.ip_unprivileged_port_start, value: '81'}")
    sb = info["sandbox"]
    assert sb["mode"] == "pinned" and sb["pid"] == 0 and sb["pause"] == {}
    pin_dir = os.path.join(mp.root, "sandboxes", "pin")
    assert sb["pinDir"] == pin_dir
    assert sb["pins"] == {t: os.path.join(pin_dir, t) for t in ("net", "uts", "ipc")}
    pids = {c["name"]: c["pid"] for c in info["containers"]}

    # No pause: the pod's cgroups hold the two containers' processes and nothing else.
    procs = pod_processes(info)
    assert sorted(procs) == sorted(pids.values()), [(p, comm(p)) for p in procs]
    assert "pause" not in {comm(p) for p in procs}
    tree = json.loads(mp.minipod("tree", "pin", "-o", "json").stdout)
    assert tree["sandboxMode"] == "pinned"

    def roles(n):
        return [n["role"]] + [r for k in n["children"] for r in roles(k)]
    assert "sandbox" not in roles(tree["processes"])

    # The containers' net/ipc/uts are the namespaces the bind mounts hold (os.stat of the
    # mount's target is the namespace's inode), not the host's; pid/mnt are their own.
    for kind in ("net", "ipc", "uts"):
        pinned = ino(sb["pins"][kind])
        assert sb["namespaces"][kind] == pinned
        assert ns_ino(pids["web"], kind) == ns_ino(pids["shell"], kind) == pinned
        assert pinned != ns_ino(os.getpid(), kind)
    for kind in ("pid", "mnt"):
        assert len({ns_ino(pids["web"], kind), ns_ino(pids["shell"], kind),
                    ns_ino(os.getpid(), kind)}) == 3, kind
    # What findmnt shows: the directory, unbindable, with three nsfs pins and a tmpfs in it.
    out = subprocess.run(["findmnt", "-J", "-R", "-o", "TARGET,FSTYPE,PROPAGATION", pin_dir],
                         capture_output=True, text=True, check=True).stdout
    top = json.loads(out)["filesystems"][0]
    assert top["target"] == pin_dir and "unbindable" in top["propagation"]
    assert sorted((c["target"], c["fstype"]) for c in top["children"]) == sorted(
        [(sb["pins"][t], "nsfs") for t in ("net", "uts", "ipc")]
        + [(os.path.join(pin_dir, "shm"), "tmpfs")])

    # What the pinning child set in the new namespaces: the hostname, the sysctl.
    assert mp.minipod("exec", "pin", "-c", "shell", "--", "hostname").stdout == "pin\n"
    assert mp.minipod("exec", "pin", "-c", "shell", "--", "cat",
                      "/proc/sys/net/ipv4/ip_unprivileged_port_start").stdout == "81\n"
    # The pod's /dev/shm is the pinned sandbox's tmpfs, the same in both containers.
    mp.minipod("exec", "pin", "-c", "shell", "--", "sh", "-c", "echo hi > /dev/shm/x")
    assert mp.minipod("exec", "pin", "-c", "web", "--", "cat", "/dev/shm/x").stdout == "hi\n"
    assert os.listdir(os.path.join(pin_dir, "shm")) == ["x"]

    # The netns has its name for `ip netns`, and the pod its IP.
    name = os.path.basename(sb["netns"])
    assert name in ip_netns()
    who = subprocess.run(["ip", "netns", "identify", str(pids["web"])],
                         capture_output=True, text=True, check=True).stdout.split()
    assert who == [name]
    ip = mp.pod("pin")["status"]["podIP"]
    assert mp.wait(lambda: _try(lambda: http_get(f"http://{ip}/")), what="httpd") == \
        "hello from pin\n"

    # Mark the netns (an address on its lo, entered through the pin: no process to nsenter
    # by PID), kill the web container: restarted in the same netns (the mark is there, not
    # just an equal inode number), with the same IP, and still no pause.
    subprocess.run(["nsenter", f"--net={sb['pins']['net']}", "ip", "addr", "add",
                    "192.0.2.77/32", "dev", "lo"], check=True)
    os.kill(pids["web"], signal.SIGKILL)
    new = mp.wait(lambda: restarted(mp, "pin", "web", pids["web"]), what="the restart")
    assert new["restartCount"] == 1
    assert ns_ino(new["pid"], "net") == ino(sb["pins"]["net"])
    assert "192.0.2.77" in mp.minipod("exec", "pin", "-c", "web", "--", "ip", "-o", "addr",
                                      "show", "dev", "lo").stdout
    assert mp.pod("pin")["status"]["podIP"] == ip
    assert mp.wait(lambda: _try(lambda: http_get(f"http://{ip}/")), what="httpd again")
    assert "pause" not in {comm(p) for p in pod_processes(info)}

    # rm: no mount left (the pins, the directory, /dev/shm), no netns name, no veth.
    mp.minipod("rm", "-f", "pin")
    assert mounts_under(pin_dir) == []
    assert not os.path.exists(pin_dir)
    assert name not in ip_netns()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert info["network"]["hostVeth"] not in links


def test_the_config_key_makes_every_pod_pinned_and_the_annotation_overrides_it(mp):
    mp.write_config(sandbox="pinned")
    text = WEB.replace("  annotations: {{minipod.io/sandbox: {mode}}}\n", "")
    mp.minipod("run", "-d", mp.write("a.yaml", text.format(name="a", mode="", extra="")))
    a = mp.inspect("a")
    assert a["sandbox"]["mode"] == "pinned" and a["sandbox"]["pid"] == 0
    b = run(mp, "b", mode="pause")
    assert b["sandbox"]["mode"] == "pause" and comm(b["sandbox"]["pid"]) == "pause"
    # The pause pod's mount namespace began as a copy of the host's, pins included: its
    # sandbox detached them, so it keeps nothing of pod a alive.
    with open(f"/proc/{b['sandbox']['pid']}/mountinfo") as f:
        assert os.path.join(mp.root, "sandboxes") not in f.read()
    # ns shows the pins where it shows pause for a pause pod.
    rows = json.loads(mp.minipod("ns", "a", "b", "-o", "json").stdout)["processes"]
    by = {(r["pod"], r["container"]): r for r in rows}
    assert by[("a", "(pinned)")]["namespaces"]["net"]["inode"] == \
        ino(a["sandbox"]["pins"]["net"])
    assert by[("a", "web")]["namespaces"]["net"]["sharing"] == "pinned"
    assert by[("b", "web")]["namespaces"]["net"]["sharing"] == "shared-with-pause"
    assert ("a", "(sandbox)") not in by
    mp.minipod("rm", "-f", "a")
    mp.minipod("rm", "-f", "b")


def test_an_unknown_sandbox_mode_is_refused_before_anything_is_made(mp):
    before = mp.host_state()
    p = mp.minipod("run", "-d", mp.write("x.yaml", WEB.format(name="x", mode="pinns", extra="")),
                   check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert "metadata.annotations[minipod.io/sandbox]: unknown sandbox mode 'pinns'" in p.stderr
    assert mp.host_state() == before


def test_a_killed_supervisor_leaves_no_pin(mp):
    info = run(mp, "k")
    pin_dir = info["sandbox"]["pinDir"]
    assert mounts_under(pin_dir)
    os.kill(info["supervisor"]["pid"], signal.SIGKILL)
    mp.wait(lambda: mp.pod("k")["status"]["phase"] == "Failed", what="the janitor")
    assert mounts_under(pin_dir) == [] and not os.path.exists(pin_dir)
    assert os.path.basename(info["sandbox"]["netns"]) not in ip_netns()
    mp.minipod("rm", "k")


def test_rm_f_unpins_a_pod_whose_plan_and_processes_are_gone(mp):
    info = run(mp, "lost")
    os.unlink(os.path.join(mp.root, "pods", "lost", "plan.json"))
    for pid in (info["supervisor"]["janitorPid"], info["supervisor"]["pid"]):
        if pid:
            os.kill(pid, signal.SIGKILL)
    # They die with their supervisor (PR_SET_PDEATHSIG); we reap what is reparented to us.
    for pid in [info["supervisor"]["pid"]] + [c["pid"] for c in info["containers"]]:
        mp.wait(lambda: (reap_orphans(), not os.path.exists(f"/proc/{pid}"))[1],
                what=f"the end of {pid}")
    assert mounts_under(info["sandbox"]["pinDir"])  # the pins outlive every process
    mp.minipod("rm", "-f", "lost")
    assert mounts_under(info["sandbox"]["pinDir"]) == []


@pytest.mark.parametrize("step", ["sandbox", "network", "prepare:web"])
def test_a_failed_set_up_after_pinning_leaves_nothing(mp, step):
    before = mp.host_state()
    env = mp.env
    mp.env = dict(env, MINIPOD_TEST_FAIL_AFTER=step)
    try:
        p = mp.minipod("run", "-d", mp.write("f.yaml", WEB.format(name="f", mode="pinned",
                                                                   extra="")), check=False)
    finally:
        mp.env = env
    assert p.returncode == 1 and p.stderr.endswith(f"injected failure after {step}\n"), p.stderr
    assert mp.host_state() == before
    assert not os.path.exists(os.path.join(mp.root, "sandboxes", "f"))


def test_share_process_namespace_keeps_pause_for_the_pid_namespace_only(mp):
    info = run(mp, "sh", extra="shareProcessNamespace: true")
    sb = info["sandbox"]
    pause = sb["pid"]
    assert pause and comm(pause) == "pause" and "shareProcessNamespace" in sb["pauseFor"]
    pids = {c["name"]: c["pid"] for c in info["containers"]}
    # pause is PID 1 of the pod's PID namespace, in the pinned net/ipc/uts.
    ps = mp.minipod("exec", "sh", "-c", "shell", "--", "ps", "-o", "pid,args").stdout
    assert any(ln.split()[:1] == ["1"] and "pause" in ln for ln in ps.splitlines()), ps
    for kind in ("net", "ipc", "uts"):
        assert ns_ino(pause, kind) == ino(sb["pins"][kind]) == ns_ino(pids["web"], kind)
    assert ns_ino(pause, "pid") == ns_ino(pids["web"], "pid") == ns_ino(pids["shell"], "pid")
    # A dead pause is a dead PID namespace: a new sandbox (new pins, a new netns), as in
    # pause mode.
    subprocess.run(["nsenter", f"--net={sb['pins']['net']}", "ip", "addr", "add",
                    "192.0.2.78/32", "dev", "lo"], check=True)
    os.kill(pause, signal.SIGKILL)
    again = mp.wait(lambda: _try(lambda: (i := mp.inspect("sh"))["sandbox"]["pid"] not in (
        0, pause) and i["status"] == "Running" and i), timeout=30, what="a new sandbox")
    assert "192.0.2.78" not in mp.minipod("exec", "sh", "-c", "shell", "--", "ip", "-o",
                                          "addr", "show", "dev", "lo").stdout
    assert ns_ino(again["sandbox"]["pid"], "net") == ino(again["sandbox"]["pins"]["net"])
    mp.minipod("rm", "-f", "sh")


SLEEP = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{minipod.io/sandbox: pinned}}
spec:
  terminationGracePeriodSeconds: 1
  {extra}
  containers:
  - name: shell
    image: busybox
    command: ["sleep", "3600"]
"""


def test_host_namespaces_are_not_pinned(mp):
    """No httpd here: a hostNetwork pod's port 80 would be the node's."""
    def run_sleep(name: str, extra: str) -> dict:
        mp.minipod("run", "-d", mp.write(f"{name}.yaml", SLEEP.format(name=name, extra=extra)))
        return mp.inspect(name)

    net = run_sleep("hn", "hostNetwork: true")
    # hostNetwork takes the node's net and uts: only ipc is pinned, and no netns is named.
    assert net["sandbox"]["pins"] == {"ipc": os.path.join(mp.root, "sandboxes", "hn", "ipc")}
    assert net["sandbox"]["netns"] == ""
    pid = net["containers"][0]["pid"]
    assert ns_ino(pid, "net") == ns_ino(os.getpid(), "net")
    assert ns_ino(pid, "ipc") == ino(net["sandbox"]["pins"]["ipc"]) != ns_ino(os.getpid(), "ipc")
    both = run_sleep("hb", "hostNetwork: true\n  hostIPC: true")
    # Nothing left to pin: no directory, no mount, and still no pause.
    assert both["sandbox"]["pins"] == {} and both["sandbox"]["pid"] == 0
    assert mounts_under(os.path.join(mp.root, "sandboxes", "hb")) == []
    pid = both["containers"][0]["pid"]
    assert all(ns_ino(pid, k) == ns_ino(os.getpid(), k) for k in ("net", "ipc", "uts"))
    assert mp.minipod("exec", "hb", "--", "true").returncode == 0
    mp.minipod("rm", "-f", "hn")
    mp.minipod("rm", "-f", "hb")


def test_port_forward_enters_the_pinned_netns(mp):
    import socket

    info = run(mp, "pf")
    ip = mp.pod("pf")["status"]["podIP"]
    mp.wait(lambda: _try(lambda: http_get(f"http://{ip}/")), what="httpd")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    pf = subprocess.Popen([sys.executable, "-m", "minipod", "port-forward", "pf",
                           f"{local}:80"], env=mp.env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        assert pf.stdout.readline() == f"Forwarding from 127.0.0.1:{local} -> 80\n"
        assert http_get(f"http://127.0.0.1:{local}/") == "hello from pf\n"
    finally:
        pf.send_signal(signal.SIGINT)
        pf.wait(10)
        pf.stdout.close()
        pf.stderr.close()
    assert info["sandbox"]["pid"] == 0
    mp.minipod("rm", "-f", "pf")


def test_run_explain_shows_the_pinning_steps(mp):
    path = mp.write("e.yaml", WEB.format(name="e", mode="pinned", extra=""))
    out = mp.minipod("run", "-d", "--explain", "-o", "json", path).stdout
    recs = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    shells = [r.get("shell", "") for r in recs if r.get("stage") == "sandbox"]
    pin_dir = os.path.join(mp.root, "sandboxes", "e")
    assert any(s.startswith("unshare --net") and "--ipc" in s and "--uts" in s for s in shells)
    for t in ("net", "ipc", "uts"):
        assert any(f"mount --bind /proc/" in s and s.endswith(f"/ns/{t} {pin_dir}/{t}")
                   for s in shells), (t, shells)
    assert not any("pause" in r.get("what", "") for r in recs), "no pause in pinned mode"
    assert any(f"nsenter --ipc={pin_dir}/ipc" in r.get("shell", "") for r in recs)
    mp.minipod("rm", "-f", "e")
