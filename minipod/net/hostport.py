"""hostPort: a port of the host forwarded to a pod, as CNI's portmap plugin does it.

Two halves, both under one lock (<state_dir>/lock, state_dir = <root>/hostports):

**Reservations.** One file per pod, <state_dir>/<owner>.json (owner = the pod's uid):

    {"pod": "web", "ports": [{"host_port": 8080, "protocol": "TCP", "host_ip": "",
     "container_port": 80, "field": "spec.containers[0].ports[0]"}],
     "bridge": "", "subnet": "", "ip": ""}

`reserve` checks every other record and writes ours in one step under the lock, so of two pods
asking for 8080/TCP exactly one gets it. It runs before anything of the pod is created (the
CLI calls it), and the reservation lives until the pod's final teardown (`release`), not only
while it has an IP: a sandbox re-created after pause died must find its ports still its own.
Two mappings conflict as the scheduler's NodePorts filter says: same protocol and port, and
the same hostIP or either one empty/0.0.0.0 (a wildcard covers every address).

**Rules.** `attach` records the pod's IP once its network is up and `detach` clears it before
the network goes; both rebuild the rules of the pod's bridge B (network S) from every record
of B that has an IP:

    nat     -N MP-HP-B                                  the DNATs (portmap's CNI-HOSTPORT-DNAT)
            -A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment minipod:B -j MP-HP-B
            -A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment minipod:B -j MP-HP-B
            -A MP-HP-B [-d HOSTIP/32] -p tcp -m tcp --dport H -m comment --comment POD
                       -j DNAT --to-destination IP:P
            -N MP-HPM-B                                 the SNATs (portmap's CNI-HOSTPORT-MASQ)
            -A POSTROUTING -m conntrack --ctstate DNAT -m comment ... -j MP-HPM-B
            -A MP-HPM-B -s 127.0.0.0/8 -o B -j MASQUERADE       from the host's 127.0.0.1
            -A MP-HPM-B -s S -d S -o B -j MASQUERADE            hairpin: a pod to a hostPort
    filter  -N MP-HPF-B
            -I FORWARD 1 -m comment ... -j MP-HPF-B
            -A MP-HPF-B -o B -m conntrack --ctstate DNAT -j ACCEPT   (a DROP policy, Docker's)
            -N MP-HPI-B
            -I INPUT 1 -m comment ... -j MP-HPI-B
            -A MP-HPI-B -d 127.0.0.0/8 -i B -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT
                        -j DROP
    sysctl  net.ipv4.conf.B.route_localnet = 1

Why these, for `curl 127.0.0.1:H` on the host (the case kubectl users expect to work):
OUTPUT sees locally made packets (PREROUTING does not), so the DNAT must be in both. After the
DNAT the packet leaves through B with source 127.0.0.1, which the kernel drops as a martian
unless route_localnet is set on B; and the pod would answer 127.0.0.1 -- its own loopback --
so the source is rewritten to B's address (MASQUERADE), and conntrack undoes both on the
reply. The same SNAT makes hairpin work (pod A -> hostIP:H -> pod B, where B would answer A
directly and A would drop a reply from an address it never called). portmap marks packets in
its DNAT chain for the SNAT; matching `--ctstate DNAT` in POSTROUTING says the same thing
(this packet's destination was rewritten) without claiming a mark bit another tool may use.

route_localnet instead of a userspace proxy on 127.0.0.1 (docker-proxy): no process per port,
and the rules alone are the whole mapping. Its cost is CVE-2020-8558: with it a pod (which has
CAP_NET_RAW by default) could send frames to B for 127.0.0.1 and reach services bound to the
host's loopback. MP-HPI-B drops exactly that, as kube-proxy's KUBE-FIREWALL does: anything for
127/8 arriving on B that is not a reply (our own un-NATed replies are ESTABLISHED). The sysctl
and that rule exist together, only while B has a hostPort; the last one sets the sysctl back.

Everything but the jumps lives in our chains, rebuilt in one iptables-restore transaction (see
nat.py), so removal is exact and a half-built chain is never seen. Chain names: 7 + 15 = 22.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
from dataclasses import asdict, dataclass

from minipod.kernel.lock import flock
from minipod.net import NetError, iptables
from minipod.net.nat import NatError

LOCK = "lock"
LOCALNET = "/proc/sys/net/ipv4/conf/{}/route_localnet"
PROTOCOLS = ("TCP", "UDP")
WILDCARD = ("", "0.0.0.0")


class HostPortError(NetError):
    """A hostPort cannot be had (taken, a hostIP that is not ours) or its record is damaged."""


@dataclass(frozen=True)
class Mapping:
    host_port: int
    container_port: int
    protocol: str = "TCP"
    host_ip: str = ""
    field: str = ""  # where the manifest asks for it, e.g. spec.containers[0].ports[0]

    def describe(self) -> str:
        where = "" if self.host_ip in WILDCARD else f" on {self.host_ip}"
        return f"{self.host_port}/{self.protocol}{where}"

    def overlaps(self, other: "Mapping") -> bool:
        return (self.protocol == other.protocol and self.host_port == other.host_port
                and (self.host_ip == other.host_ip or self.host_ip in WILDCARD
                     or other.host_ip in WILDCARD))


def chains(bridge: str) -> dict[str, str]:
    return {"dnat": f"MP-HP-{bridge}", "masq": f"MP-HPM-{bridge}",
            "forward": f"MP-HPF-{bridge}", "input": f"MP-HPI-{bridge}"}


# --- reservations ---------------------------------------------------------------------------------

def reserve(state_dir: str, owner: str, pod: str, mappings: list[Mapping]) -> None:
    """Reserve every mapping for `owner` (pod name `pod`), or none: HostPortError names the
    first one taken and its holder. Again for the same owner: replaces its reservation."""
    _check_owner(owner)
    for m in mappings:
        _check_mapping(m)
    with flock(os.path.join(state_dir, LOCK)):
        for other, rec in _records(state_dir).items():
            if other == owner:
                continue
            for theirs in _mappings(rec):
                for m in mappings:
                    if m.overlaps(theirs):
                        raise HostPortError(
                            f"{m.field or 'hostPort'}.hostPort: {m.describe()} is taken by pod "
                            f"{rec.get('pod', '?')!r} (its {theirs.describe()})")
        _write(state_dir, owner, {"pod": pod, "ports": [asdict(m) for m in mappings],
                                  "bridge": "", "subnet": "", "ip": ""})


def release(state_dir: str, owner: str) -> None:
    """Give back `owner`'s ports, removing its rules first. Nothing held = done (no lock file
    is created for a pod that never had a hostPort)."""
    if not os.path.exists(_path(state_dir, owner)):
        return
    with flock(os.path.join(state_dir, LOCK)):
        recs = _records(state_dir)
        rec = recs.pop(owner, None)
        try:
            os.unlink(_path(state_dir, owner))
        except FileNotFoundError:
            pass
        if rec and rec.get("bridge"):
            _sync(rec["bridge"], rec.get("subnet", ""), recs)


def owners(state_dir: str, pod: str | None = None) -> dict[str, dict]:
    """{owner: record}, only those of pod name `pod` if given ({} without a directory)."""
    if not os.path.isdir(state_dir):
        return {}
    with flock(os.path.join(state_dir, LOCK)):
        return {o: r for o, r in _records(state_dir).items() if pod is None or r.get("pod") == pod}


# --- rules ------------------------------------------------------------------------------------------

def attach(state_dir: str, owner: str, bridge: str, subnet: str, ip: str) -> None:
    """Forward `owner`'s reserved ports to `ip` (its pod's address on `bridge`)."""
    with flock(os.path.join(state_dir, LOCK)):
        recs = _records(state_dir)
        rec = recs.get(owner)
        if rec is None:
            raise HostPortError(f"no hostPort reservation for pod {owner} in {state_dir}")
        rec.update(bridge=bridge, subnet=str(ipaddress.ip_network(subnet)), ip=ip)
        _write(state_dir, owner, rec)
        _sync(bridge, rec["subnet"], recs)


def detach(state_dir: str, owner: str) -> None:
    """Remove `owner`'s rules (its network is about to go); the reservation stays."""
    if not os.path.exists(_path(state_dir, owner)):
        return
    with flock(os.path.join(state_dir, LOCK)):
        recs = _records(state_dir)
        rec = recs.get(owner)
        if not rec or not rec.get("bridge"):
            return
        bridge, subnet = rec["bridge"], rec.get("subnet", "")
        rec.update(bridge="", subnet="", ip="")
        _write(state_dir, owner, rec)
        _sync(bridge, subnet, recs)


