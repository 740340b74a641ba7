"""Links over rtnetlink (pyroute2): the pod bridge, a veth pair per pod, the subnet check.

pyroute2 costs ~100-200 ms to import, so it is imported inside the functions that need it,
never at module top: importing this module is free (link_exists needs no netlink at all).

Work inside a pod's network namespace uses a netlink socket that *lives* in that namespace: a
netlink socket talks to the namespace it was created in, whoever uses it later. A throwaway
thread setns()es into the namespace, creates the socket and exits: setns(CLONE_NEWNET) moves
only the calling thread, so no other thread -- and no later Python code -- ever runs in the
pod's namespace, and the socket's descriptor is already ours (one fd table). A thread starts
in ~0.1 ms; the forked child we used before cost 6-8 ms in the node agent (copying the page
tables of an interpreter with everything loaded), on the critical path of every pod start.
`IPRoute(netns=...)` forks too. We use the namespace fd we already opened, so the veth peer and
the address land in the same namespace even if the pause PID were reused in between.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import socket
import struct
from typing import Any

from minipod import explain
from minipod.net import NetError

CLONE_NEWNET = 0x40000000
IFNAMSIZ = 16  # including the NUL: names are at most 15 characters
POD_IFNAME = "eth0"

# rtnetlink constants for delete_link's hand-built message (linux/netlink.h, rtnetlink.h).
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
RTM_DELLINK = 17
SIOCGIFADDR = 0x8915  # <linux/sockios.h>: an interface's (primary) IPv4 address
SIOCGIFNETMASK = 0x891B
IFF_UP = 0x1
IFLA_IFNAME = 3


class LinkError(NetError):
    """A netlink operation failed; the message names the link or address and the errno text."""


class SubnetConflict(LinkError):
    """The pod subnet overlaps a host route: pods would shadow (or be shadowed by) a network."""


def link_exists(name: str) -> bool:
    """Cheap: no netlink, just sysfs. /sys/class/net lists the links of the netns that mounted
    sysfs, which for minipod (never moving its own namespace) is the host's."""
    return os.path.exists(f"/sys/class/net/{name}")


def bridge_ports(name: str) -> list[str]:
    """The links attached to bridge `name` (sysfs: its brif/ directory); [] if it has none, or
    is no bridge, or does not exist."""
    try:
        return os.listdir(f"/sys/class/net/{name}/brif")
    except (FileNotFoundError, NotADirectoryError):
        return []


def check_ifname(name: str) -> None:
    if not name or len(name) >= IFNAMSIZ or "/" in name or name in (".", "..") or any(
        c.isspace() for c in name
    ):
        raise LinkError(f"invalid interface name {name!r} (1-15 characters, no '/' or spaces)")


