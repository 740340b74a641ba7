"""The plan: kubelet arithmetic and naming, computed without touching the host."""

from __future__ import annotations

import pytest

from minipod.config import Config
from minipod.images.store import Image
from minipod.pod import plan
from minipod.spec import spec


class FakeStore:
    def __init__(self, cfg: dict | None = None):
        self.cfg = cfg or {"Entrypoint": ["/entry"], "Cmd": ["serve", "--port=80"],
                           "Env": ["PATH=/usr/bin:/bin", "LANG=C"], "WorkingDir": "/srv",
                           "StopSignal": "SIGQUIT"}

    def resolve(self, ref: str) -> Image:
        return Image(ref=f"docker.io/library/{ref}", digest="sha256:" + "0" * 64,
                     layers=["/l/1", "/l/2"], config=self.cfg)


def build(text: str, store=None, **cfg):
    res = spec.loads(text)
    return plan.build(res.pods[0], Config(root="/r", data_root="/d", **cfg),
                      store or FakeStore(), "pod.yaml")


POD = """
apiVersion: v1
kind: Pod
metadata: {name: web-1}
spec:
  containers:
  - name: app
    image: img
    {extra}
"""


def one(extra: str = "", store=None):
    return build(POD.replace("{extra}", extra), store).containers[0]


@pytest.mark.parametrize("extra,argv", [
    ("", ["/entry", "serve", "--port=80"]),  # image Entrypoint + Cmd
    ("command: [sh]", ["sh"]),  # command drops the image's Cmd too
    ("args: [x, y]", ["/entry", "x", "y"]),  # args replace Cmd only
    ("command: [sh, -c]\n    args: [echo hi]", ["sh", "-c", "echo hi"]),
])
def test_argv_against_the_image(extra, argv):
    assert one(extra).argv == argv


def test_env_merge_and_expansion():
    c = one("env:\n    - {name: A, value: one}\n    - {name: B, value: '$(A)-$(LANG)-$$(A)'}\n"
            "    - {name: LANG, value: fr}\n    command: [echo, '$(B)', '$(NOPE)']")
    env = dict(kv.split("=", 1) for kv in c.env)
    # The kubelet expands against the container's own earlier variables, never the image's.
    assert env["B"] == "one-$(LANG)-$(A)"
    assert env["LANG"] == "fr" and env["PATH"] == "/usr/bin:/bin" and env["HOSTNAME"] == "web-1"
    assert c.argv == ["echo", "one-$(LANG)-$(A)", "$(NOPE)"]


def test_defaults_from_the_image():
    c = one()
    assert c.cwd == "/srv" and c.stop_signal == 3  # SIGQUIT
    assert one("workingDir: /w").cwd == "/w"
    store = FakeStore({"Cmd": ["sh"]})
    c = one(store=store)
    assert c.cwd == "/" and dict(kv.split("=", 1) for kv in c.env)["PATH"] == plan.DEFAULT_PATH


def test_names_and_paths():
    p = build(POD.replace("{extra}", ""))
    assert p.pod_cgroup == "minipod.slice/minipod-web_1.slice"
    assert p.sandbox_cgroup == "minipod.slice/minipod-web_1.slice/minipod-web_1.scope"
    assert p.containers[0].cgroup == "minipod.slice/minipod-web_1.slice/minipod-web_1-app.scope"
    assert p.host_veth.startswith("mp-") and len(p.host_veth) == 13
    assert p.run_dir == "/r/pods/web-1" and p.data_dir.startswith("/d/pods/default_web-1_")
    assert p.containers[0].layers == ["/l/1", "/l/2"]
    mounts = {m.target: m for m in p.containers[0].mounts}
    assert mounts["/etc/hosts"].source == "/r/pods/web-1/etc/hosts"


def test_the_pod_mounting_etc_hosts_itself_wins():
    text = POD.replace("{extra}", "volumeMounts: [{name: v, mountPath: /etc/hosts}]") + \
        "  volumes: [{name: v, emptyDir: {}}]\n"
    targets = [m.target for m in build(text).containers[0].mounts]
    assert targets.count("/etc/hosts") == 1 and "/etc/resolv.conf" in targets


RES = """
apiVersion: v1
kind: Pod
metadata: {name: r}
spec:
  containers:
  - name: a
    image: img
    resources: {limits: {memory: 64Mi, cpu: 500m}}
  - name: b
    image: img
    resources: {requests: {cpu: 250m, memory: 32Mi}, limits: {memory: 128Mi, cpu: "1"}}
"""


def test_kubelet_resource_arithmetic():
    p = build(RES)
    a, b = p.containers
    assert a.limits == {"memory_max": 67108864, "cpu_quota_us": 50000, "cpu_shares": 512,
                        "pids_max": None, "devices": "default"}
    assert b.limits["cpu_quota_us"] == 100000 and b.limits["cpu_shares"] == 256
    # Every container has limits: the pod gets their sums.
    assert p.pod_limits["memory_max"] == 67108864 + 134217728
    assert p.pod_limits["cpu_quota_us"] == 150000
    assert p.pod_limits["cpu_shares"] == 768
    assert p.qos_class == "Burstable"
    assert 3 <= b.oom_score_adj <= 999


def test_pod_limit_only_when_every_container_has_one():
    p = build(RES.replace("    resources: {limits: {memory: 64Mi, cpu: 500m}}\n", ""))
    assert p.pod_limits["memory_max"] is None and p.pod_limits["cpu_quota_us"] is None


