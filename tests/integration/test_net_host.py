"""Pod networking on the real kernel: bridge, veth, addresses, routes, NAT, ip_forward, agent.

Each test makes its own bridge `mpt<random>`, a random free /24 in 10.200-250.x.0, and network
namespaces held by `unshare --net sleep infinity` processes; everything is removed afterwards.
Checks are what a user would run: `ip`, `nsenter ... ip`, `iptables-save`, TCP connections.
Traffic goes only into namespaces these tests create.

Host-state comparisons are filtered to this test's names (bridge, veths, subnet): other
sessions may add links and rules on the same host at the same time.
"""

from __future__ import annotations

import ipaddress
import dataclasses
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import time

import pytest

from minipod.net import NetConfig, NetError, nat, setup_pod, teardown_pod

DEADLINE = 20.0  # seconds to wait for a process to come up before declaring it will not

SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(5)
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    c, peer = s.accept()
    c.sendall(("peer=" + peer[0]).encode())
    c.close()
"""

CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print(c.recv(100).decode())
"""


def _skip_unless_able() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (bridges, veths, iptables)")
    for tool in ("ip", "iptables", "iptables-save", "iptables-restore", "nsenter", "unshare"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool} (apt-get install iproute2 iptables util-linux)")
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        pytest.skip("needs pyroute2")


def kernel(test):
    """Marks a test that changes the host's network (root, network)."""
    return pytest.mark.root(pytest.mark.network(test))


def run(*argv: str, check: bool = True) -> str:
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr}")
    return r.stdout


def in_ns(pid: int, *argv: str) -> str:
    return run("nsenter", "-t", str(pid), "-n", *argv)


def host_routes() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in run("ip", "-4", "route", "show", "table", "all").splitlines():
        words = line.split()
        if not words:
            continue
        dst = words[1] if words[0] in ("local", "broadcast", "unreachable", "blackhole") else words[0]
        if dst == "default":
            continue
        try:
            nets.append(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            continue
    return nets


def free_subnet(taken: list[str] = ()) -> str:
    routes = host_routes() + [ipaddress.ip_network(t) for t in taken]
    for _ in range(1000):
        net = ipaddress.ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(r) for r in routes):
            return str(net)
    raise AssertionError("no free /24 in 10.200-250.x")


def link_names() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in run("ip", "-o", "link").splitlines()}


def ip_forward() -> str:
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        return f.read().strip()


def forwarding_holders() -> set[str]:
    try:
        return {n for n in os.listdir(nat.FORWARD_STATE) if n.startswith("holder.")}
    except FileNotFoundError:
        return set()


def ours(cfg: NetConfig, veths: list[str]) -> dict:
    """Everything on the host that mentions this test's bridge, veths or subnet."""
    names = {cfg.bridge, *veths}
    rules = [
        line for line in run("iptables-save").splitlines()
        if not line.startswith("#") and (cfg.bridge in line or cfg.subnet in line)
    ]
    routes = [
        line for line in run("ip", "-4", "route", "show", "table", "all").splitlines()
        if cfg.bridge in line or cfg.subnet.split("/")[0].rsplit(".", 1)[0] + "." in line
    ]
    return {
        "links": sorted(names & link_names()),
        "routes": routes,
        "iptables": rules,
        "forwarding_holder": f"holder.{cfg.bridge}" in forwarding_holders(),
        "leases": sorted(n for n in os.listdir(cfg.state_dir) if n[0].isdigit())
        if os.path.isdir(cfg.state_dir) else [],
    }


NOTHING = {"links": [], "routes": [], "iptables": [], "forwarding_holder": False, "leases": []}


@pytest.fixture
def netns():
    """Factory: a new network namespace held by a sleep process; returns its PID."""
    _skip_unless_able()
    procs: list[subprocess.Popen] = []

    def make() -> int:
        p = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        procs.append(p)
        host = os.readlink("/proc/self/ns/net")
        end = time.monotonic() + DEADLINE
        while os.readlink(f"/proc/{p.pid}/ns/net") == host:  # unshare has not run yet
            assert p.poll() is None, "unshare --net failed"
            assert time.monotonic() < end, "unshare --net did not switch namespace"
            time.sleep(0.005)
        return p.pid

    yield make
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def net(tmp_path):
    """A NetConfig with a unique bridge and a free subnet; its remains are removed after."""
    _skip_unless_able()
    cfg = NetConfig(f"mpt{secrets.token_hex(3)}", free_subnet(), str(tmp_path / "net"))
    veths: list[str] = []
    cfg_veths = (cfg, veths)
    before = ip_forward()
    assert ours(cfg, []) == NOTHING
    yield cfg_veths
    # Best effort, whatever the test did: no test may leave links, rules or claims behind.
    for name in veths:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    subprocess.run(["ip", "link", "del", cfg.bridge], capture_output=True)
    nat.remove(cfg.bridge)
    nat.restore_forwarding(cfg.bridge)
    assert ip_forward() == before or forwarding_holders(), "ip_forward was not restored"


