"""hostPort and port-forward against real pods: HTTP from the host to a busybox httpd through
127.0.0.1:HOSTPORT, through the host's own non-loopback address and through port-forward; the
iptables rules there while the pod runs and gone after rm; a taken port refused with nothing
created; UDP. All traffic stays on this host (loopback, its own address, our pods' netns)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

WEB = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      mkdir -p /www && echo "hello from $HOSTNAME" > /www/index.html
      exec httpd -f -p 80 -h /www
    ports:
    - {{containerPort: 80, {ports}}}
"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing on the host uses now, for both TCP and UDP (the kernel's pick)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, other) as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue


def host_address() -> str:
    """An address of this host that is not a loopback one (nor one of a test bridge)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        words = line.split()
        if not words[1].startswith(("mpt", "minipod")):
            return words[3].split("/")[0]
    pytest.skip("this host has no non-loopback IPv4 address")


def get(host: str, port: int, timeout: float = 5) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=timeout) as r:
        return r.read().decode()


def get_eventually(mp, host: str, port: int) -> str:
    """httpd listens a moment after its container starts."""
    def attempt():
        try:
            return get(host, port, timeout=2)
        except OSError:
            return None
    return mp.wait(attempt, 20, f"HTTP on {host}:{port}")


def iptables() -> list[str]:
    out = ""
    for table in ("nat", "filter"):
        out += subprocess.run(["iptables-save", "-t", table], capture_output=True,
                              text=True).stdout
    return [ln for ln in out.splitlines() if ln.startswith(("-", ":MP-"))]


def ours(mp) -> list[str]:
    return sorted(ln.split(" - [")[0] for ln in iptables() if mp.bridge in ln)


def test_hostport_tcp_from_loopback_and_host_address(mp):
    port = free_port()
    before = ours(mp)
    mp.minipod("run", "-d", mp.write("web.yaml", WEB.format(name="web", ports=f"hostPort: {port}")))
    assert get_eventually(mp, "127.0.0.1", port) == "hello from web\n"
    assert get(host_address(), port) == "hello from web\n"
    ip = mp.pod("web")["status"]["podIP"]
    rules = ours(mp)
    dnat = [r for r in rules if "DNAT" in r and f"--dport {port}" in r]
    assert len(dnat) == 1 and f"--to-destination {ip}:80" in dnat[0], rules
    for chain in ("MP-HP-", "MP-HPM-", "MP-HPF-", "MP-HPI-"):
        assert f":{chain}{mp.bridge}" in rules
    with open(f"/proc/sys/net/ipv4/conf/{mp.bridge}/route_localnet") as f:
        assert f.read().strip() == "1"
    mp.minipod("rm", "-f", "web")
    assert ours(mp) == before  # nothing of ours is left (no bridge either)
    with pytest.raises(OSError):
        get("127.0.0.1", port, timeout=2)


def test_hostport_rules_stay_with_another_pod_and_go_with_the_last(mp):
    p1, p2 = free_port(), free_port()
    mp.minipod("run", "-d", mp.write("a.yaml", WEB.format(name="a", ports=f"hostPort: {p1}")))
    mp.minipod("run", "-d", mp.write("b.yaml", WEB.format(name="b", ports=f"hostPort: {p2}")))
    assert get_eventually(mp, "127.0.0.1", p1) == "hello from a\n"
    assert get_eventually(mp, "127.0.0.1", p2) == "hello from b\n"
    mp.minipod("stop", "a")  # a stopped pod holds no port: its rule goes, b's stays
    assert not [r for r in ours(mp) if f"--dport {p1}" in r]
    assert get("127.0.0.1", p2) == "hello from b\n"
    mp.minipod("rm", "a")
    mp.minipod("rm", "-f", "b")
    assert ours(mp) == []