def _strerror(e: BaseException) -> str:
    code = getattr(e, "code", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return str(e)


def _code(e: BaseException) -> int | None:
    code = getattr(e, "code", None)
    return code if isinstance(code, int) else None


def _iproute(**kw: Any):
    from pyroute2 import IPRoute  # lazy: see module docstring

    return IPRoute(**kw)


def warm() -> None:
    """A read-only round trip (the loopback's link and addresses), so that a process whose
    forks do network work (the node agent) pays pyroute2's first-use costs once, not in every
    fork: its message classes are built on first use."""
    with _iproute() as ipr:
        index = _lookup(ipr, "lo")
        if index is not None:
            _get_link(ipr, index).get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            ipr.get_addr(family=socket.AF_INET, index=index)


def _lookup(ipr, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _get_link(ipr, index: int):
    return ipr.get_links(index)[0]


def default_mtu() -> int:
    """MTU of the link that carries the IPv4 default route, 1500 without one.

    A new bridge takes this MTU: pods whose packets are bigger than the uplink carries depend
    on PMTU discovery through NAT, which ICMP filtering often breaks (cloud VMs run 1400-1460).
    """
    with _iproute() as ipr:
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            if route["dst_len"] == 0 and route.get("oif"):
                mtu = _get_link(ipr, route.get("oif")).get("mtu")
                if mtu:
                    return int(mtu)
    return 1500


def _random_mac() -> str:
    # Locally administered (bit 1), unicast (bit 0 clear).
    octets = [0x02] + [random.randrange(256) for _ in range(5)]
    return ":".join(f"{o:02x}" for o in octets)


def bridge_ready(name: str, iface: ipaddress.IPv4Interface) -> bool:
    """True if bridge `name` exists, is up and has `iface` as its IPv4 address: sysfs and two
    SIOCGIF* ioctls, no netlink. The steady state for every pod after the first, which thus
    needs no pyroute2 round trips (~5 ms in a fresh fork) to find that nothing is to be done."""
    try:
        up = int(_sysfs(name, "flags"), 16) & IFF_UP
        if not up or not os.path.isdir(f"/sys/class/net/{name}/bridge"):
            return False
        import fcntl

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16s16x", name.encode())  # struct ifreq: name, then the union
            addr = fcntl.ioctl(s, SIOCGIFADDR, req)[20:24]  # sockaddr_in's sin_addr
            mask = fcntl.ioctl(s, SIOCGIFNETMASK, req)[20:24]
    except (OSError, ValueError):
        return False  # gone, or no IPv4 address (EADDRNOTAVAIL): the slow path says what
    return (socket.inet_ntoa(addr) == str(iface.ip)
            and socket.inet_ntoa(mask) == str(iface.network.netmask))


def ensure_bridge(name: str, gateway_cidr: str, mtu: int | None = None) -> bool:
    """Make bridge `name` exist, hold `gateway_cidr` (e.g. '10.244.0.1/16') and be up.

    Returns True when it was created. An existing bridge with that address is reused; one with
    a different IPv4 address is an error (another subnet's leftover, or someone else's bridge).
    """
    check_ifname(name)
    iface = ipaddress.ip_interface(gateway_cidr)
    if not explain.ON and bridge_ready(name, iface):
        return False
    from pyroute2 import NetlinkError

    created = False
    with _iproute() as ipr:
        index = _lookup(ipr, name)
        if index is None:
            # An explicit MAC: a bridge without one adopts the lowest MAC of its ports and
            # changes it as pods come and go, which makes every pod's ARP entry for the
            # gateway stale. With addr_assign_type=set the kernel leaves it alone.
            try:
                ipr.link(
                    "add", ifname=name, kind="bridge", address=_random_mac(),
                    mtu=mtu or default_mtu(),
                )
                created = True
                if explain.ON:
                    explain.say(f"new bridge {name}", "rtnetlink RTM_NEWLINK kind=bridge",
                                f"ip link add {name} type bridge", bridge=name)
            except NetlinkError as e:
                if _code(e) != errno.EEXIST:
                    raise LinkError(f"create bridge {name}: {_strerror(e)}") from None
            index = _lookup(ipr, name)
            if index is None:
                raise LinkError(f"bridge {name} vanished right after it was created")
        else:
            kind = _get_link(ipr, index).get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            if kind != "bridge":
                raise LinkError(f"link {name} exists and is not a bridge (kind {kind})")

        have = [
            f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.get_addr(family=socket.AF_INET, index=index)
        ]
        if str(iface) not in have:
            if have:
                raise LinkError(
                    f"bridge {name} has address {', '.join(have)}, expected {iface}"
                    " (left over from another subnet? delete it: ip link del " + name + ")"
                )
            try:
                ipr.addr(
                    "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                    broadcast=str(iface.network.broadcast_address),
                )
            except NetlinkError as e:
                if _code(e) != errno.EEXIST:
                    raise LinkError(f"add address {iface} to {name}: {_strerror(e)}") from None
            if explain.ON:
                explain.say(f"bridge {name} gets the gateway address {iface}",
                            "rtnetlink RTM_NEWADDR", f"ip addr add {iface} dev {name}")
        try:
            ipr.link("set", index=index, state="up")
        except NetlinkError as e:
            raise LinkError(f"set {name} up: {_strerror(e)}") from None
        if explain.ON:
            explain.say(f"bridge {name} (index {index}) is up with {iface}",
                        "rtnetlink RTM_NEWLINK IFF_UP", f"ip link set {name} up",
                        bridge=name, index=index, address=str(iface))
    return created


def delete_link(name: str) -> None:
    """Delete link `name` (for a veth: both ends). Already gone = done.

    One RTM_DELLINK by name over a plain netlink socket, not pyroute2: teardown runs in the
    supervisor, which never imported pyroute2 (the network agent did, and has exited), and
    importing it for this one message would cost ~60 ms of every last pod's `rm`.
    """
    if not link_exists(name):
        return  # `rm` after a clean stop finds nothing to delete
    check_ifname(name)
    ifname = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(ifname), IFLA_IFNAME) + ifname
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0) + attr  # struct ifinfomsg
    header = struct.pack("=IHHII", 16 + len(body), RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0) as nl:  # 0 = NETLINK_ROUTE
        nl.send(header + body)
        reply = nl.recv(4096)
    # The ack is an NLMSG_ERROR whose error field is 0 or -errno.
    (kind,) = struct.unpack_from("=H", reply, 4)
    (err,) = struct.unpack_from("=i", reply, 16) if kind == NLMSG_ERROR else (0,)
    if -err in (0, errno.ENODEV, errno.ENOENT):
        return
    raise LinkError(f"delete link {name}: {os.strerror(-err)}")


