"""What the kernel says about a pod's links, read-only (for `minipod tree`): a link in the host
namespace by name, and one inside the network namespace of a process. The same rtnetlink
dumps `ip -d link` and `ip addr` make; inside a pod's namespace through a netlink socket
created there (links._netns_socket), so this process never changes namespace."""

from __future__ import annotations

import os


def _describe(ipr, msg) -> dict:
    index = msg["index"]
    info = msg.get_attr("IFLA_LINKINFO")
    master = msg.get_attr("IFLA_MASTER")
    addrs = [f'{a.get_attr("IFA_ADDRESS")}/{a["prefixlen"]}'
             for a in ipr.get_addr(index=index, family=2)]  # AF_INET
    out = {"name": msg.get_attr("IFLA_IFNAME"), "index": index,
           "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
           "mac": msg.get_attr("IFLA_ADDRESS"), "mtu": msg.get_attr("IFLA_MTU"),
           "state": msg.get_attr("IFLA_OPERSTATE"), "addresses": addrs,
           # A veth's IFLA_LINK is its peer's ifindex (in the peer's namespace), which is
           # what `ip link` prints after the @: eth0@if12.
           "peerIndex": msg.get_attr("IFLA_LINK")}
    if master:
        out["master"] = ipr.get_links(master)[0].get_attr("IFLA_IFNAME")
    return out


def host_link(name: str) -> dict | None:
    """The link `name` in our network namespace; None if there is none."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        return _describe(ipr, ipr.get_links(found[0])[0]) if found else None


def netns_link(pid: int | str, name: str) -> dict | None:
    """The link `name` in the network namespace of `pid` (or pinned at that path); None if it
    or the process is gone."""
    from pyroute2 import IPRoute

    from minipod.net.links import _netns_socket

    try:
        nsfd = os.open(pid if isinstance(pid, str) else f"/proc/{pid}/ns/net",
                       os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = _netns_socket(nsfd).detach()
    except OSError:
        return None
    finally:
        os.close(nsfd)
    with IPRoute(fileno=fd) as ipr:
        found = ipr.link_lookup(ifname=name)
        return _describe(ipr, ipr.get_links(found[0])[0]) if found else None
