"""hostNetwork, hostPID, hostIPC; the sandbox's own PID namespace; each container's cgroup
namespace and /sys/fs/cgroup; the pod's netns under a name `ip netns` knows. Observed as a
user would: namespace inodes, /proc inside, `ip link`, files under /sys/fs/cgroup."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid

import pytest

from minipod.cgroups import fs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

POD = """
apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  EXTRA
  containers:
  - name: app
    image: busybox
    command: [sleep, "3600"]
    resources: {limits: {memory: 64Mi}}
    SECURITY
"""


def run(mp, name: str, extra: str = "", privileged: bool = False) -> dict:
    text = POD.replace("NAME", name).replace("EXTRA", extra or "restartPolicy: Never")
    text = text.replace("SECURITY", "securityContext: {privileged: true}" if privileged else "")
    mp.minipod("run", "-d", mp.write(f"{name}.yaml", text))
    return mp.inspect(name)


def sh(mp, pod: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    return mp.minipod("exec", pod, "--", "sh", "-c", script, check=check)


def ino(pid, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def nspid(pid: int) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("NSpid:"))
    return [int(x) for x in line.split()[1:]]


# --- the sandbox's PID namespace ----------------------------------------------------------------

@pytest.mark.parametrize("share", [False, True], ids=["own", "shared"])
def test_pause_is_pid_1_of_the_sandboxs_own_pid_namespace(mp, share):
    info = run(mp, "pidns", "shareProcessNamespace: true" if share else "")
    pause, app = info["sandbox"]["pid"], info["containers"][0]["pid"]
    assert ino(pause, "pid") != ino("self", "pid")
    assert info["sandbox"]["namespaces"]["pid"] == ino(pause, "pid")  # inspect shows it
    assert nspid(pause)[-1] == 1  # PID 1 there, as containerd's sandbox
    assert info["sandbox"]["hostNamespaces"] == []
    if share:
        assert ino(app, "pid") == ino(pause, "pid")
        assert "pause" in sh(mp, "pidns", "cat /proc/1/cmdline").stdout
    else:
        assert ino(app, "pid") not in (ino(pause, "pid"), ino("self", "pid"))
    mp.minipod("rm", "-f", "pidns")


# --- hostPID --------------------------------------------------------------------------------------

def test_a_host_pid_pod_sees_the_nodes_processes(mp):
    # (with shareProcessNamespace it is refused, as by the API server: tests/unit/test_spec.py)
    info = run(mp, "hpid", "hostPID: true")
    pause, app = info["sandbox"]["pid"], info["containers"][0]["pid"]
    assert ino(pause, "pid") == ino(app, "pid") == ino("self", "pid")
    assert info["sandbox"]["hostNamespaces"] == ["pid"]
    assert str(os.getpid()) in sh(mp, "hpid", "ls /proc").stdout.split()
    mp.minipod("rm", "-f", "hpid")


def test_a_privileged_host_pid_pod_can_nsenter_into_the_nodes_namespaces(mp):
    run(mp, "enter", "hostPID: true\n  hostNetwork: true\n  hostIPC: true", privileged=True)
    # A process of the node's (PID 1 itself may refuse ptrace access, as on some CI hosts):
    # nsenter runs the node's readlink, in the node's mount namespace.
    node = subprocess.Popen(["sleep", "120"])
    try:
        out = sh(mp, "enter", f"nsenter -t {node.pid} -m -u -n -i -- sh -c "
                              "'for k in mnt uts net ipc; do readlink /proc/$$/ns/$k; done; "
                              f"cat {mp.config}'")
    finally:
        node.kill()
        node.wait()
    lines = out.stdout.splitlines()
    assert lines[:4] == [os.readlink(f"/proc/self/ns/{k}") for k in ("mnt", "uts", "net", "ipc")]
    with open(mp.config) as f:  # a file only the node's filesystem has
        assert "\n".join(lines[4:]) + "\n" == f.read()
    mp.minipod("rm", "-f", "enter")


# --- hostNetwork ------------------------------------------------------------------------------

@pytest.fixture
def dummy_link():
    """A link of the node's with a unique name (a veth pair: not every kernel has dummy)."""
    name = "mpd" + uuid.uuid4().hex[:10]
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", "mpe" + name[3:]],
                   check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=True)