def check_subnet(subnet: str, bridge: str) -> None:
    """Refuse a subnet that overlaps a host route not on `bridge` (default routes ignored).

    Pods in 192.168.1.0/24 on a host whose LAN is 192.168.1.0/24 would make the LAN
    unreachable for the pods (their gateway is the bridge) and the pods unreachable from the
    host (the more specific or older route wins). Failing here names the route to avoid.
    """
    net = ipaddress.ip_network(subnet)
    with _iproute() as ipr:
        bridge_index = _lookup(ipr, bridge)
        names: dict[int, str] = {}
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            if route["dst_len"] == 0:
                continue
            oif = route.get("oif")
            if oif is not None and oif == bridge_index:
                continue
            dst = ipaddress.ip_network(f"{route.get('dst')}/{route['dst_len']}", strict=False)
            if not dst.overlaps(net):
                continue
            where = ""
            if oif:
                if oif not in names:
                    link = ipr.get_links(oif)
                    names[oif] = link[0].get("ifname") if link else str(oif)
                where = f" dev {names[oif]}"
            elif route.get("gateway"):
                where = f" via {route.get('gateway')}"
            raise SubnetConflict(
                f"subnet {net} overlaps the host route {dst}{where}; choose another pod subnet"
            )


def _netns_socket(nsfd: int) -> socket.socket:
    """A NETLINK_ROUTE socket created inside the network namespace `nsfd` (see module doc)."""
    import threading

    from minipod.kernel import _libc

    made: list = []

    def make() -> None:  # in the throwaway thread only: it joins the netns, then exits
        try:
            _libc.setns(nsfd, CLONE_NEWNET, "setns into the pod's network namespace")
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                      0))  # 0 = NETLINK_ROUTE
        except BaseException as e:  # noqa: BLE001 - raised below, in the caller's thread
            made.append(e)

    # Joined before we return: no thread outlives this call (our callers fork).
    thread = threading.Thread(target=make, name="minipod-netns-socket")
    thread.start()
    thread.join()
    if not made:
        raise OSError(errno.EIO, "the netns thread ended without a socket")
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def attach_veth(
    host_name: str,
    netns_pid: int | str,
    ip_cidr: str,
    gateway: str,
    bridge: str,
    mtu: int | None = None,
) -> None:
    """Give the network namespace of `netns_pid` an eth0 with `ip_cidr`, plugged into `bridge`.
    `netns_pid` is a process in it, or a file of it (a pinned netns: no process is in it).

    Host end `host_name` is enslaved to the bridge and up; inside: lo up, eth0 up with the
    address, default route via `gateway`. MTU defaults to the bridge's. On failure nothing is
    left behind (deleting the host end deletes the peer too).
    """
    from pyroute2 import NetlinkError

    check_ifname(host_name)
    iface = ipaddress.ip_interface(ip_cidr)
    nspath = netns_pid if isinstance(netns_pid, str) else f"/proc/{netns_pid}/ns/net"
    try:
        nsfd = os.open(nspath, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        whose = "" if isinstance(netns_pid, str) else f" (pod sandbox process {netns_pid})"
        raise LinkError(f"open {nspath}{whose}: {e.strerror}") from None
    try:
        bridge_index, bridge_mtu = _bridge_index_mtu(bridge)
        mtu = mtu or bridge_mtu
        with _iproute() as ipr:
            # The peer is created directly inside the pod's namespace under its final name:
            # no temporary name in the host namespace (where "eth0" is usually taken), no
            # move, no rename; and the host end enslaved to the bridge and up in the same
            # request (IFLA_MASTER, IFF_UP at creation): one netlink round trip for all of it.
            try:
                ipr.link(
                    "add", ifname=host_name, kind="veth", mtu=mtu, master=bridge_index,
                    state="up", peer={"ifname": POD_IFNAME, "net_ns_fd": nsfd, "mtu": mtu},
                )
            except NetlinkError as e:
                raise LinkError(
                    f"create veth {host_name} <-> {POD_IFNAME} in {_where(netns_pid)}:"
                    f" {_strerror(e)}"
                ) from None
            try:
                if explain.ON:
                    host_index = _lookup(ipr, host_name)
                    explain.say(f"veth pair {host_name} (index {host_index}) <-> {POD_IFNAME} "
                                f"in {_where(netns_pid)}, "
                                f"net:[{os.fstat(nsfd).st_ino}]",
                                "rtnetlink RTM_NEWLINK kind=veth, peer IFLA_NET_NS_FD",
                                f"ip link add {host_name} mtu {mtu} type veth peer name "
                                f"{POD_IFNAME} netns {nspath}",
                                host_veth=host_name, host_index=host_index,
                                netns=os.fstat(nsfd).st_ino, pid=netns_pid)
                    explain.say(f"{host_name} plugged into {bridge}, up",
                                "the same RTM_NEWLINK: IFLA_MASTER, IFF_UP",
                                f"ip link set {host_name} master {bridge} up")
                _configure_pod_side(nsfd, netns_pid, iface, gateway)
            except BaseException:
                try:
                    ipr.link("del", ifname=host_name)
                except Exception:  # noqa: BLE001 - the original error matters more
                    pass
                raise
    finally:
        os.close(nsfd)


def _bridge_index_mtu(bridge: str) -> tuple[int, int]:
    """The bridge's ifindex and MTU, from sysfs (see link_exists): no netlink round trip."""
    try:
        return int(_sysfs(bridge, "ifindex")), int(_sysfs(bridge, "mtu"))
    except (OSError, ValueError):
        raise LinkError(f"attach veth: bridge {bridge} does not exist") from None


def _sysfs(name: str, attr: str) -> str:
    """Link `name`'s attribute from /sys/class/net (this netns's links: see link_exists)."""
    with open(f"/sys/class/net/{name}/{attr}") as f:
        return f.read()


def _where(netns: int | str) -> str:
    return f"the netns pinned at {netns}" if isinstance(netns, str) else f"netns of pid {netns}"


def _configure_pod_side(
    nsfd: int, netns_pid: int | str, iface: ipaddress.IPv4Interface, gateway: str
) -> None:
    """lo up; eth0: address, up; default route. Over a socket living in the pod's netns."""
    from pyroute2 import IPRoute, NetlinkError

    where = _where(netns_pid)
    try:
        sock = _netns_socket(nsfd)
    except OSError as e:
        raise LinkError(f"open a netlink socket in {where}: {e.strerror}") from None
    fd = sock.detach()  # IPRoute owns it from here: its close() closes the fd
    try:
        ns = IPRoute(fileno=fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        step = f"set lo up in {where}"
        ns.link("set", index=1, state="up")  # lo is always ifindex 1 in a new netns
        eth = _lookup(ns, POD_IFNAME)
        if eth is None:
            raise LinkError(f"{POD_IFNAME} not found in {where} after creating it")
        step = f"add address {iface} to {POD_IFNAME} in {where}"
        ns.addr(
            "add", index=eth, address=str(iface.ip), prefixlen=iface.network.prefixlen,
            broadcast=str(iface.network.broadcast_address),
        )
        step = f"set {POD_IFNAME} up in {where}"
        ns.link("set", index=eth, state="up")
        step = f"add default route via {gateway} in {where}"
        ns.route("add", dst="0.0.0.0/0", gateway=gateway, oif=eth)
        if explain.ON:
            ip = (f"nsenter --net={netns_pid} ip" if isinstance(netns_pid, str)
                  else f"nsenter --target {netns_pid} --net ip")
            explain.say(f"in the pod's netns: lo up, {POD_IFNAME} (index {eth}) {iface} up, "
                        f"default via {gateway}",
                        "rtnetlink over a socket made in the pod's netns: RTM_NEWLINK lo up, "
                        "RTM_NEWADDR, RTM_NEWLINK up, RTM_NEWROUTE",
                        f"{ip} link set lo up && {ip} addr add {iface} dev {POD_IFNAME} && "
                        f"{ip} link set {POD_IFNAME} up && {ip} route add default via {gateway}",
                        ip=str(iface.ip), prefixlen=iface.network.prefixlen, index=eth,
                        gateway=gateway)
    except NetlinkError as e:
        raise LinkError(f"{step}: {_strerror(e)}") from None
    finally:
        ns.close()
