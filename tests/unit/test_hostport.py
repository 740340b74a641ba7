"""hostPort reservations (net/hostport.py) without iptables: who conflicts with whom, all or
nothing, release; the plan's host_ports; the manifest check for duplicates."""

from __future__ import annotations

import json
import os

import pytest

from minipod.net import hostport
from minipod.net.hostport import HostPortError, Mapping


def m(port=8080, proto="TCP", ip="", field="spec.containers[0].ports[0]", to=80) -> Mapping:
    return Mapping(port, to, proto, ip, field)


@pytest.mark.parametrize("a, b, conflict", [
    (m(), m(), True),
    (m(), m(ip="127.0.0.1"), True),           # 0.0.0.0 covers every address
    (m(ip="0.0.0.0"), m(ip="127.0.0.1"), True),
    (m(ip="127.0.0.1"), m(ip="127.0.0.2"), False),
    (m(ip="127.0.0.1"), m(ip="127.0.0.1"), True),
    (m(), m(proto="UDP"), False),
    (m(), m(port=8081), False),
])
def test_overlaps(a, b, conflict):
    assert a.overlaps(b) is conflict and b.overlaps(a) is conflict


def test_reserve_is_all_or_nothing_and_names_the_holder(tmp_path):
    d = str(tmp_path / "hp")
    hostport.reserve(d, "uid-a", "a", [m(), m(port=53, proto="UDP")])
    with pytest.raises(HostPortError) as e:
        hostport.reserve(d, "uid-b", "b", [m(port=9000), m(port=53, proto="UDP",
                                                            field="spec.containers[1].ports[2]")])
    assert str(e.value) == ("spec.containers[1].ports[2].hostPort: 53/UDP is taken by pod 'a' "
                            "(its 53/UDP)")
    assert sorted(hostport.owners(d)) == ["uid-a"]  # b got nothing, not even 9000
    hostport.reserve(d, "uid-b", "b", [m(port=9000)])
    hostport.reserve(d, "uid-a", "a", [m()])  # again for the same owner: replaced, no conflict
    assert hostport.owners(d, "a")["uid-a"]["ports"] == [
        {"host_port": 8080, "container_port": 80, "protocol": "TCP", "host_ip": "",
         "field": "spec.containers[0].ports[0]"}]
    hostport.release(d, "uid-a")
    hostport.release(d, "uid-a")  # gone = done
    hostport.reserve(d, "uid-c", "c", [m(port=53, proto="UDP")])  # a's ports are free again
    assert sorted(hostport.owners(d)) == ["uid-b", "uid-c"]


def test_release_without_a_record_creates_nothing(tmp_path):
    d = str(tmp_path / "hp")
    hostport.release(d, "uid-x")
    hostport.detach(d, "uid-x")
    assert not os.path.exists(d)


def test_a_damaged_record_does_not_free_its_ports(tmp_path):
    d = tmp_path / "hp"
    d.mkdir()
    (d / "uid-z.json").write_text('{"pod": "z", "ports": [{"host_po')
    with pytest.raises(HostPortError, match=r"uid-z.json is damaged"):
        hostport.reserve(str(d), "uid-a", "a", [m()])


@pytest.mark.parametrize("mapping, message", [
    (m(proto="SCTP"), "spec.containers[0].ports[0].protocol: hostPort over SCTP is not "
                      "supported by minipod (TCP and UDP are)"),
    (m(ip="192.0.2.7"), "spec.containers[0].ports[0].hostIP: 192.0.2.7 is not an address of "
                        "this host"),
    (m(ip="::1"), "spec.containers[0].ports[0].hostIP: ::1: minipod's pod network is IPv4 only"),
])
def test_refused_mappings(tmp_path, mapping, message):
    with pytest.raises(HostPortError) as e:
        hostport.reserve(str(tmp_path / "hp"), "uid-a", "a", [mapping])
    assert str(e.value) == message