def veth_name(veths: list[str]) -> str:
    name = f"mp-{secrets.token_hex(5)}"
    veths.append(name)
    return name


class Listener:
    """A one-shot TCP server inside a netns that answers with the peer address it saw."""

    def __init__(self, pid: int, ip: str, connections: int = 1) -> None:
        self.port = random.randint(20000, 60000)
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", SERVER, ip, str(self.port),
             str(connections)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def connect_from_host(ip: str, port: int) -> str:
    import socket

    with socket.create_connection((ip, port), timeout=10) as c:
        return c.recv(100).decode()


def connect_from_ns(pid: int, ip: str, port: int) -> str:
    return in_ns(pid, sys.executable, "-c", CLIENT, ip, str(port)).strip()


# ---- setup and teardown, as a user sees them ---------------------------------------------------

@kernel
def test_two_pods_wired_and_removed_without_trace(net, netns):
    cfg, veths = net
    forward_before = ip_forward()
    pid_a, pid_b = netns(), netns()
    veth_a, veth_b = veth_name(veths), veth_name(veths)

    a = setup_pod(cfg, "pod-a", pid_a, veth_a)
    b = setup_pod(cfg, "pod-b", pid_b, veth_b)

    net_ = ipaddress.ip_network(cfg.subnet)
    gateway = str(net_.network_address + 1)
    assert (a.gateway, a.prefixlen, a.bridge, a.ifname) == (gateway, 24, cfg.bridge, "eth0")
    assert a.ip != b.ip and {a.ip, b.ip} <= {str(h) for h in net_.hosts()}
    assert gateway not in (a.ip, b.ip)

    # Inside the pod: eth0 with the address, lo up, default route via the gateway.
    for pid, att in ((pid_a, a), (pid_b, b)):
        addrs = in_ns(pid, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
        assert f"inet {att.ip}/24" in addrs
        assert "UP" in in_ns(pid, "ip", "-o", "link", "show", "lo").split(">")[0]
        assert "state UP" in in_ns(pid, "ip", "-o", "link", "show", "eth0")
        assert f"default via {gateway} dev eth0" in in_ns(pid, "ip", "-4", "route")

    # On the host: the bridge with the gateway address, both veths enslaved and up.
    assert f"inet {gateway}/24" in run("ip", "-o", "-4", "addr", "show", "dev", cfg.bridge)
    enslaved = run("ip", "-o", "link", "show", "master", cfg.bridge)
    assert veth_a in enslaved and veth_b in enslaved
    bridge_mtu = run("ip", "-o", "link", "show", cfg.bridge).split(" mtu ")[1].split()[0]
    assert f"mtu {bridge_mtu}" in in_ns(pid_a, "ip", "-o", "link", "show", "eth0")

    # The NAT and forward rules, exactly as documented in nat.py.
    saved = run("iptables-save")
    for rule in (
        f'-A POSTROUTING -s {cfg.subnet} -m comment --comment "minipod:{cfg.bridge}" -j MP-NAT-{cfg.bridge}',
        f"-A MP-NAT-{cfg.bridge} -d {cfg.subnet} -j RETURN",
        f"-A MP-NAT-{cfg.bridge} ! -d 224.0.0.0/4 -j MASQUERADE",
        f'-A FORWARD -m comment --comment "minipod:{cfg.bridge}" -j MP-FWD-{cfg.bridge}',
        f"-A MP-FWD-{cfg.bridge} -i {cfg.bridge} -j ACCEPT",
        f"-A MP-FWD-{cfg.bridge} -o {cfg.bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ):
        assert saved.count(rule + "\n") == 1, f"missing or duplicated: {rule}\n{saved}"
    assert ip_forward() == "1"

    # Traffic: host -> pod (from the gateway address), pod -> pod (no NAT between pods).
    srv = Listener(pid_a, a.ip, connections=2)
    try:
        assert connect_from_host(a.ip, srv.port) == f"peer={gateway}"
        assert connect_from_ns(pid_b, a.ip, srv.port) == f"peer={b.ip}"
    finally:
        srv.close()

    teardown_pod(cfg, "pod-a", veth_a)
    # The network stays while pod-b uses it.
    assert veth_a not in link_names() and cfg.bridge in link_names()
    assert f"MP-NAT-{cfg.bridge}" in run("iptables-save", "-t", "nat")
    teardown_pod(cfg, "pod-b", veth_b)

    assert ours(cfg, veths) == NOTHING
    if not forwarding_holders():  # another session's network may legitimately hold it at 1
        assert ip_forward() == forward_before
    # A second teardown is a no-op.
    teardown_pod(cfg, "pod-b", veth_b)
    teardown_pod(cfg, "pod-a", veth_a)
    assert ours(cfg, veths) == NOTHING


@kernel
def test_egress_is_forwarded_and_masqueraded(net, netns, tmp_path):
    """A pod reaches a network beyond the host, and that network sees the host's address.

    The "outside" is one more namespace behind a host veth, with no route back to the pod
    subnet: without ip_forward and MASQUERADE the connection could not complete.
    """
    cfg, veths = net
    pid_pod, pid_out = netns(), netns()
    outside = free_subnet([cfg.subnet])
    o_net = ipaddress.ip_network(outside)
    host_ip, far_ip = str(o_net.network_address + 1), str(o_net.network_address + 2)
    uplink = f"mpo{secrets.token_hex(5)}"
    veths.append(uplink)
    run("ip", "link", "add", uplink, "type", "veth", "peer", "name", "eth0", "netns", str(pid_out))
    run("ip", "addr", "add", f"{host_ip}/24", "dev", uplink)
    run("ip", "link", "set", uplink, "up")
    in_ns(pid_out, "ip", "addr", "add", f"{far_ip}/24", "dev", "eth0")
    in_ns(pid_out, "ip", "link", "set", "eth0", "up")
    in_ns(pid_out, "ip", "link", "set", "lo", "up")
    assert cfg.subnet.rsplit(".", 1)[0] + "." not in in_ns(pid_out, "ip", "-4", "route")

    veth = veth_name(veths)
    pod = setup_pod(cfg, "pod-egress", pid_pod, veth)
    srv = Listener(pid_out, far_ip)
    try:
        assert connect_from_ns(pid_pod, far_ip, srv.port) == f"peer={host_ip}"
    finally:
        srv.close()
    teardown_pod(cfg, "pod-egress", veth)
    assert pod.ip not in run("ip", "-4", "route")
    assert ours(cfg, [veth]) == NOTHING


@kernel
def test_failed_attach_rolls_back_the_whole_network(net, netns):
    cfg, veths = net
    pid = netns()
    taken = veth_name(veths)
    run("ip", "link", "add", taken, "type", "bridge")  # the host end's name is already in use
    with pytest.raises(NetError, match=rf"create veth {taken} <-> eth0 in netns of pid {pid}: File exists"):
        setup_pod(cfg, "pod-a", pid, taken)
    run("ip", "link", "del", taken)
    assert ours(cfg, veths) == NOTHING  # no lease, bridge, rules or forwarding claim remain
    assert "eth0" not in in_ns(pid, "ip", "-o", "link")


@kernel
def test_an_existing_bridge_is_taken_as_it_is_only_when_up_with_the_gateway_address(net):
    """ensure_bridge's shortcut (sysfs and ioctls, no netlink) takes only a bridge that is up
    with exactly the gateway address; any other goes the netlink way: brought up, or refused."""
    from minipod.net import links

    cfg, _ = net
    subnet = ipaddress.ip_network(cfg.subnet)
    gateway = ipaddress.ip_interface(f"{subnet[1]}/{subnet.prefixlen}")
    run("ip", "link", "add", cfg.bridge, "type", "bridge")  # down, no address
    assert not links.bridge_ready(cfg.bridge, gateway)
    assert links.ensure_bridge(cfg.bridge, str(gateway)) is False  # reused, not created
    assert links.bridge_ready(cfg.bridge, gateway)
    assert f"inet {gateway}" in run("ip", "-o", "-4", "addr", "show", "dev", cfg.bridge)
    other = ipaddress.ip_interface(f"{subnet[2]}/{subnet.prefixlen}")
    assert not links.bridge_ready(cfg.bridge, other)
    run("ip", "addr", "flush", "dev", cfg.bridge)
    run("ip", "addr", "add", str(other), "dev", cfg.bridge)
    assert not links.bridge_ready(cfg.bridge, gateway)
    with pytest.raises(NetError, match=rf"bridge {cfg.bridge} has address {other}, "
                                        rf"expected {gateway}"):
        links.ensure_bridge(cfg.bridge, str(gateway))


@kernel
def test_repeated_setup_fails_without_harming_the_running_pod(net, netns):
    cfg, veths = net
    pid = netns()
    veth = veth_name(veths)
    first = setup_pod(cfg, "pod-a", pid, veth)
    with pytest.raises(NetError, match="File exists"):
        setup_pod(cfg, "pod-a", pid, veth)
    assert ours(cfg, veths)["leases"] == [first.ip]
    assert veth in run("ip", "-o", "link", "show", "master", cfg.bridge)
    assert f"inet {first.ip}/24" in in_ns(pid, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
    teardown_pod(cfg, "pod-a", veth)
    assert ours(cfg, veths) == NOTHING


@kernel
def test_setup_for_a_dead_pause_process_names_it(net):
    cfg, veths = net
    p = subprocess.Popen(["sleep", "0"])
    p.wait()  # reaped: the PID is free
    with pytest.raises(NetError, match=rf"/proc/{p.pid}/ns/net \(pod sandbox process {p.pid}\)"):
        setup_pod(cfg, "pod-a", p.pid, veth_name(veths))
    assert ours(cfg, veths) == NOTHING


@kernel
def test_teardown_after_the_pod_netns_died(net, netns):
    cfg, veths = net
    pid = netns()
    veth = veth_name(veths)
    setup_pod(cfg, "pod-a", pid, veth)
    os.kill(pid, 9)  # the netns dies with its last process; the kernel deletes the veth later
    teardown_pod(cfg, "pod-a", veth)
    assert ours(cfg, veths) == NOTHING


@kernel
def test_delete_link_removes_both_veth_ends_and_reports_refusals(net, netns):
    from minipod.net import links

    cfg, veths = net
    pid = netns()
    host_end = veth_name(veths)
    run("ip", "link", "add", host_end, "type", "veth", "peer", "name", "mpx0", "netns", str(pid))
    links.delete_link(host_end)
    assert host_end not in link_names()
    assert "mpx0" not in in_ns(pid, "ip", "-o", "link")  # the peer went with it
    links.delete_link(host_end)  # already gone: done
    # The kernel's refusal comes back as an error naming the link: a netns's lo can't go.
    code = "from minipod.net import links; links.delete_link('lo')"
    r = subprocess.run(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", code],
                       capture_output=True, text=True)
    assert "LinkError: delete link lo: Operation not supported" in r.stderr


# ---- subnet conflicts ------------------------------------------------------------------------

@kernel
def test_subnet_overlapping_a_host_route_is_refused(net, netns):
    cfg, veths = net
    pid = netns()
    # A route of our own making (a spare bridge with an address: not every kernel has the
    # dummy driver), so the test does not depend on the host's network; the subnet asked for
    # contains it.
    dummy = f"mptd{secrets.token_hex(3)}"
    run("ip", "link", "add", dummy, "type", "bridge")
    try:
        run("ip", "addr", "add", cfg.subnet.replace(".0/24", ".1/24"), "dev", dummy)
        run("ip", "link", "set", dummy, "up")
        wider = str(ipaddress.ip_network(cfg.subnet).supernet(new_prefix=20))
        clash = NetConfig(cfg.bridge, wider, cfg.state_dir)
        with pytest.raises(NetError, match=rf"subnet {wider} overlaps the host route {cfg.subnet} dev {dummy}"):
            setup_pod(clash, "pod-a", pid, veth_name(veths))
    finally:
        run("ip", "link", "del", dummy)
    assert ours(cfg, veths) == NOTHING
    assert ours(clash, veths) == NOTHING


@kernel
def test_subnet_of_the_hosts_own_network_is_refused(net, netns):
    cfg, veths = net
    # The host's own network (e.g. 192.0.2.0/24 dev eth0), not a bridge: minipod0 or another
    # session's test bridge may be up right now, and their routes are not what this is about.
    existing = [
        words for words in map(str.split, run("ip", "-4", "route", "show", "table", "main").splitlines())
        if words and words[0] != "default" and "dev" in words
        and not os.path.exists(f"/sys/class/net/{words[words.index('dev') + 1]}/bridge")
    ]
    if not existing:
        pytest.skip("the host has no non-default IPv4 route to collide with")
    dst, dev = existing[0][0], existing[0][existing[0].index("dev") + 1]
    subnet = str(ipaddress.ip_network(dst, strict=False))
    if ipaddress.ip_network(subnet).prefixlen > 30:
        pytest.skip(f"the host's route {dst} is too narrow to be a pod subnet")
    clash = NetConfig(cfg.bridge, subnet, cfg.state_dir)
    before = ours(clash, veths)  # the host's own routes of that subnet are in it, rightly
    assert before["links"] == before["iptables"] == before["leases"] == []
    with pytest.raises(NetError, match=rf"overlaps the host route {subnet} dev {dev}"):
        setup_pod(clash, "pod-a", netns(), veth_name(veths))
    assert ours(cfg, veths) == NOTHING
    assert ours(clash, veths) == before


# ---- NAT rules on their own ----------------------------------------------------------------------

@kernel
def test_nat_ensure_is_idempotent_and_repairs_and_remove_is_exact(net):
    cfg, _ = net
    nat.ensure(cfg.bridge, cfg.subnet)
    nat.ensure(cfg.bridge, cfg.subnet)
    saved = run("iptables-save")
    assert saved.count(f"-j MP-NAT-{cfg.bridge}\n") == 1
    assert saved.count(f"-j MP-FWD-{cfg.bridge}\n") == 1
    # Someone flushes our chain (a firewall reload, a curious admin): the next ensure refills
    # it, in order, without duplicating the jump.
    run("iptables", "-w", "-t", "nat", "-F", f"MP-NAT-{cfg.bridge}")
    nat.ensure(cfg.bridge, cfg.subnet)
    rules = run("iptables", "-w", "-t", "nat", "-S", f"MP-NAT-{cfg.bridge}").splitlines()
    assert rules == [
        f"-N MP-NAT-{cfg.bridge}",
        f"-A MP-NAT-{cfg.bridge} -d {cfg.subnet} -j RETURN",
        f"-A MP-NAT-{cfg.bridge} ! -d 224.0.0.0/4 -j MASQUERADE",
    ]
    assert run("iptables-save").count(f"-j MP-NAT-{cfg.bridge}\n") == 1
    nat.remove(cfg.bridge)
    nat.remove(cfg.bridge)
    after = [line for line in run("iptables-save").splitlines() if not line.startswith("#")]
    assert [line for line in after if cfg.bridge in line or cfg.subnet in line] == []


# ---- ip_forward reference counting (no root needed: a fake sysctl file) ------------------------

def test_forwarding_is_restored_by_the_last_network_only(tmp_path):
    sysctl = tmp_path / "ip_forward"
    sysctl.write_text("0\n")
    state = str(tmp_path / "fwd")
    nat.enable_forwarding("br-a", state, str(sysctl))
    assert sysctl.read_text() == "1"
    nat.enable_forwarding("br-b", state, str(sysctl))
    nat.enable_forwarding("br-a", state, str(sysctl))  # idempotent
    nat.restore_forwarding("br-a", state, str(sysctl))
    assert sysctl.read_text() == "1"  # br-b still needs it
    nat.restore_forwarding("br-b", state, str(sysctl))
    assert sysctl.read_text() == "0"
    assert not os.path.exists(state)
    nat.restore_forwarding("br-b", state, str(sysctl))  # gone = done
    assert sysctl.read_text() == "0"


def test_forwarding_already_on_stays_on(tmp_path):
    sysctl = tmp_path / "ip_forward"
    sysctl.write_text("1\n")
    state = str(tmp_path / "fwd")
    nat.enable_forwarding("br-a", state, str(sysctl))
    nat.restore_forwarding("br-a", state, str(sysctl))
    assert sysctl.read_text().strip() == "1"


# ---- the agent ------------------------------------------------------------------------------------

@kernel
def test_agent_sets_up_and_tears_down_a_pod(net, netns):
    from minipod.net import agent
    from minipod.net.links import LinkError

    cfg, veths = net
    pid = netns()
    # A pipe the caller owns: the agent must not keep its write end open.
    r, w = os.pipe()
    a = agent.start()
    agent_pid = a.pid
    try:
        os.close(w)
        assert a.call("ping") == {"pid": agent_pid}  # it serves: its start-up is over
        os.set_blocking(r, False)
        assert os.read(r, 1) == b""  # EOF: no other process holds the write end
        os.close(r)

        veth = veth_name(veths)
        att = a.setup_pod(cfg, "pod-a", pid, veth)
        assert f"inet {att.ip}/24" in in_ns(pid, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
        assert veth in run("ip", "-o", "link", "show", "master", cfg.bridge)

        # A failing request is an answer with the original error type, and the agent lives on.
        with pytest.raises(LinkError, match=r"open /proc/\d+/ns/net"):
            a.setup_pod(cfg, "pod-ghost", 2**22 + 1, veth_name(veths))
        with pytest.raises(NetError, match="unknown op 'nope'"):
            a.call("nope")
        assert a.call("ping") == {"pid": agent_pid}
        assert list(ours(cfg, [])["leases"]) == [att.ip]  # the ghost's lease was rolled back

        # Another program adopts the same agent through an inherited fd.
        code = (
            "import json, sys; from minipod.net.agent import Agent; "
            "print(json.dumps(Agent.from_fd(int(sys.argv[1])).call('ping')))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(a.fileno())], pass_fds=[a.fileno()],
            capture_output=True, text=True, check=True,
        ).stdout
        assert json.loads(out) == {"pid": agent_pid}
        assert a.call("ping") == {"pid": agent_pid}  # still in step after the other's call

        a.teardown_pod(cfg, "pod-a", veth)
        assert ours(cfg, veths) == NOTHING

        # A setup sent and never read (pod set-up failed while the agent worked on it): the
        # rollback's teardown is answered after it, in step, and the host is as it was.
        a.send_setup_pod(cfg, "pod-b", pid, veth_name(veths))
        a.teardown_pod(cfg, "pod-b", veths[-1])
        assert ours(cfg, veths) == NOTHING
        assert a.call("ping") == {"pid": agent_pid}
        # ... and the same when that setup failed: its error is nobody's any more.
        a.send_setup_pod(cfg, "pod-ghost", 2**22 + 1, veth_name(veths))
        a.teardown_pod(cfg, "pod-ghost", veths[-1])
        assert ours(cfg, veths) == NOTHING and a.call("ping") == {"pid": agent_pid}
    finally:
        a.close()
    assert not os.path.exists(f"/proc/{agent_pid}")  # exited on EOF and reaped


@kernel
def test_agent_leases_before_the_netns_and_attaches_after(net, netns):
    """What pod set-up does: lease_pod sent before the sandbox exists, attach_pod sent before
    that answer is read; the answers come in order, and the pod is plugged in."""
    from minipod.net import agent, ipam
    from minipod.net.links import LinkError

    cfg, veths = net
    pid = netns()
    a = agent.start()
    try:
        veth = veth_name(veths)
        a.send_lease_pod(cfg, "pod-a")
        a.send_setup_pod(cfg, "pod-a", pid, veth, leased=True)
        a.lease_pod_reply()
        att = a.setup_pod_reply()
        assert f"inet {att.ip}/24" in in_ns(pid, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
        assert veth in run("ip", "-o", "link", "show", "master", cfg.bridge)
        assert list(ours(cfg, [])["leases"]) == [att.ip]

        # An attach with no lease before it (its lease_pod failed, or was never sent) says so.
        with pytest.raises(NetError, match="no lease for pod-b"):
            a.call("attach_pod", cfg=cfg, owner="pod-b", pause_pid=pid,
                   host_veth=veth_name(veths))
        # A lease_pod that fails after its lease was made (no bridge can have that name)
        # gives the lease back.
        bad = dataclasses.replace(cfg, bridge="x" * 20, subnet=free_subnet(),
                                  state_dir=cfg.state_dir + "-bad")
        with pytest.raises(LinkError):
            a.call("lease_pod", cfg=bad, owner="pod-c")
        assert ipam.leases(bad.state_dir) == {}
        assert list(ours(cfg, [])["leases"]) == [att.ip]

        a.teardown_pod(cfg, "pod-a", veth)
        assert ours(cfg, veths) == NOTHING
    finally:
        a.close()


def test_agent_exits_when_its_caller_closes(tmp_path):
    from minipod.net import agent

    a = agent.start()
    pid = a.pid
    assert a.call("ping") == {"pid": pid}
    a.close()
    assert not os.path.exists(f"/proc/{pid}")
    with pytest.raises(NetError, match="unusable"):
        a.call("ping")