def test_qos_classes():
    assert build(POD.replace("{extra}", "")).qos_class == "BestEffort"
    g = build(POD.replace("{extra}", "resources: {limits: {memory: 1Gi, cpu: 1}}"))
    assert g.qos_class == "Guaranteed" and g.containers[0].oom_score_adj == -997
    assert build(POD.replace("{extra}", "")).containers[0].oom_score_adj == 1000


def test_oom_score_adj_burstable_formula():
    # 1000 - 1000 * request / capacity, clamped to [3, 999]
    assert plan.oom_score_adj("Burstable", 1 << 30, 4 << 30) == 750
    assert plan.oom_score_adj("Burstable", 4 << 30, 4 << 30) == 3
    assert plan.oom_score_adj("Burstable", 0, 4 << 30) == 999


def test_pids_limit_from_config():
    res = spec.loads(POD.replace("{extra}", ""))
    p = plan.build(res.pods[0], Config(root="/r", data_root="/d", pod_pids_limit=128),
                   FakeStore(), "x")
    assert p.pod_limits["pids_max"] == 128


def test_hosts_file_exactly_as_the_kubelet_writes_it():
    text = plan.hosts_file("10.244.0.5", "web", "", "default",
                           [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}])
    assert text == ("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
                    "::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
                    "fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
                    "10.244.0.5\tweb\n\n# Entries added by HostAliases.\n1.2.3.4\ta\tb\n")
    sub = plan.hosts_file("10.0.0.2", "h", "sub", "ns", [])
    assert sub.endswith("10.0.0.2\th.sub.ns.svc.cluster.local\th\n")


def test_resolv_conf_policies(tmp_path):
    host = tmp_path / "resolv.conf"
    host.write_text("# hi\nnameserver 10.0.0.53\nsearch example.org\noptions ndots:2\n")
    s = spec.loads(POD.replace("{extra}", "") + "  dnsConfig:\n    nameservers: [1.1.1.1]\n"
                   "    searches: [lab.local]\n    options: [{name: ndots, value: '5'}]\n")
    text = plan.resolv_conf(s.pods[0].pod.spec, str(host))
    assert text == ("nameserver 10.0.0.53\nnameserver 1.1.1.1\nsearch example.org lab.local\n"
                    "options ndots:5\n")
    none = spec.loads(POD.replace("{extra}", "") + "  dnsPolicy: None\n  dnsConfig:\n"
                      "    nameservers: [9.9.9.9]\n")
    assert plan.resolv_conf(none.pods[0].pod.spec, str(host)) == "nameserver 9.9.9.9\n"


def test_capabilities_follow_the_security_context():
    c = one("securityContext: {capabilities: {add: [NET_ADMIN], drop: [MKNOD, CAP_KILL]}}")
    assert "NET_ADMIN" in c.caps and "MKNOD" not in c.caps and "KILL" not in c.caps
    assert len(one().caps) == 14
    assert one("securityContext: {capabilities: {drop: [ALL]}}").caps == []
    assert one("securityContext: {allowPrivilegeEscalation: false}").no_new_privs


def test_plan_round_trips_through_json():
    p = build(RES)
    assert plan.PodPlan.from_json(p.to_json()) == p


def test_device_allow_list_per_container_none_at_pod_level():
    p = build(POD.replace("{extra}", ""))
    assert p.containers[0].limits["devices"] == "default"
    assert p.pod_limits["devices"] is None  # the kubelet's SkipDevices for the pod's cgroup
    priv = build(POD.replace("{extra}", "securityContext: {privileged: true}"))
    assert priv.containers[0].limits["devices"] == "allow-all"


# --- host namespaces, the netns name ---------------------------------------------------------

def test_a_pod_gets_its_own_namespaces_and_a_netns_name_by_default():
    p = build(POD.replace("{extra}", ""))
    assert (p.host_network, p.host_pid, p.host_ipc) == (False, False, False)
    assert p.hostname == "web-1"
    assert p.netns == f"/run/netns/minipod-web-1-{p.uid[:8]}"


def test_the_netns_name_follows_the_cgroup_prefix_and_fits_a_file_name():
    p = build(POD.replace("{extra}", "").replace("web-1", "w" * 253),
              cgroup_parent="mpt1.slice")
    name = p.netns.removeprefix("/run/netns/")
    assert name.startswith("mpt1-w") and name.endswith("-" + p.uid[:8])
    assert len(name) <= plan.NAME_MAX


def test_host_namespaces_are_planned():
    import socket

    text = POD.replace("{extra}", "").replace(
        "spec:\n", "spec:\n  hostNetwork: true\n  hostPID: true\n  hostIPC: true\n"
                   "  hostname: ignored\n")
    p = build(text)
    assert (p.host_network, p.host_pid, p.host_ipc) == (True, True, True)
    assert p.netns == ""  # the node's netns is not the pod's to name
    # The node's UTS namespace: its hostname, in HOSTNAME too (the kubelet sets none).
    assert p.hostname == socket.gethostname()
    assert f"HOSTNAME={socket.gethostname()}" in p.containers[0].env


def test_the_plan_of_an_older_minipod_still_loads():
    p = build(POD.replace("{extra}", ""))
    d = p.to_json()
    for k in ("host_network", "host_pid", "host_ipc", "netns"):
        del d[k]
    old = plan.PodPlan.from_json(d)
    assert (old.host_network, old.netns) == (False, "")


def test_a_host_network_pods_hosts_file_is_the_nodes_under_the_kubelets_header():
    text = plan.host_network_hosts_file("127.0.0.1 localhost\n",
                                        [{"ip": "10.1.2.3", "hostnames": ["a", "b"]}])
    assert text == ("# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
                    "\n# Entries added by HostAliases.\n10.1.2.3\ta\tb\n")
