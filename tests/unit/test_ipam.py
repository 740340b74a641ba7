"""IPAM: host-local semantics on a plain directory (no root, no kernel state)."""

from __future__ import annotations

import multiprocessing
import os
import stat

import pytest

from minipod.net import ipam
from minipod.net.ipam import IPAMError


@pytest.fixture
def leases_dir(tmp_path):
    return str(tmp_path / "networks" / "mpt0")


def test_first_lease_is_network_plus_two_gateway_plus_one(leases_dir):
    lease = ipam.allocate(leases_dir, "10.250.3.0/24", "pod-a")
    assert lease == ipam.Lease("10.250.3.2", 24, "10.250.3.1")
    assert lease.cidr == "10.250.3.2/24"
    assert ipam.gateway("10.250.3.0/24") == "10.250.3.1"


def test_lease_file_is_host_local_format(leases_dir):
    ipam.allocate(leases_dir, "10.250.3.0/24", "pod-a")
    path = os.path.join(leases_dir, "10.250.3.2")
    with open(path, "rb") as f:
        assert f.read() == b"pod-a\r\neth0"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(os.path.join(leases_dir, "last_reserved_ip.0")) as f:
        assert f.read() == "10.250.3.2"
    assert os.path.exists(os.path.join(leases_dir, "lock"))


def test_allocate_is_idempotent_per_owner(leases_dir):
    first = ipam.allocate(leases_dir, "10.250.3.0/24", "pod-a")
    again = ipam.allocate(leases_dir, "10.250.3.0/24", "pod-a")
    assert again == first
    assert ipam.leases(leases_dir) == {"10.250.3.2": "pod-a"}


def test_exhaustion_names_subnet_and_count(leases_dir):
    # /29: .0 network, .1 gateway, .7 broadcast -> .2-.6 are the 5 leasable addresses.
    got = [ipam.allocate(leases_dir, "10.250.4.0/29", f"pod-{i}").ip for i in range(5)]
    assert got == [f"10.250.4.{i}" for i in range(2, 7)]
    with pytest.raises(IPAMError, match=r"^no free address in 10\.250\.4\.0/29 \(5 leased\)$"):
        ipam.allocate(leases_dir, "10.250.4.0/29", "pod-x")
    # The failed attempt leased nothing.
    assert len(ipam.leases(leases_dir)) == 5


def test_never_leases_network_gateway_or_broadcast(leases_dir):
    got = {ipam.allocate(leases_dir, "10.250.5.0/30", "only").ip}
    assert got == {"10.250.5.2"}
    with pytest.raises(IPAMError, match="no free address in 10.250.5.0/30"):
        ipam.allocate(leases_dir, "10.250.5.0/30", "second")


def test_release_frees_the_address_for_reuse(leases_dir):
    subnet = "10.250.6.0/29"
    for i in range(5):
        ipam.allocate(leases_dir, subnet, f"pod-{i}")
    ipam.release(leases_dir, "pod-2")  # held 10.250.6.4
    assert "10.250.6.4" not in ipam.leases(leases_dir)
    assert ipam.allocate(leases_dir, subnet, "pod-new").ip == "10.250.6.4"


def test_release_is_idempotent(leases_dir, tmp_path):
    ipam.allocate(leases_dir, "10.250.3.0/24", "pod-a")
    ipam.release(leases_dir, "pod-a")
    ipam.release(leases_dir, "pod-a")
    ipam.release(leases_dir, "never-had-one")
    assert ipam.leases(leases_dir) == {}
    missing = str(tmp_path / "does-not-exist")
    ipam.release(missing, "pod-a")
    assert ipam.leases(missing) == {}
    assert not os.path.exists(missing)  # release/leases never create the directory


def test_round_robin_does_not_reuse_a_just_released_address(leases_dir):
    subnet = "10.250.7.0/24"
    a = ipam.allocate(leases_dir, subnet, "pod-a").ip
    ipam.release(leases_dir, "pod-a")
    b = ipam.allocate(leases_dir, subnet, "pod-b").ip
    assert (a, b) == ("10.250.7.2", "10.250.7.3")
    ipam.release(leases_dir, "pod-b")
    assert ipam.allocate(leases_dir, subnet, "pod-c").ip == "10.250.7.4"