def test_a_local_hostip_is_accepted(tmp_path):
    hostport.reserve(str(tmp_path / "hp"), "uid-a", "a", [m(ip="127.0.0.1")])


def test_rules_plan_for_a_pod():
    plan = hostport._plan("br0", "10.1.0.0/16", [("10.1.0.5", m(ip="127.0.0.1")),
                                                 ("10.1.0.6", m(port=53, proto="UDP", to=5353))])
    dnat = {p["chain"]: p for p in plan}["MP-HP-br0"]
    assert dnat["body"] == [
        ["-d", "127.0.0.1/32", "-p", "tcp", "-m", "tcp", "--dport", "8080", "-m", "comment",
         "--comment", "spec.containers[0].ports[0]", "-j", "DNAT", "--to-destination",
         "10.1.0.5:80"],
        ["-p", "udp", "-m", "udp", "--dport", "53", "-m", "comment", "--comment",
         "spec.containers[0].ports[0]", "-j", "DNAT", "--to-destination", "10.1.0.6:5353"]]
    assert [h for h, _, _ in dnat["hooks"]] == ["PREROUTING", "OUTPUT"]
    assert all(len(c) <= 28 for c in hostport.chains("a" * 15).values())  # iptables' limit


def test_duplicate_host_ports_in_a_pod_are_an_error():
    from minipod.spec.spec import Pod

    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {
        "containers": [{"name": "a", "image": "x", "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 81, "hostPort": 8080, "protocol": "UDP"}]},
            {"name": "b", "image": "x", "ports": [{"containerPort": 82, "hostPort": 8080}]}],
        "initContainers": [{"name": "i", "image": "x", "ports": [
            {"containerPort": 83, "hostPort": 8080}]}]}}
    from minipod.spec import spec

    assert spec.check(Pod.model_validate(doc)) == [
        "spec.containers[1].ports[0].hostPort: duplicate value 'TCP//8080' (also "
        "spec.containers[0].ports[0])"]


def test_plan_maps_app_containers_only():
    from minipod.pod.plan import host_ports
    from minipod.spec.spec import Pod

    pod = Pod.model_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w"},
                              "spec": {"containers": [{"name": "a", "image": "x", "ports": [
                                  {"containerPort": 80}, {"containerPort": 81, "hostPort": 0},
                                  {"containerPort": 53, "hostPort": 53, "protocol": "UDP",
                                   "hostIP": "127.0.0.1"}]}],
                                  "initContainers": [{"name": "i", "image": "x", "ports": [
                                      {"containerPort": 83, "hostPort": 8083}]}]}})
    assert host_ports(pod.spec) == [{"host_port": 53, "container_port": 53, "protocol": "UDP",
                                     "host_ip": "127.0.0.1",
                                     "field": "spec.containers[0].ports[2]"}]
    json.dumps(host_ports(pod.spec))  # plain data: it goes into plan.json


def test_a_host_network_pod_forwards_nothing():
    from minipod.pod.plan import host_ports
    from minipod.spec.spec import Pod

    pod = Pod.model_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w"},
                              "spec": {"hostNetwork": True, "containers": [
                                  {"name": "a", "image": "x",
                                   "ports": [{"containerPort": 80, "hostPort": 80}]}]}})
    assert host_ports(pod.spec) == []


def test_hostport_is_no_longer_a_not_implemented_warning():
    from minipod.spec.spec import loads

    res = loads("""
apiVersion: v1
kind: Pod
metadata: {name: w}
spec:
  initContainers:
  - {name: i, image: x, ports: [{containerPort: 81, hostPort: 8081}]}
  containers:
  - {name: a, image: x, ports: [{containerPort: 80, hostPort: 8080, hostIP: 127.0.0.1}]}
""")
    assert [w for w in res.warnings if "host" in w] == [
        "<string>: spec.initContainers[0].ports[0].hostPort: not implemented by minipod yet, "
        "ignored"]  # as in Kubernetes, an init container's hostPort maps nothing
