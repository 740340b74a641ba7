"""A pod's network: a lease, the shared bridge + NAT, and the pod's own veth.

    host                                          pod netns (held by the pause process)
    minipod0 (bridge, 10.244.0.1/16) --- mp-<id> ====veth==== eth0 10.244.0.5/16
         |  MP-NAT/MP-FWD iptables chains                     lo up
         |  ip_forward=1                                      default via 10.244.0.1

The bridge, the NAT rules and ip_forward are shared by every pod of the network: the first pod
creates them and the last one removes them, so with no pods the host is as it was. That life
cycle is decided under one lock per network (<state_dir>/network.lock), and the rule is simple:
the network exists while it has leases. setup_pod allocates its lease *under* that lock, so a
concurrent teardown that sees "no leases" can never remove a bridge that a new pod is about to
use. The veth is per pod and is made outside the lock, so pods start in parallel.

Lock order, always: network.lock, then the IPAM lock (<state_dir>/lock, taken inside ipam).

This module imports nothing heavy: links (pyroute2) is imported when a function needs it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from minipod.errors import MinipodError

if TYPE_CHECKING:
    from minipod.net import ipam

NETWORK_LOCK = "network.lock"
VETH_GONE_TIMEOUT = 2.0  # seconds to wait for the kernel to delete a dead netns's veth


class NetError(MinipodError):
    """A pod network step failed (the message says which, on what). The submodules' errors
    (IPAMError, LinkError, NatError) derive from it, so one except catches all;
    that is why this package imports no submodule at top level."""


@dataclass(frozen=True)
class NetConfig:
    bridge: str = "minipod0"
    subnet: str = "10.244.0.0/16"
    state_dir: str = "/run/minipod/networks/minipod0"

    @classmethod
    def under(cls, root: str, bridge: str, subnet: str) -> "NetConfig":
        """The usual layout: leases of bridge B in <root>/networks/B."""
        return cls(bridge, subnet, os.path.join(root, "networks", bridge))


@dataclass(frozen=True)
class Attachment:
    ip: str
    prefixlen: int
    gateway: str
    bridge: str
    host_veth: str
    ifname: str = "eth0"


def node_ip() -> str:
    """The node's address, as a host-network pod's IP: the source of its default route (a UDP
    connect sends no packet), else loopback."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _network_lock(cfg: NetConfig):
    from minipod.kernel.lock import flock

    return flock(os.path.join(cfg.state_dir, NETWORK_LOCK))


def setup_pod(cfg: NetConfig, owner: str, pause_pid: int | str, host_veth: str) -> Attachment:
    """Lease an address for `owner` and plug the netns of `pause_pid` (or the netns pinned at
    that path: links.attach_veth) into the network: lease_pod, then attach_pod.

    Idempotent for the lease (a retry gets the same address); on failure everything this call
    added is undone (the lease, and the bridge/NAT if no other pod uses them).
    """
    from minipod.rollback import Rollback

    with Rollback() as rb:
        lease = lease_pod(cfg, owner, rb.push)
        att = attach_pod(cfg, lease, pause_pid, host_veth)
        rb.commit()
    return att


def lease_pod(cfg: NetConfig, owner: str, push) -> "ipam.Lease":
    """setup_pod's first half, which needs no netns (a pod may ask before its sandbox exists):
    the lease, and the bridge, NAT and forwarding it needs. A new lease's undo (which also
    removes the bridge/NAT if no other pod uses them) goes to `push` (a Rollback's)."""
    from minipod.net import ipam, links, nat

    with _network_lock(cfg):
        # Only a network being created is checked: once our bridge exists its own route
        # is in the table, and re-checking every pod would cost a route dump for nothing.
        if not links.link_exists(cfg.bridge):
            links.check_subnet(cfg.subnet, cfg.bridge)
        # A repeated call for a running pod finds its lease (and then fails on the
        # existing veth): that failure must not release the address the pod is using.
        had_lease = owner in ipam.leases(cfg.state_dir).values()
        lease = ipam.allocate(cfg.state_dir, cfg.subnet, owner)
        from minipod import explain

        if explain.ON:
            explain.say(f"IP address {lease.ip}/{lease.prefixlen} leased from {cfg.subnet}",
                        "open(O_CREAT|O_EXCL) of the lease file (no syscall of the network)",
                        f"printf '%s\\r\\neth0' {owner} > {cfg.state_dir}/{lease.ip}", ip=lease.ip)
        if not had_lease:
            # One undo for lease *and* network: releasing first is what lets the "no
            # leases left" check remove a bridge/NAT that only this pod would have used.
            push(f"lease {lease.ip} and network {cfg.bridge}", lambda: _release(cfg, owner))
        links.ensure_bridge(cfg.bridge, f"{lease.gateway}/{lease.prefixlen}")
        nat.ensure(cfg.bridge, cfg.subnet)
        nat.enable_forwarding(cfg.bridge)
    return lease