def test_a_host_network_pod_sees_the_nodes_links_and_gets_no_veth_nor_lease(mp, dummy_link):
    node_hostname = socket.gethostname()
    info = run(mp, "hnet", "hostNetwork: true")
    pause = info["sandbox"]["pid"]
    for kind in ("net", "uts"):  # hostNetwork takes the node's UTS namespace too (containerd)
        assert ino(pause, kind) == ino(info["containers"][0]["pid"], kind) == ino("self", kind)
    assert dummy_link in sh(mp, "hnet", "ip link").stdout
    from minipod.net import node_ip

    assert info["network"]["ip"] == node_ip() == mp.pod("hnet")["status"]["podIP"]
    assert info["network"]["hostVeth"] == "" and info["sandbox"]["netns"] == ""
    leases = os.path.join(mp.root, "networks", mp.bridge)
    assert not os.path.isdir(leases) or not [f for f in os.listdir(leases) if f[0].isdigit()]
    assert mp.bridge not in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                           text=True).stdout
    assert sh(mp, "hnet", "hostname").stdout.strip() == node_hostname
    assert socket.gethostname() == node_hostname  # and the node's was not changed
    hosts = sh(mp, "hnet", "cat /etc/hosts").stdout
    with open("/etc/hosts") as f:
        assert hosts == "# Kubernetes-managed hosts file (host network).\n" + f.read()
    mp.minipod("rm", "-f", "hnet")


# --- hostIPC --------------------------------------------------------------------------------------

def test_a_host_ipc_pod_shares_the_nodes_ipc_namespace(mp):
    info = run(mp, "hipc", "hostIPC: true")
    assert ino(info["containers"][0]["pid"], "ipc") == ino("self", "ipc")
    assert ino(info["containers"][0]["pid"], "net") != ino("self", "net")
    assert info["sandbox"]["hostNamespaces"] == ["ipc"]
    shm = f"/dev/shm/mpt-{uuid.uuid4().hex}"  # and the node's /dev/shm, as containerd gives
    with open(shm, "w") as f:
        f.write("node")
    try:
        assert sh(mp, "hipc", f"cat {shm}").stdout == "node"
    finally:
        os.unlink(shm)
    other = run(mp, "oipc")
    assert ino(other["containers"][0]["pid"], "ipc") != ino("self", "ipc")
    mp.minipod("rm", "-f", "hipc")
    mp.minipod("rm", "-f", "oipc")


# --- the container's cgroup namespace ---------------------------------------------------------

V2 = fs.is_unified("/sys/fs/cgroup")
LIMIT = "/sys/fs/cgroup/memory.max" if V2 else "/sys/fs/cgroup/memory/memory.limit_in_bytes"


