"""net.remove_network deletes the bridge in a thread while the NAT rules are removed: both
happen, a failure of either reaches the caller, and no thread outlives the call (callers fork)."""

from __future__ import annotations

import threading

import pytest

from minipod import net
from minipod.net import links, nat
from minipod.net.links import LinkError

CFG = net.NetConfig("mpunit0", "10.250.0.0/24", "/nonexistent")


@pytest.fixture
def calls(monkeypatch):
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(links, "delete_link", lambda name: seen.append(("delete", name)))
    monkeypatch.setattr(nat, "remove", lambda bridge: seen.append(("nat", bridge)))
    monkeypatch.setattr(nat, "restore_forwarding", lambda bridge: seen.append(("fwd", bridge)))
    return seen


def test_bridge_and_nat_both_go_then_forwarding(calls):
    before = threading.active_count()
    net.remove_network(CFG)
    assert sorted(calls[:2]) == [("delete", "mpunit0"), ("nat", "mpunit0")]
    assert calls[2] == ("fwd", "mpunit0")  # last, once both are gone
    assert threading.active_count() == before


def test_a_failed_bridge_delete_is_raised_and_nat_still_removed(calls, monkeypatch):
    def fail(name):
        raise LinkError(f"delete link {name}: Device or resource busy")

    monkeypatch.setattr(links, "delete_link", fail)
    before = threading.active_count()
    with pytest.raises(LinkError, match="delete link mpunit0"):
        net.remove_network(CFG)
    assert calls == [("nat", "mpunit0")]  # forwarding stays claimed: a retry finishes it
    assert threading.active_count() == before


def test_a_failed_nat_removal_waits_for_the_bridge(calls, monkeypatch):
    def fail(bridge):
        raise nat.NatError("iptables-restore: exit 4")

    monkeypatch.setattr(nat, "remove", fail)
    before = threading.active_count()
    with pytest.raises(nat.NatError):
        net.remove_network(CFG)
    assert calls == [("delete", "mpunit0")]
    assert threading.active_count() == before