def test_round_robin_wraps_to_the_first_free_address(leases_dir):
    subnet = "10.250.8.0/29"  # .2 - .6
    for i in range(5):
        ipam.allocate(leases_dir, subnet, f"pod-{i}")
    ipam.release(leases_dir, "pod-1")  # .3
    ipam.release(leases_dir, "pod-4")  # .6 (also the last reserved)
    # After .6 the search wraps to .2 (taken) and finds .3 before coming back to .6.
    assert ipam.allocate(leases_dir, subnet, "pod-x").ip == "10.250.8.3"
    assert ipam.allocate(leases_dir, subnet, "pod-y").ip == "10.250.8.6"


def test_foreign_files_and_hand_made_leases_are_respected(leases_dir):
    os.makedirs(leases_dir)
    with open(os.path.join(leases_dir, "10.250.9.2"), "w") as f:
        f.write("someone-else\r\neth0")
    with open(os.path.join(leases_dir, "README"), "w") as f:
        f.write("not a lease")
    assert ipam.allocate(leases_dir, "10.250.9.0/24", "pod-a").ip == "10.250.9.3"
    assert ipam.leases(leases_dir) == {"10.250.9.2": "someone-else", "10.250.9.3": "pod-a"}


def test_garbage_last_reserved_restarts_at_first(leases_dir):
    os.makedirs(leases_dir)
    with open(os.path.join(leases_dir, "last_reserved_ip.0"), "w") as f:
        f.write("not an ip")
    assert ipam.allocate(leases_dir, "10.250.10.0/24", "pod-a").ip == "10.250.10.2"


@pytest.mark.parametrize(
    "subnet, message",
    [
        ("10.250.0.1/24", "has host bits set"),
        ("fd00::/64", "only IPv4"),
        ("10.250.0.0/31", "too small"),
        ("banana", "does not appear to be"),
    ],
)
def test_bad_subnets_are_refused(leases_dir, subnet, message):
    with pytest.raises(IPAMError, match=message):
        ipam.allocate(leases_dir, subnet, "pod-a")


def test_owner_must_be_one_line(leases_dir):
    with pytest.raises(IPAMError, match="single line"):
        ipam.allocate(leases_dir, "10.250.3.0/24", "a\r\nb")


def _worker(leases_dir, subnet, owner, barrier, results):
    barrier.wait()
    try:
        results.put((owner, ipam.allocate(leases_dir, subnet, owner).ip))
    except Exception as e:  # noqa: BLE001 - reported to the test
        results.put((owner, f"error: {e}"))


def test_concurrent_allocations_get_distinct_addresses(leases_dir):
    ctx = multiprocessing.get_context("fork")
    n = 12
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    # /28 has 13 leasable addresses: all 12 fit, with little slack, so collisions would show.
    procs = [
        ctx.Process(target=_worker, args=(leases_dir, "10.250.11.0/28", f"pod-{i}", barrier, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert not [v for v in got.values() if v.startswith("error")], got
    assert len(set(got.values())) == n
    on_disk = ipam.leases(leases_dir)
    assert on_disk == {ip: owner for owner, ip in got.items()}


def test_concurrent_allocations_past_exhaustion(leases_dir):
    ctx = multiprocessing.get_context("fork")
    n = 8
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [  # /29: 5 addresses for 8 pods -> exactly 5 win, 3 get the exhaustion error
        ctx.Process(target=_worker, args=(leases_dir, "10.250.12.0/29", f"pod-{i}", barrier, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    ips = [v for v in got.values() if not v.startswith("error")]
    errors = [v for v in got.values() if v.startswith("error")]
    assert sorted(ips) == [f"10.250.12.{i}" for i in range(2, 7)]
    assert len(errors) == 3 and all("no free address in 10.250.12.0/29" in e for e in errors)


def test_concurrent_allocations_for_one_owner_get_one_lease(leases_dir):
    # The owner check and the create must be one critical section (the flock): O_EXCL alone
    # keeps addresses distinct but would give a retried owner a second address.
    ctx = multiprocessing.get_context("fork")
    n = 8
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(leases_dir, "10.250.13.0/24", "same-pod", barrier, results))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=60)[1] for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert len(set(got)) == 1 and not got[0].startswith("error"), got
    assert ipam.leases(leases_dir) == {got[0]: "same-pod"}