def attach_pod(cfg: NetConfig, lease: "ipam.Lease", pause_pid: int | str,
               host_veth: str) -> Attachment:
    """setup_pod's second half: the veth into the netns of `pause_pid`, with the lease's
    address. It cleans up after itself on failure; the lease stays (teardown_pod's)."""
    from minipod.net import links

    links.attach_veth(host_veth, pause_pid, lease.cidr, lease.gateway, cfg.bridge)
    return Attachment(lease.ip, lease.prefixlen, lease.gateway, cfg.bridge, host_veth)


def teardown_pod(cfg: NetConfig, owner: str, host_veth: str) -> None:
    """Undo setup_pod: the veth, the lease, and the network if this was its last pod.

    Idempotent: a second call (or a call after a half-done setup or a crash) is a no-op.
    """
    _remove_veth(host_veth)
    _release(cfg, owner)


def _remove_veth(name: str) -> None:
    from minipod.net import links

    # If the pause process is already dead its netns is being destroyed and the kernel deletes
    # our end asynchronously (cleanup_net runs from a workqueue). Deleting it ourselves races
    # with that harmlessly; waiting until it is gone means the name is free and the host clean
    # when teardown returns.
    deadline = time.monotonic() + VETH_GONE_TIMEOUT
    while links.link_exists(name):
        links.delete_link(name)
        if not links.link_exists(name):
            return
        if time.monotonic() > deadline:
            raise NetError(f"veth {name} still exists {VETH_GONE_TIMEOUT:.0f} s after deleting it")
        time.sleep(0.01)


def _release(cfg: NetConfig, owner: str) -> None:
    from minipod.net import ipam, links

    ipam.release(cfg.state_dir, owner)
    if not os.path.isdir(cfg.state_dir):
        # Never set up -- or the runtime root was removed under the pods (a damaged state),
        # leases and all: then the bridge and its NAT rules are still ours, and this was their
        # last pod if no veth is left on the bridge.
        if not links.link_exists(cfg.bridge) or links.bridge_ports(cfg.bridge):
            return
        os.makedirs(cfg.state_dir, exist_ok=True)  # for the lock
    with _network_lock(cfg):
        if ipam.leases(cfg.state_dir) or links.bridge_ports(cfg.bridge):
            return  # other pods still use the bridge
        remove_network(cfg)


def remove_network(cfg: NetConfig) -> None:
    """Remove the bridge, the NAT rules and our ip_forward claim (each: gone = done).

    Caller holds the network lock and has checked that no lease remains.
    """
    import threading

    from minipod import explain
    from minipod.net import links, nat

    # The reverse of setup_pod's order, but the bridge and the NAT rules side by side: the
    # bridge's deletion waits ~40 ms in the kernel (unregister_netdevice's RCU grace periods,
    # in the sending thread, without the GIL), the rules' removal as long in iptables
    # processes, and neither needs the other gone first (the rules only name the bridge). No
    # pod can join meanwhile: it would need the lock. (--explain keeps the order it says.)
    failed: list[BaseException] = []

    def delete_bridge() -> None:
        try:
            links.delete_link(cfg.bridge)
        except BaseException as e:  # noqa: BLE001 - raised below, in the caller's thread
            failed.append(e)

    if explain.ON:
        nat.remove(cfg.bridge)
        delete_bridge()
    else:
        bridge = threading.Thread(target=delete_bridge, name="minipod-delete-bridge")
        bridge.start()
        try:
            nat.remove(cfg.bridge)
        finally:
            bridge.join()  # no thread outlives this call: our callers fork
    if failed:
        raise failed[0]
    nat.restore_forwarding(cfg.bridge)