def test_a_taken_hostport_is_refused_before_anything_is_created(mp):
    port = free_port()
    mp.minipod("run", "-d", mp.write("a.yaml", WEB.format(name="a", ports=f"hostPort: {port}")))
    state = mp.host_state()
    rules = ours(mp)
    # the same port on one address is taken too: 0.0.0.0 covers every address
    second = WEB.format(name="b", ports=f"hostPort: {port}, hostIP: 127.0.0.1")
    r = mp.minipod("run", "-d", mp.write("b.yaml", second), check=False)
    assert r.returncode == 1
    assert r.stderr == (f'error: pod "b": spec.containers[0].ports[0].hostPort: {port}/TCP on '
                        f"127.0.0.1 is taken by pod 'a' (its {port}/TCP)\n")
    assert mp.host_state() == state and ours(mp) == rules
    assert not os.path.exists(os.path.join(mp.root, "pods", "b"))
    # UDP is another port: that one is free
    udp = WEB.format(name="c", ports=f"hostPort: {port}, protocol: UDP")
    mp.minipod("run", "-d", mp.write("c.yaml", udp))
    mp.minipod("rm", "-f", "a", "c")
    # and once a is gone its port is free again
    mp.minipod("run", "-d", mp.write("b.yaml", second))
    assert get_eventually(mp, "127.0.0.1", port) == "hello from b\n"


def test_a_hostip_that_is_not_ours_is_refused(mp):
    port = free_port()
    doc = WEB.format(name="x", ports=f"hostPort: {port}, hostIP: 192.0.2.7")
    r = mp.minipod("run", "-d", mp.write("x.yaml", doc), check=False)
    assert r.returncode == 1
    assert r.stderr == ('error: pod "x": spec.containers[0].ports[0].hostIP: 192.0.2.7 is not '
                        "an address of this host\n")


def test_hostip_limits_the_port_to_that_address(mp):
    port = free_port()
    doc = WEB.format(name="w", ports=f"hostPort: {port}, hostIP: 127.0.0.1")
    mp.minipod("run", "-d", mp.write("w.yaml", doc))
    assert get_eventually(mp, "127.0.0.1", port) == "hello from w\n"
    with pytest.raises(OSError):
        get(host_address(), port, timeout=2)  # nothing listens there: refused


UDP = """
apiVersion: v1
kind: Pod
metadata:
  name: udp
spec:
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
    ports:
    - {{containerPort: 5353, hostPort: {port}, protocol: UDP}}
"""

# busybox here has no UDP server (its nc has no -u): the test runs one in the pod's network
# namespace itself, which is all a hostPort cares about.
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(100)
    s.sendto(b"got " + data, peer)
