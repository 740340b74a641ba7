"""Egress for a pod network: forwarding + MASQUERADE, in iptables chains minipod owns.

For bridge B with subnet S minipod adds exactly this (what `iptables -S` prints):

    nat     -N MP-NAT-B
            -A POSTROUTING -s S -m comment --comment "minipod:B" -j MP-NAT-B
            -A MP-NAT-B -d S -j RETURN                  pod to pod: keep the source address
            -A MP-NAT-B ! -d 224.0.0.0/4 -j MASQUERADE  leaving the subnet: host's address
    filter  -N MP-FWD-B
            -I FORWARD 1 -m comment --comment "minipod:B" -j MP-FWD-B
            -A MP-FWD-B -i B -j ACCEPT                  from pods: anywhere
            -A MP-FWD-B -o B -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT   replies

Everything except the two jumps lives in our chains, so removal is exact: delete the jumps
(found by their comment, so a changed subnet setting cannot orphan them), flush and delete the
chains. The FORWARD jump goes first because hosts with Docker set the FORWARD policy to DROP.
Chain names are at most 7 + 15 = 22 characters (iptables allows 28).

Changes go through one `iptables-restore --noflush` transaction (iptables.py says why).

ip_forward is host-wide and every minipod network needs it, so it is reference-counted across
networks in FORWARD_STATE: the value before the first network set it is recorded once, each
network holds a file, and the last one to leave restores the recorded value.
"""

from __future__ import annotations

import os

from minipod.net import NetError, iptables
from minipod.kernel.lock import flock

IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
FORWARD_STATE = "/run/minipod-forwarding"
MULTICAST = "224.0.0.0/4"


class NatError(NetError):
    """An iptables command failed or the ip_forward sysctl could not be written."""


def chains(bridge: str) -> tuple[str, str]:
    """(nat chain, filter chain) owned by the network of `bridge`."""
    return f"MP-NAT-{bridge}", f"MP-FWD-{bridge}"


def comment(bridge: str) -> str:
    return f"minipod:{bridge}"


def _plan(bridge: str, subnet: str) -> dict[str, dict]:
    nat_chain, fwd_chain = chains(bridge)
    tag = ["-m", "comment", "--comment", comment(bridge)]
    return {
        "nat": {
            "hook": "POSTROUTING",
            "chain": nat_chain,
            "match": ["-s", subnet, *tag],
            "insert": False,  # CNI's ipMasq appends too: explicit host SNAT rules stay first
            "body": [
                ["-d", subnet, "-j", "RETURN"],
                ["!", "-d", MULTICAST, "-j", "MASQUERADE"],
            ],
        },
        "filter": {
            "hook": "FORWARD",
            "chain": fwd_chain,
            "match": tag,
            "insert": True,
            "body": [
                ["-i", bridge, "-j", "ACCEPT"],
                ["-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                 "-j", "ACCEPT"],
            ],
        },
    }


def ensure(bridge: str, subnet: str) -> None:
    """Make the rules above exist, exactly once and in order. Cheap when they already do:
    two `iptables -S` calls (~3 ms, side by side), no change."""
    import ipaddress

    subnet = str(ipaddress.ip_network(subnet))  # the form iptables prints, for the comparison
    script: list[str] = []
    plan = _plan(bridge, subnet)
    listed = iptables.rules_of(list(plan))
    for table, p in plan.items():
        rules = listed[table]
        section = iptables.fill(rules, p["chain"], p["body"])
        section += iptables.hook_in(rules, p["hook"], p["chain"], p["match"], p["insert"])
        if section:
            script += [f"*{table}", *section, "COMMIT"]
    if script:
        iptables.restore(script)
        from minipod import explain

        if explain.ON:
            rules = [ln for ln in script if ln.startswith("-")]
            explain.say(f"egress NAT for {subnet} via {bridge}: {len(rules)} iptables rules",
                        "iptables-restore --noflush (netfilter setsockopt)",
                        "; ".join(f"iptables -t {t} {ln}" for t, ln in _tabled(script)),
                        rules=rules)


def _tabled(script: list[str]) -> list[tuple[str, str]]:
    out, table = [], ""
    for ln in script:
        if ln.startswith("*"):
            table = ln[1:]
        elif ln.startswith(":"):
            out.append((table, f"-N {ln[1:].split()[0]}"))
        elif ln.startswith("-"):
            out.append((table, ln))
    return out


def remove(bridge: str) -> None:
    """Remove the jumps and chains of `bridge`'s network. Already gone = done."""
    script: list[str] = []
    listed = iptables.rules_of(["nat", "filter"])
    for table, (hook, chain) in (
        ("nat", ("POSTROUTING", chains(bridge)[0])),
        ("filter", ("FORWARD", chains(bridge)[1])),
    ):
        section = iptables.drop(listed[table], chain, [hook])
        if section:
            script += [f"*{table}", *section, "COMMIT"]
    if script:
        iptables.restore(script)


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def _read_sysctl(path: str) -> str:
    try:
        return _read(path)
    except OSError as e:
        raise NatError(f"read {path}: {e.strerror}") from None


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except OSError as e:
        raise NatError(f"write {value!r} to {path}: {e.strerror}") from None


def enable_forwarding(holder: str, state: str = FORWARD_STATE, sysctl: str = IP_FORWARD) -> None:
    """Set ip_forward=1 on behalf of `holder` (a network: its bridge name).

    The value found before the first holder is recorded once in <state>/original.
    """
    if "/" in holder or not holder:
        raise NatError(f"forwarding holder {holder!r}: must be a plain name")
    with flock(os.path.join(state, "lock")):
        original = os.path.join(state, "original")
        current = _read_sysctl(sysctl)
        if not os.path.exists(original):
            _write(original + ".tmp", current)
            os.replace(original + ".tmp", original)
        _write(os.path.join(state, f"holder.{holder}"), "")
        if current != "1":
            _write(sysctl, "1")
            from minipod import explain

            if explain.ON:
                explain.say("IPv4 forwarding on", f"write(open({sysctl!r}), '1')",
                            f"sysctl -w net.ipv4.ip_forward=1")


def restore_forwarding(holder: str, state: str = FORWARD_STATE, sysctl: str = IP_FORWARD) -> None:
    """Drop `holder`'s claim; the last holder puts back the recorded value and removes
    `state` entirely. Not a holder = done."""
    if not os.path.isdir(state):
        return
    lock = os.path.join(state, "lock")
    with flock(lock):
        try:
            os.unlink(os.path.join(state, f"holder.{holder}"))
        except FileNotFoundError:
            pass
        try:
            names = os.listdir(state)
        except FileNotFoundError:
            return
        if any(n.startswith("holder.") for n in names):
            return  # another network still routes through us
        original = os.path.join(state, "original")
        try:
            value = _read(original)
        except FileNotFoundError:
            value = None
        except OSError as e:
            raise NatError(f"read {original}: {e.strerror}") from None
        # Only undo our own change: if someone else set another value since, theirs stands.
        if value is not None and value != "1" and _read_sysctl(sysctl) == "1":
            _write(sysctl, value)
        # Safe while we hold the lock: flock() re-checks the inode after locking.
        for name in names:
            try:
                os.unlink(os.path.join(state, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(state)
        except OSError:
            pass  # someone is creating a new lock file: they keep the directory