@pytest.mark.parametrize("privileged", [False, True], ids=["default", "privileged"])
def test_a_container_sees_its_own_cgroup_read_only_unless_privileged(mp, privileged):
    info = run(mp, "cgns", privileged=privileged)
    app = info["containers"][0]["pid"]
    assert ino(app, "cgroup") != ino("self", "cgroup")
    # What the container's own processes see (its mount, through /proc/PID/root)...
    with open(f"/proc/{app}/root{LIMIT}") as f:
        assert f.read().strip() == "67108864"
    # ...and what `minipod exec` sees; and the exec did not lift the limit (on systemd, an
    # exec that set the scope's properties to its defaults made it MemoryMax=infinity).
    assert sh(mp, "cgns", f"cat {LIMIT}").stdout.strip() == "67108864"
    with open(f"/proc/{app}/root{LIMIT}") as f:
        assert f.read().strip() == "67108864"
    lines = sh(mp, "cgns", "cat /proc/self/cgroup").stdout.splitlines()
    if V2:
        assert lines == ["0::/"]
    else:  # every hierarchy's root is where the container was at unshare
        assert lines and all(ln.endswith(":/") for ln in lines)
    # A child cgroup of its own (writing its own limit: v2's nsdelegate refuses that to any
    # namespace, whatever the mount).
    child = "/sys/fs/cgroup" + ("" if V2 else "/memory") + "/mpt-child"
    made = sh(mp, "cgns", f"mkdir {child} && rmdir {child}", check=False)
    if privileged:
        assert made.returncode == 0, made.stderr
    else:
        assert made.returncode != 0 and "Read-only file system" in made.stderr
        write = sh(mp, "cgns", f"echo 67108864 > {LIMIT}", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr
    mp.minipod("rm", "-f", "cgns")


# --- the pod's netns under a name ----------------------------------------------------------

def ip_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [ln.split()[0] for ln in out.stdout.splitlines() if ln.strip()]


def test_the_pods_netns_has_a_name_while_the_pod_runs(mp):
    info = run(mp, "named")
    name = os.path.basename(info["sandbox"]["netns"])
    assert name.startswith(mp.cgroup_parent.removesuffix(".slice") + "-named-")
    assert name in ip_netns()
    who = subprocess.run(["ip", "netns", "identify", str(info["containers"][0]["pid"])],
                         capture_output=True, text=True, check=True).stdout.split()
    assert who == [name]
    mp.minipod("rm", "-f", "named")
    assert name not in ip_netns()
    assert not os.path.exists(f"/run/netns/{name}")


def test_rm_f_removes_the_netns_name_of_a_pod_without_its_plan(mp):
    import signal

    info = run(mp, "lost")
    name = os.path.basename(info["sandbox"]["netns"])
    os.unlink(os.path.join(mp.root, "pods", "lost", "plan.json"))  # a damaged record
    # Nobody left to tear the pod down with what it knew: only `rm -f`, from what remains.
    for pid in (info["supervisor"]["janitorPid"], info["supervisor"]["pid"]):
        if pid:
            os.kill(pid, signal.SIGKILL)
    mp.wait(lambda: mp.minipod("ps").stdout and not os.path.exists(
        f"/proc/{info['supervisor']['pid']}/cmdline"), what="the supervisor's end")
    assert name in ip_netns()  # the pin outlives every process of the pod
    mp.minipod("rm", "-f", "lost")
    assert name not in ip_netns()


def test_another_pods_sandbox_does_not_keep_a_removed_pods_netns(mp):
    first = run(mp, "first")
    name = first["sandbox"]["netns"]
    second = run(mp, "second")  # its sandbox's mount namespace began as a copy of the host's
    with open(f"/proc/{second['sandbox']['pid']}/mountinfo") as f:
        held = name in f.read()
    assert not held  # (also the copy a shared /run hides under /run/netns: test_netns_pins)
    mp.minipod("rm", "-f", "first")
    mp.minipod("rm", "-f", "second")


def test_a_host_pid_containers_processes_end_with_it(mp):
    text = POD.replace("NAME", "left").replace("EXTRA", "hostPID: true\n  restartPolicy: Never")
    text = text.replace('command: [sleep, "3600"]',
                        "command: [sh, -c, 'sleep 1000 & echo $!; sleep 1']").replace("SECURITY", "")
    mp.minipod("run", "-d", mp.write("left.yaml", text))
    logs = mp.wait(lambda: mp.minipod("logs", "left", check=False).stdout.strip(),
                   what="the background sleep's PID")
    pid = int(logs)  # the node's PID: hostPID
    mp.wait(lambda: mp.pod("left")["status"]["phase"] == "Succeeded", what="the container's end")
    mp.wait(lambda: not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read()
            .rsplit(")", 1)[1].split()[0], what="its background process's end")
    mp.minipod("rm", "-f", "left")