"""


def test_hostport_udp(mp):
    port = free_port(socket.SOCK_DGRAM)
    mp.minipod("run", "-d", mp.write("udp.yaml", UDP.format(port=port)))
    assert [r for r in ours(mp) if f"-p udp -m udp --dport {port}" in r]
    pause = mp.inspect("udp")["sandbox"]["pid"]
    echo = subprocess.Popen(["nsenter", f"--net=/proc/{pause}/ns/net", sys.executable, "-c", ECHO],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout.readline() == "ready\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b"ping", ("127.0.0.1", port))
            assert s.recv(100) == b"got ping"
            s.sendto(b"pong", (host_address(), port))
            assert s.recv(100) == b"got pong"
    finally:
        echo.kill()
        echo.wait()
    mp.minipod("rm", "-f", "udp")
    assert ours(mp) == []


def records(mp) -> list[str]:
    d = os.path.join(mp.root, "hostports")
    return sorted(f for f in os.listdir(d) if f.endswith(".json")) if os.path.isdir(d) else []


def test_rm_f_frees_the_ports_of_a_pod_whose_supervisor_and_record_are_gone(mp):
    port = free_port()
    mp.minipod("run", "-d", mp.write("w.yaml", WEB.format(name="w", ports=f"hostPort: {port}")))
    assert get_eventually(mp, "127.0.0.1", port) == "hello from w\n"
    assert len(records(mp)) == 1
    info = mp.inspect("w")
    sup, jan = info["supervisor"]["pid"], info["supervisor"]["janitorPid"]
    # Nobody left to tear the pod down (the janitor would), and no plan that names its uid.
    os.kill(sup, signal.SIGSTOP)
    os.kill(jan, signal.SIGKILL)
    os.kill(sup, signal.SIGKILL)
    mp.wait(lambda: not os.path.exists(f"/proc/{sup}/stat") or
            open(f"/proc/{sup}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", 10,
            "the supervisor's death")
    os.unlink(os.path.join(mp.root, "pods", "w", "plan.json"))
    assert [r for r in ours(mp) if f"--dport {port}" in r]  # the rules outlived them
    mp.minipod("rm", "-f", "w")
    assert ours(mp) == [] and records(mp) == []
    # and the port can be had again
    mp.minipod("run", "-d", mp.write("v.yaml", WEB.format(name="v", ports=f"hostPort: {port}")))
    assert get_eventually(mp, "127.0.0.1", port) == "hello from v\n"


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError):
                pass
    return out


def port_forward(mp, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "minipod", "port-forward", *args],
                            env=mp.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_port_forward_many_connections_then_ctrl_c_leaves_nothing(mp):
    mp.minipod("run", "-d", mp.write("web.yaml", WEB.format(name="web", ports="name: http")))
    # the pod's httpd answers on its IP first (port-forward itself does not wait for it)
    ip = mp.pod("web")["status"]["podIP"]
    get_eventually(mp, ip, 80)
    local = free_port()
    pf = port_forward(mp, "web", f"{local}:http")
    try:
        assert pf.stdout.readline() == f"Forwarding from 127.0.0.1:{local} -> 80\n"
        assert pf.stdout.readline() == f"Forwarding from [::1]:{local} -> 80\n"
        helpers = children(pf.pid)
        assert len(helpers) == 1  # the one process in the pod's netns that makes sockets
        assert os.readlink(f"/proc/{helpers[0]}/ns/net") == \
            os.readlink(f"/proc/{mp.inspect('web')['sandbox']['pid']}/ns/net")
        results: list[str] = []

        def fetch():
            results.append(get("127.0.0.1", local, timeout=20))
        threads = [threading.Thread(target=fetch) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == ["hello from web\n"] * 40
        assert get("::1", local) == "hello from web\n"
        # a raw connection held open while others come and go
        with socket.create_connection(("127.0.0.1", local), timeout=10) as held:
            assert get("127.0.0.1", local) == "hello from web\n"
            held.sendall(b"GET / HTTP/1.0\r\n\r\n")
            held.shutdown(socket.SHUT_WR)  # the half-close reaches httpd, which answers
            reply = b""
            while chunk := held.recv(4096):
                reply += chunk
            assert reply.startswith(b"HTTP/1.") and reply.endswith(b"hello from web\n")
        pf.send_signal(signal.SIGINT)
        assert pf.wait(10) == 0
        lines = pf.stdout.read().splitlines()
        assert lines == [f"Handling connection for {local}"] * len(lines) and len(lines) == 43
        assert pf.stderr.read() == ""
    finally:
        if pf.poll() is None:
            pf.kill()
            pf.wait()
    for h in helpers:
        assert not os.path.exists(f"/proc/{h}"), "the netns helper outlived port-forward"
    with pytest.raises(OSError):
        get("127.0.0.1", local, timeout=2)


def test_port_forward_errors(mp):
    mp.minipod("run", "-d", mp.write("web.yaml", WEB.format(name="web", ports="name: http")))
    r = mp.minipod("port-forward", "web", "8080:nope", check=False)
    assert r.returncode == 2 and r.stderr == (
        "error: port-forward: '8080:nope': 'nope' is not a port number or the name of a "
        "container port of the pod\n")
    r = mp.minipod("port-forward", "ghost", "80", check=False)
    assert r.returncode == 1 and r.stderr.startswith('error: pod "ghost" not found'), r.stderr
    # nothing listens on 81 in the pod: that connection fails, the forwarding goes on
    local = free_port()
    pf = port_forward(mp, "pod/web", f"{local}:81", "--address", "127.0.0.1")
    try:
        assert pf.stdout.readline() == f"Forwarding from 127.0.0.1:{local} -> 81\n"
        with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
            assert s.recv(10) == b""  # closed: the pod refused
        assert "Connection refused" in pf.stderr.readline()
        assert pf.poll() is None
        mp.minipod("stop", "web")  # the pod goes: so does port-forward
        assert pf.wait(10) == 1
        assert pf.stderr.read() == "error: lost connection to pod\n"
    finally:
        if pf.poll() is None:
            pf.kill()
            pf.wait()


@pytest.mark.parametrize("step", ["sandbox", "network", "etc", "release:web"])
def test_a_failed_set_up_step_frees_the_ports(mp, step):
    port = free_port()
    before = mp.host_state()
    env = mp.env
    mp.env = dict(env, MINIPOD_TEST_FAIL_AFTER=step)  # see kubelet/daemon.py
    try:
        r = mp.minipod("run", "-d", mp.write("w.yaml", WEB.format(
            name="w", ports=f"hostPort: {port}")), check=False)
    finally:
        mp.env = env
    assert r.returncode == 1 and r.stderr.endswith(f"injected failure after {step}\n"), r.stderr
    assert mp.host_state() == before and ours(mp) == [] and records(mp) == []
    mp.minipod("run", "-d", mp.write("v.yaml", WEB.format(name="v", ports=f"hostPort: {port}")))
    assert get_eventually(mp, "127.0.0.1", port) == "hello from v\n"


def test_a_new_sandbox_gets_the_ports_again(mp):
    """pause dies, the supervisor makes a new sandbox with a new IP: the DNAT follows it."""
    port = free_port()
    mp.minipod("run", "-d", mp.write("w.yaml", WEB.format(name="w", ports=f"hostPort: {port}")))
    assert get_eventually(mp, "127.0.0.1", port) == "hello from w\n"
    old_ip, old_pause = mp.pod("w")["status"]["podIP"], mp.inspect("w")["sandbox"]["pid"]
    os.kill(old_pause, signal.SIGKILL)
    mp.wait(lambda: mp.inspect("w")["sandbox"]["pid"] not in (0, old_pause)
            and mp.pod("w")["status"].get("podIP") not in (None, "", old_ip), 60, "a new sandbox")
    new_ip = mp.pod("w")["status"]["podIP"]
    assert get_eventually(mp, "127.0.0.1", port) == "hello from w\n"
    dnat = [r for r in ours(mp) if "-j DNAT" in r]
    assert len(dnat) == 1 and f"--to-destination {new_ip}:80" in dnat[0], dnat


def test_a_pod_cannot_reach_the_hosts_loopback_through_the_bridge(mp):
    """route_localnet on the bridge lets packets for 127.0.0.1 be routed there (CVE-2020-8558):
    a pod that sends 127.0.0.1 to its gateway must still not reach a service bound to the
    host's loopback. UDP shows it best: one datagram is delivered or not (a TCP handshake
    would also need the host's answer to get back). Without MP-HPI this test receives it."""
    mp.minipod("run", "-d", mp.write("w.yaml", WEB.format(name="w",
                                                          ports=f"hostPort: {free_port()}")))
    service = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    service.bind(("127.0.0.1", 0))
    target = service.getsockname()[1]
    pause, ip = mp.inspect("w")["sandbox"]["pid"], mp.pod("w")["status"]["podIP"]
    gw = subprocess.run(["nsenter", f"--net=/proc/{pause}/ns/net", "ip", "-4", "route", "show",
                         "default"], capture_output=True, text=True, check=True).stdout.split()[2]
    # In the pod's netns only: 127.0.0.1 is sent to the gateway as any other address would be.
    attack = f"""
set -e
sysctl -qw net.ipv4.conf.eth0.route_localnet=1
ip route del local 127.0.0.1 dev lo table local
ip route del local 127.0.0.0/8 dev lo table local
ip route add 127.0.0.1/32 via {gw} dev eth0 src {ip} onlink
exec {sys.executable} -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(b"from the pod", ("127.0.0.1", {target}))
    time.sleep(0.1)
print("sent")
'
"""
    try:
        r = subprocess.run(["nsenter", f"--net=/proc/{pause}/ns/net", "sh", "-c", attack],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == "sent\n", r.stderr
        service.settimeout(1)
        with pytest.raises(socket.timeout):
            print(service.recvfrom(100))
    finally:
        service.close()


def test_the_janitor_frees_the_ports_of_a_crashed_supervisor(mp):
    port = free_port()
    mp.minipod("run", "-d", mp.write("w.yaml", WEB.format(name="w", ports=f"hostPort: {port}")))
    assert get_eventually(mp, "127.0.0.1", port) == "hello from w\n"
    info = mp.inspect("w")
    jan = info["supervisor"]["janitorPid"]
    os.kill(info["supervisor"]["pid"], signal.SIGKILL)
    from tests.conftest import reap_orphans

    mp.wait(lambda: reap_orphans() or not os.path.exists(f"/proc/{jan}"), 30, "the janitor")
    assert ours(mp) == [] and records(mp) == []
    mp.minipod("run", "-d", mp.write("v.yaml", WEB.format(name="v", ports=f"hostPort: {port}")))
    assert get_eventually(mp, "127.0.0.1", port) == "hello from v\n"
