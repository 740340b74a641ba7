"""IP address management with CNI host-local semantics: one file per leased address.

A network's lease directory (e.g. /run/minipod/networks/minipod0) holds

    10.244.0.2            a lease: created O_EXCL, mode 0600, content "<owner>\\r\\n<ifname>"
    last_reserved_ip.0    the address handed out last: allocation goes round-robin from there,
                          so a just-released address is not reused at once (a peer that still
                          has the old pod's ARP entry or connection would reach the new pod)
    lock                  every allocate/release holds flock on it

This is the layout of containernetworking/plugins' host-local, so `ls` on the directory tells
you who holds what, and the files survive a crash of minipod (the next `rm` releases them).
The gateway is network+1 and never leased; the first lease is network+2; neither the network
nor the broadcast address is ever leased.

Pure file operations, no pyroute2: safe to import anywhere.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from minipod.net import NetError
from minipod.kernel.lock import flock

LOCK = "lock"
LAST_RESERVED = "last_reserved_ip.0"


class IPAMError(NetError):
    """No address can be leased (exhausted, bad subnet, unreadable lease directory)."""


@dataclass(frozen=True)
class Lease:
    ip: str
    prefixlen: int
    gateway: str

    @property
    def cidr(self) -> str:
        """'10.244.0.2/16': the form an interface address is written in."""
        return f"{self.ip}/{self.prefixlen}"


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    """'10.244.0.0/16' -> network; host bits set or IPv6 are errors (they are typos here)."""
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as e:
        raise IPAMError(f"subnet {subnet!r}: {e}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise IPAMError(f"subnet {subnet}: only IPv4 subnets are supported")
    if net.prefixlen > 30:
        raise IPAMError(f"subnet {subnet}: too small (a /30 is the smallest: gateway + 1 pod)")
    return net


def gateway(subnet: str) -> str:
    """The bridge's address: the first host of the subnet."""
    return str(parse_subnet(subnet).network_address + 1)


def allocate(state_dir: str, subnet: str, owner: str, ifname: str = "eth0") -> Lease:
    """Lease a free address of `subnet` to `owner`; the owner's existing lease if it has one."""
    net = parse_subnet(subnet)
    if not owner or "\n" in owner or "\r" in owner:
        raise IPAMError(f"lease owner {owner!r}: must be a non-empty single line")
    gw = str(net.network_address + 1)
    with flock(os.path.join(state_dir, LOCK)):
        held = _read_leases(state_dir)
        for ip, who in held.items():
            # Idempotent: a retried setup gets the same address, never a second one.
            if who == owner and ipaddress.ip_address(ip) in net:
                return Lease(ip, net.prefixlen, gw)

        first = int(net.network_address) + 2
        last = int(net.broadcast_address) - 1
        size = last - first + 1
        start = first
        prev = _read_last_reserved(state_dir)
        if prev is not None and first <= prev <= last:
            start = prev + 1
        for i in range(size):
            candidate = first + (start - first + i) % size
            ip = str(ipaddress.IPv4Address(candidate))
            if ip in held:
                continue
            if _create_lease(state_dir, ip, f"{owner}\r\n{ifname}"):
                _write_last_reserved(state_dir, ip)
                return Lease(ip, net.prefixlen, gw)
        leased = sum(1 for ip in held if ipaddress.ip_address(ip) in net)
        raise IPAMError(f"no free address in {net} ({leased} leased)")


def release(state_dir: str, owner: str) -> None:
    """Give back every address `owner` holds. Nothing held (or no directory) = done."""
    if not os.path.isdir(state_dir):
        return
    with flock(os.path.join(state_dir, LOCK)):
        for ip, who in _read_leases(state_dir).items():
            if who == owner:
                try:
                    os.unlink(os.path.join(state_dir, ip))
                except FileNotFoundError:
                    pass


def leases(state_dir: str) -> dict[str, str]:
    """{ip: owner} of every lease in the directory ({} when it does not exist)."""
    if not os.path.isdir(state_dir):
        return {}
    with flock(os.path.join(state_dir, LOCK)):
        return _read_leases(state_dir)


def _read_leases(state_dir: str) -> dict[str, str]:
    try:
        names = os.listdir(state_dir)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise IPAMError(f"list leases in {state_dir}: {e.strerror}") from None
    out: dict[str, str] = {}
    for name in names:
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            continue  # lock, last_reserved_ip.0, temp files
        try:
            with open(os.path.join(state_dir, name), encoding="utf-8") as f:
                content = f.read()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise IPAMError(f"read lease {os.path.join(state_dir, name)}: {e.strerror}") from None
        out[name] = content.splitlines()[0].strip() if content else ""
    return out


def _create_lease(state_dir: str, ip: str, content: str) -> bool:
    """O_EXCL create: False if the file exists (a lease we did not see, e.g. written by hand)."""
    path = os.path.join(state_dir, ip)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    except OSError as e:
        raise IPAMError(f"create lease {path}: {e.strerror}") from None
    try:
        os.write(fd, content.encode())
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise IPAMError(f"write lease {path}: {e.strerror}") from None
    os.close(fd)
    return True


def _read_last_reserved(state_dir: str) -> int | None:
    try:
        with open(os.path.join(state_dir, LAST_RESERVED), encoding="ascii") as f:
            return int(ipaddress.IPv4Address(f.read().strip()))
    except (OSError, ValueError):
        return None  # missing or garbage: start from the first address


def _write_last_reserved(state_dir: str, ip: str) -> None:
    # temp + rename: a crash never leaves a half-written file (we hold the lock, so the temp
    # name cannot collide).
    path = os.path.join(state_dir, LAST_RESERVED)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(ip)
        os.replace(tmp, path)
    except OSError as e:
        raise IPAMError(f"write {path}: {e.strerror}") from None