def _plan(bridge: str, subnet: str, active: list[tuple[str, Mapping]]) -> list[dict]:
    """Our chains for `bridge`: [{table, chain, hooks: [(hook, insert, match)], body}]."""
    c = chains(bridge)
    tag = ["-m", "comment", "--comment", f"minipod:{bridge}"]
    local = ["-m", "addrtype", "--dst-type", "LOCAL", *tag]
    dnat = []
    for ip, m in active:
        proto = m.protocol.lower()
        dest = [] if m.host_ip in WILDCARD else ["-d", f"{m.host_ip}/32"]
        dnat.append([*dest, "-p", proto, "-m", proto, "--dport", str(m.host_port),
                     "-m", "comment", "--comment", m.field or "hostPort",
                     "-j", "DNAT", "--to-destination", f"{ip}:{m.container_port}"])
    return [
        {"table": "nat", "chain": c["dnat"], "body": dnat,
         "hooks": [("PREROUTING", False, local), ("OUTPUT", False, local)]},
        {"table": "nat", "chain": c["masq"],
         "hooks": [("POSTROUTING", False, ["-m", "conntrack", "--ctstate", "DNAT", *tag])],
         "body": [["-s", "127.0.0.0/8", "-o", bridge, "-j", "MASQUERADE"],
                  ["-s", subnet, "-d", subnet, "-o", bridge, "-j", "MASQUERADE"]]},
        {"table": "filter", "chain": c["forward"], "hooks": [("FORWARD", True, tag)],
         "body": [["-o", bridge, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"]]},
        {"table": "filter", "chain": c["input"], "hooks": [("INPUT", True, tag)],
         "body": [["-d", "127.0.0.0/8", "-i", bridge, "-m", "conntrack", "!", "--ctstate",
                   "RELATED,ESTABLISHED,DNAT", "-j", "DROP"]]},
    ]


def _sync(bridge: str, subnet: str, recs: dict[str, dict]) -> None:
    """Make `bridge`'s rules say exactly what `recs` say. Caller holds the lock."""
    active = [(r["ip"], m) for _, r in sorted(recs.items())
              if r.get("bridge") == bridge and r.get("ip") for m in _mappings(r)]
    plan = _plan(bridge, subnet, active)
    listed = iptables.rules_of(["nat", "filter"])
    script: list[str] = []
    for table in ("nat", "filter"):
        rules, section = listed[table], []
        for p in (p for p in plan if p["table"] == table):
            chain = p["chain"]
            if not active:  # nothing forwarded any more: every trace goes
                section += iptables.drop(rules, chain, [hook for hook, _, _ in p["hooks"]])
                continue
            section += iptables.fill(rules, chain, p["body"])
            for hook, insert, match in p["hooks"]:
                section += iptables.hook_in(rules, hook, chain, match, insert)
        if section:
            script += [f"*{table}", *section, "COMMIT"]
    # route_localnet on before the DNATs can send 127.0.0.1 through B, off after they are gone.
    if active:
        _localnet(bridge, "1")
    if script:
        iptables.restore(script)
    if not active:
        _localnet(bridge, _default_localnet())


def _localnet(bridge: str, value: str) -> None:
    path = LOCALNET.format(bridge)
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except FileNotFoundError:
        if value == "1":
            raise HostPortError(f"bridge {bridge} does not exist (write {path})") from None
        # the bridge went with the last pod: nothing to put back
    except OSError as e:
        raise NatError(f"write {value!r} to {path}: {e.strerror}") from None


def _default_localnet() -> str:
    # The value a new interface gets: what B had before we set it.
    try:
        with open(LOCALNET.format("default"), encoding="ascii") as f:
            return f.read().strip() or "0"
    except OSError:
        return "0"


# --- records -------------------------------------------------------------------------------------

def _check_owner(owner: str) -> None:
    if not owner or "/" in owner or owner.startswith("."):
        raise HostPortError(f"hostPort owner {owner!r}: must be a plain name")


def _check_mapping(m: Mapping) -> None:
    f = m.field or "hostPort"
    if m.protocol not in PROTOCOLS:
        raise HostPortError(f"{f}.protocol: hostPort over {m.protocol} is not supported by "
                            f"minipod ({' and '.join(PROTOCOLS)} are)")
    if not (1 <= m.host_port <= 65535 and 1 <= m.container_port <= 65535):
        raise HostPortError(f"{f}.hostPort: {m.host_port} -> {m.container_port}: out of range")
    if m.host_ip in WILDCARD:
        return
    try:
        addr = ipaddress.ip_address(m.host_ip)
    except ValueError:
        raise HostPortError(f"{f}.hostIP: {m.host_ip!r} is not an IP address") from None
    if addr.version != 4:
        raise HostPortError(f"{f}.hostIP: {m.host_ip}: minipod's pod network is IPv4 only")
    # A DNAT for an address the host does not have would never match: say so instead. Binding
    # a socket to it is the kernel's own answer to "is this address mine?".
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((m.host_ip, 0))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise HostPortError(f"{f}.hostIP: {m.host_ip} is not an address of this "
                                    "host") from None
            raise


def _path(state_dir: str, owner: str) -> str:
    return os.path.join(state_dir, f"{owner}.json")


def _mappings(rec: dict) -> list[Mapping]:
    return [Mapping(**m) for m in rec.get("ports") or []]


def _records(state_dir: str) -> dict[str, dict]:
    try:
        names = os.listdir(state_dir)
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        if not name.endswith(".json"):
            continue  # the lock, temp files
        path = os.path.join(state_dir, name)
        try:
            with open(path, encoding="utf-8") as f:
                rec = json.load(f)
            _mappings(rec)  # a record we cannot read must not silently free its ports
        except FileNotFoundError:
            continue
        except (OSError, ValueError, TypeError) as e:
            raise HostPortError(f"hostPort record {path} is damaged ({e}): remove the pod "
                                f"that owns it (minipod rm -f), or the file") from None
        out[name[:-len(".json")]] = rec
    return out


def _write(state_dir: str, owner: str, rec: dict) -> None:
    path = _path(state_dir, owner)
    tmp = path + ".tmp"  # we hold the lock: the name cannot collide
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(rec, f)
        os.replace(tmp, path)
    except OSError as e:
        raise HostPortError(f"write {path}: {e.strerror}") from None
