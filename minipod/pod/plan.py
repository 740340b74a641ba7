"""Spec -> plan: every name, path, limit and argv a pod needs, computed without touching the host.

The plan is plain data (JSON): the CLI builds it from the validated manifest, `run --dry-run`
prints it, unit tests check it, and the supervisor applies it without importing pydantic.
The resource arithmetic follows the kubelet (pkg/kubelet/cm, pkg/kubelet/qos); the argv/env rules
follow the kubelet and containerd (command/args against the image's Entrypoint/Cmd).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass, field

from minipod.cgroups import convert
from minipod.pod.security import ContainerSecurity, PodSecurity, pod_security
from minipod.spec.expand import expand, expand_env

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHM_SIZE = 64 * 1024 * 1024  # containerd's default /dev/shm for a sandbox


@dataclass
class Mount:
    source: str
    target: str  # absolute path inside the container
    readonly: bool = False
    kind: str = "bind"  # bind | file (a file bind, created empty in the rootfs if missing)
    source_root: str = ""  # a volume's directory: `source` is resolved inside it (subPath)


@dataclass
class ContainerPlan:
    name: str
    image: str              # the reference as the user wrote it
    image_ref: str          # normalized (docker.io/library/busybox:latest)
    image_digest: str
    layers: list[str]       # unpacked layer dirs, bottom-first
    argv: list[str]
    env: list[str]          # "K=V", final order
    cwd: str
    user: str               # "uid[:gid]" or a name to resolve in the image's /etc/passwd
    caps: list[str]
    no_new_privs: bool
    privileged: bool
    readonly_rootfs: bool
    mounts: list[Mount]
    cgroup: str
    limits: dict            # minipod.cgroups.Limits fields
    oom_score_adj: int
    stop_signal: int
    rootfs: str             # mount point (runtime dir; the overlay only exists in the container)
    upper: str
    work: str
    log_dir: str
    init: bool = False      # an init container (run to completion before the app containers)
    sidecar: bool = False   # an init container with restartPolicy Always
    spec: dict = field(default_factory=dict)  # the container's manifest, for probes/hooks
    security: ContainerSecurity = field(default_factory=ContainerSecurity)  # pod/security.py
    # stdio as containerd gives it: tty -> a pty (the supervisor holds the master); stdin ->
    # kept open for attach (a pipe, or the pty); neither -> /dev/null. kubelet/attach.py.
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False

    @classmethod
    def from_json(cls, d: dict) -> "ContainerPlan":
        return cls(**{**d, "mounts": [Mount(**m) for m in d["mounts"]],
                      "security": ContainerSecurity.from_json(d.get("security"))})


def hostport_dir(root: str) -> str:
    """<root>/hostports: the hostPort reservations of every pod of this runtime root."""
    return os.path.join(root, "hostports")


def sandboxes_dir(root: str) -> str:
    return os.path.join(root, "sandboxes")


def pin_dir(root: str, pod: str) -> str:
    """<root>/sandboxes/<pod>: where a pinned pod's namespaces are pinned (pod names are unique
    on the host, as its run directory <root>/pods/<pod> is)."""
    return os.path.join(sandboxes_dir(root), pod)


@dataclass
class PodPlan:
    name: str
    namespace: str
    uid: str
    created: float
    hostname: str
    subdomain: str
    share_pid: bool
    restart_policy: str
    grace_seconds: int
    qos_class: str
    run_dir: str
    data_dir: str
    cgroup_parent: str
    pod_cgroup: str
    sandbox_cgroup: str
    pod_limits: dict
    bridge: str
    subnet: str
    net_state_dir: str
    host_veth: str
    shm_size: int
    resolv_conf: str        # content of the pod's /etc/resolv.conf
    host_aliases: list[dict]
    containers: list[ContainerPlan]
    init_containers: list[ContainerPlan]
    labels: dict
    annotations: dict
    manifest: dict          # the document as written (for `get -o yaml`)
    host_ports: list[dict] = field(default_factory=list)  # net.hostport.Mapping fields
    volumes: list = field(default_factory=list)   # minipod.pod.volumes.build entries
    warnings: list = field(default_factory=list)  # for the CLI to print (envFrom, sizeLimit)
    events: list = field(default_factory=list)    # [container, reason, message] to record
    # The node's namespaces the pod asked for (the sandbox does not make its own of those).
    host_network: bool = False  # also the node's UTS namespace, as containerd does
    host_pid: bool = False
    host_ipc: bool = False
    netns: str = ""         # where the pod's netns is pinned (`ip netns`); "" with hostNetwork
    security: PodSecurity = field(default_factory=PodSecurity)  # fsGroup, sysctls
    # What holds the pod's namespaces: "pause" (a process, as containerd does) or "pinned"
    # (bind mounts in pin_dir, as CRI-O's pinns does; see pod/pinned.py).
    sandbox_mode: str = "pause"
    pin_dir: str = ""       # <root>/sandboxes/<name> in pinned mode

    @property
    def pinned_types(self) -> list[str]:
        """The namespaces a pinned sandbox pins: only those not the node's."""
        if self.sandbox_mode != "pinned":
            return []
        return (["net", "uts"] if not self.host_network else []) + \
            (["ipc"] if not self.host_ipc else [])

    @property
    def keeps_pause(self) -> bool:
        """Does this pod run pause? Always in pause mode. In pinned mode only for a pod-level
        PID namespace (shareProcessNamespace without hostPID): a PID namespace cannot be
        pinned usefully -- once its init has died no process can enter it -- so it needs a
        PID 1 that lives as long as the pod, as CRI-O keeps its infra container then."""
        return self.sandbox_mode != "pinned" or (self.share_pid and not self.host_pid)

    def all_containers(self) -> list[ContainerPlan]:
        return self.init_containers + self.containers

    @property
    def sandboxes_dir(self) -> str:
        """<root>/sandboxes: every pinned pod's pin directory of this runtime root."""
        return sandboxes_dir(os.path.dirname(os.path.dirname(self.run_dir)))

    @property
    def cgroup_lock(self) -> str:
        """One lock per runtime root (<root>/pods/<name> -> <root>/cgroups.lock): it orders
        creating a pod slice against removing their common parent."""
        return os.path.join(os.path.dirname(os.path.dirname(self.run_dir)), "cgroups.lock")

    @property
    def hostport_dir(self) -> str:
        return hostport_dir(os.path.dirname(os.path.dirname(self.run_dir)))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "PodPlan":
        d = dict(d)
        for key in ("containers", "init_containers"):
            d[key] = [ContainerPlan.from_json(c) for c in d[key]]
        d["security"] = PodSecurity.from_json(d.get("security"))
        return cls(**d)


# --- names -----------------------------------------------------------------------------------

def escape(name: str) -> str:
    """'-' means nesting in a systemd slice name; pod names have no '_', so map '-' to it."""
    return name.replace("-", "_")


# A path component, a cgroup directory and a systemd unit name (UNIT_NAME_MAX 256 with its NUL)
# all stop at 255 bytes. A pod name may be a 253-character DNS subdomain; with minipod's
# prefixes and suffixes around it that is too long, so a long name is shortened, and keeps a
# hash of the whole name to stay unique.
NAME_MAX = 255
CONTAINER_NAME_MAX = 63  # a DNS label


def fit(name: str, room: int) -> str:
    """`name` if it has at most `room` characters, else its start, '_' and a 10-hex hash."""
    if len(name) <= room:
        return name
    import hashlib  # only for long names: see host_veth

    return name[:room - 11] + "_" + hashlib.sha1(name.encode()).hexdigest()[:10]


def _unit_pod(prefix: str, pod: str) -> str:
    """The pod's part of its unit names: room for `<prefix>-<pod>-<container>.scope`."""
    return fit(escape(pod), NAME_MAX - len(prefix) - 2 - CONTAINER_NAME_MAX - len(".scope"))


def cgroup_names(parent: str, prefix: str, pod: str) -> tuple[str, str]:
    """(pod slice, sandbox scope) as group paths, e.g. minipod.slice/minipod-web.slice."""
    pod_slice = f"{parent}/{prefix}-{_unit_pod(prefix, pod)}.slice"
    return pod_slice, f"{pod_slice}/{prefix}-{_unit_pod(prefix, pod)}.scope"


def container_cgroup(pod_slice: str, prefix: str, pod: str, ctr: str) -> str:
    return f"{pod_slice}/{prefix}-{_unit_pod(prefix, pod)}-{ctr}.scope"


NETNS_DIR = "/run/netns"  # where `ip netns` looks (iproute2's NETNS_RUN_DIR)


def netns_path(prefix: str, pod: str, uid: str) -> str:
    """/run/netns/<prefix>-<pod>-<uid[:8]>: the pod's name for `ip netns list`; the uid part
    keeps a removed pod's entry apart from its successor's of the same name."""
    return os.path.join(NETNS_DIR, f"{prefix}-{fit(pod, NAME_MAX - len(prefix) - 10)}-{uid[:8]}")


def host_veth(uid: str) -> str:
    # hashlib and uuid are imported where they are used, only by the CLI: the supervisor imports
    # this module too, and hashlib's libcrypto alone would add ~4 MB RSS to every pod.
    import hashlib

    return "mp-" + hashlib.sha1(uid.encode()).hexdigest()[:10]  # IFNAMSIZ: 15 chars max


# --- resources (kubelet arithmetic) ------------------------------------------------------------

def qos_class(containers) -> str:
    """Guaranteed, Burstable or BestEffort (pkg/apis/core/v1/helper/qos)."""
    any_set = False
    guaranteed = True
    for c in containers:
        r = c.resources
        for res in ("cpu", "memory"):
            lim = r.limits.get(res) if r.limits else None
            req = r.requests.get(res) if r.requests else None
            any_set = any_set or lim is not None or req is not None
            if lim is None or (req is not None and req.value != lim.value):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def oom_score_adj(qos: str, memory_request: int | None, capacity: int) -> int:
    """pkg/kubelet/qos/policy.go GetContainerOOMScoreAdjust."""
    if qos == "Guaranteed":
        return -997
    if qos == "BestEffort":
        return 1000
    adj = 1000 - (1000 * (memory_request or 0)) // max(capacity, 1)
    return min(max(adj, 3), 999)


def container_limits(c, privileged: bool) -> dict:
    r = c.resources
    mem = r.memory_limit()
    cpu_lim = r.cpu_limit_milli()
    cpu_req = r.cpu_request_milli()
    return {
        "memory_max": mem,
        "cpu_quota_us": convert.cpu_quota(cpu_lim) if cpu_lim else None,
        "cpu_shares": convert.cpu_shares(cpu_req or 0),
        "pids_max": None,
        # runc's allow-list (null, zero, full, random, urandom, tty, ptmx, pts, mknod of any
        # node but no open of it); a privileged container gets the host's devices, as in
        # Kubernetes. See minipod/cgroups/devices.py.
        "devices": "allow-all" if privileged else "default",
    }


def pod_limits(app, init, pids_limit: int) -> dict:
    """ResourceConfigForPod: a pod-level limit only if every container has one; init containers
    run one at a time, so the pod needs max(sum(app), max(init))."""
    def total(attr: str, need_all: bool):
        vals = [getattr(c.resources, attr)() for c in app]
        if need_all and any(v is None for v in vals):
            return None
        s = sum(v or 0 for v in vals)
        ivals = [getattr(c.resources, attr)() for c in init]
        if need_all and any(v is None for v in ivals):
            return None
        return max([s] + [v or 0 for v in ivals])

    mem = total("memory_limit", True)
    cpu = total("cpu_limit_milli", True)
    req = total("cpu_request_milli", False) or 0
    return {
        "memory_max": mem,
        "cpu_quota_us": convert.cpu_quota(cpu) if cpu else None,
        "cpu_shares": convert.cpu_shares(req),
        "pids_max": pids_limit if pids_limit > 0 else None,
        # Not managed at the pod level (the kubelet's SkipDevices): a privileged container
        # could never get more than its pod's slice allows.
        "devices": None,
    }


def memory_capacity() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 34


# --- argv, env, user -------------------------------------------------------------------------

def argv_for(command: list[str] | None, args: list[str] | None, image_cfg: dict,
             env: dict[str, str]) -> list[str]:
    """Kubernetes' rule: command replaces Entrypoint (and drops Cmd), args replace Cmd."""
    entry = image_cfg.get("Entrypoint") or []
    cmd = image_cfg.get("Cmd") or []
    command = [expand(s, env) for s in command] if command else None
    args = [expand(s, env) for s in args] if args else None
    if command:
        return command + (args or [])
    return entry + (args if args is not None else cmd)


def env_for(spec_env, image_cfg: dict, hostname: str,
            own: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Image Env, then HOSTNAME, then the container's env ($(VAR)-expanded in order; `own`:
    already made, with envFrom and valueFrom, by minipod.pod.volumes.env)."""
    final: dict[str, str] = {}
    for kv in image_cfg.get("Env") or []:
        k, _, v = kv.partition("=")
        final[k] = v
    final.setdefault("PATH", DEFAULT_PATH)
    final["HOSTNAME"] = hostname
    # The kubelet expands $(VAR) against the container's own earlier variables only: it never
    # sees the image's environment.
    if own is None:
        own = expand_env([(e.name, e.value or "") for e in spec_env if e.value_from is None],
                         {})
    final.update(own)
    return [f"{k}={v}" for k, v in final.items()], own


def stop_signal(image_cfg: dict) -> int:
    name = (image_cfg.get("StopSignal") or "SIGTERM").upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    return int(getattr(signal, name, signal.SIGTERM))


# --- files the kubelet writes into every container --------------------------------------------

def resolv_conf(spec, host_file: str) -> str:
    """dnsPolicy: with no cluster DNS, ClusterFirst falls back to Default (the node's file)."""
    policy = spec.dns_policy or "ClusterFirst"
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy != "None":
        path = host_file
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            text = ""
        # systemd-resolved's stub (127.0.0.53) is unreachable from a pod's netns: use the real
        # upstream list, as the kubelet's --resolv-conf advice says.
        if "127.0.0.53" in text and os.path.exists("/run/systemd/resolve/resolv.conf"):
            with open("/run/systemd/resolve/resolv.conf") as f:
                text = f.read()
        for line in text.splitlines():
            parts = line.split()
            if not parts or parts[0].startswith(("#", ";")):
                continue
            if parts[0] == "nameserver" and len(parts) > 1:
                servers.append(parts[1])
            elif parts[0] in ("search", "domain"):
                searches = parts[1:]
            elif parts[0] == "options":
                options.extend(parts[1:])
    dc = spec.dns_config
    if dc:
        servers += [s for s in dc.nameservers or [] if s not in servers]
        searches += [s for s in dc.searches or [] if s not in searches]
        for o in dc.options or []:
            options = [x for x in options if x.split(":")[0] != o.name]
            options.append(f"{o.name}:{o.value}" if o.value else o.name)
    lines = [f"nameserver {s}" for s in servers[:3]]
    if searches:
        lines.append("search " + " ".join(searches[:32]))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def hosts_file(ip: str, hostname: str, subdomain: str, namespace: str,
               aliases: list[dict]) -> str:
    """Exactly what the kubelet writes (pkg/kubelet/kubelet_pods.go managedHostsFileContent)."""
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if ip:
        if subdomain:
            fqdn = f"{hostname}.{subdomain}.{namespace}.svc.cluster.local"
            lines.append(f"{ip}\t{fqdn}\t{hostname}")
        else:
            lines.append(f"{ip}\t{hostname}")
    return "\n".join(lines) + "\n" + _alias_lines(aliases)


def host_network_hosts_file(node_hosts: str, aliases: list[dict]) -> str:
    """A host-network pod's /etc/hosts: the node's, under the kubelet's header
    (kubelet_pods.go nodeHostsFileContent)."""
    return "# Kubernetes-managed hosts file (host network).\n" + node_hosts + _alias_lines(aliases)


def _alias_lines(aliases: list[dict]) -> str:
    text = ""
    if aliases:
        text += "\n# Entries added by HostAliases.\n"
        for a in aliases:
            text += f"{a['ip']}\t" + "\t".join(a.get("hostnames") or []) + "\n"
    return text


def host_ports(spec) -> list[dict]:
    """The app containers' hostPorts, as the kubelet gives them to the sandbox (init
    containers' are not mapped, in Kubernetes either); a hostIP without a hostPort means
    nothing. A hostNetwork pod's ports are the host's already (hostPort = containerPort, a
    check says so): nothing to forward."""
    if getattr(spec, "host_network", False):
        return []
    return [{"host_port": p.host_port, "container_port": p.container_port,
             "protocol": p.protocol, "host_ip": p.host_ip or "",
             "field": f"spec.containers[{i}].ports[{j}]"}
            for i, c in enumerate(spec.containers) for j, p in enumerate(c.ports)
            if p.host_port]


# --- the plan ----------------------------------------------------------------------------------

def build(loaded, cfg, store, source: str = "manifest", objects=None) -> PodPlan:
    """Build the plan for one validated pod. Resolves images; creates nothing. `objects`: the
    ConfigMaps and Secrets its volumes and env read (minipod.spec.objects)."""
    pod = loaded.pod
    spec = pod.spec
    meta = pod.metadata
    name = meta.name
    import uuid

    uid = str(uuid.uuid4())
    hostname = (spec.hostname or name)[:63].rstrip("-.")
    if spec.host_network:
        # The node's UTS namespace: the kubelet sets no hostname for such a sandbox, and
        # containerd uses the node's.
        import socket

        hostname = socket.gethostname()
    run_dir = os.path.join(cfg.root, "pods", name)
    # <namespace>_<name>_<uid>, as the kubelet names /var/log/pods entries, in one component.
    data_dir = os.path.join(cfg.data_root, "pods", f"{meta.namespace}_"
                            f"{fit(name, NAME_MAX - len(meta.namespace) - len(uid) - 2)}_{uid}")
    prefix = cfg.cgroup_prefix
    pod_slice, sandbox = cgroup_names(cfg.cgroup_parent, prefix, name)
    apps = list(spec.containers)
    inits = list(spec.init_containers or [])
    qos = qos_class(apps + inits)
    capacity = memory_capacity()
    from minipod.pod.volumes import build as volbuild, env as volenv, hostpath
    from minipod.spec.objects import Objects

    objects = objects if objects is not None else Objects()
    fields = pod_fields(loaded, uid, capacity)
    vol_entries, warnings = volbuild.entries(pod, objects, fields, data_dir, run_dir,
                                             cfg.data_root)
    for i, e in enumerate(vol_entries):
        # The kubelet's type check, made now so that a wrong type fails `run` before anything
        # of the file's pods is created; pod set-up checks again before it creates anything.
        if e["kind"] == "hostPath" and (problem := hostpath.problem(e["dir"], e["type"])):
            from minipod.errors import SpecError

            raise SpecError(source, [f"spec.volumes[{i}].hostPath: {problem}"])
    volumes = {e["name"]: e for e in vol_entries}
    events: list[list[str]] = []  # [container, reason, message]: Warning events at start
    psc = spec.security_context

    def one(c, init: bool, path: str) -> ContainerPlan:
        image = store.resolve(c.image)
        icfg = image.config or {}
        own, env_warnings = volenv.container_env(c, fields, objects, source)
        warnings.extend(f"container {c.name!r}: {w}" for w in env_warnings)
        events.extend([c.name, "InvalidEnvironmentVariableNames", w] for w in env_warnings)
        env, own = env_for(c.env or [], icfg, hostname, own)
        sc = c.security_context
        privileged = bool(sc and sc.privileged)
        caps_cfg = sc.capabilities if sc else None
        from minipod.kernel import caps as capsmod

        caps = capsmod.compute(caps_cfg.add if caps_cfg else None,
                               caps_cfg.drop if caps_cfg else None, privileged)
        uid_ = (sc.run_as_user if sc and sc.run_as_user is not None
                else psc.run_as_user if psc else None)
        gid_ = (sc.run_as_group if sc and sc.run_as_group is not None
                else psc.run_as_group if psc else None)
        user = icfg.get("User") or ""
        if uid_ is not None:
            user = str(uid_) + (f":{gid_}" if gid_ is not None else "")
        elif gid_ is not None:
            user = f"{user or 0}:{gid_}"
        cdir = os.path.join(data_dir, "containers", c.name)
        mounts = volbuild.mounts(c, volumes, own, Mount, source)
        own_targets = {os.path.normpath(vm.mount_path) for vm in c.volume_mounts or []}
        ro_root = bool(sc and sc.read_only_root_filesystem)
        for f in ("hosts", "hostname", "resolv.conf"):
            target = f"/etc/{f}"
            if target not in own_targets:  # the kubelet skips /etc/hosts if the pod mounts one
                mounts.append(Mount(os.path.join(run_dir, "etc", f), target, ro_root, "file"))
        restart = c.restart_policy if init else None
        from minipod.pod import security

        sec = security.resolve(pod, c, path, uid, caps, privileged, icfg.get("User") or "",
                               os.path.join(cfg.data_root, "seccomp"), source)
        return ContainerPlan(
            name=c.name, image=c.image, image_ref=image.ref, image_digest=image.digest,
            layers=image.layers,
            argv=argv_for(c.command, c.args, icfg, own),
            env=env, cwd=c.working_dir or icfg.get("WorkingDir") or "/", user=user,
            caps=caps, privileged=privileged,
            no_new_privs=bool(sc and sc.allow_privilege_escalation is False),
            readonly_rootfs=ro_root, mounts=mounts,
            cgroup=container_cgroup(pod_slice, prefix, name, c.name),
            limits=container_limits(c, privileged),
            oom_score_adj=oom_score_adj(qos, c.resources.memory_request(), capacity),
            stop_signal=stop_signal(icfg),
            rootfs=os.path.join(run_dir, "rootfs", c.name),
            upper=os.path.join(cdir, "upper"), work=os.path.join(cdir, "work"),
            log_dir=os.path.join(data_dir, "logs", c.name),
            init=init, sidecar=init and restart == "Always",
            spec=c.model_dump(by_alias=True, exclude_none=True), security=sec,
            stdin=c.stdin, stdin_once=c.stdin_once, tty=c.tty,
        )

    ctrs = [one(c, False, f"spec.containers[{i}]") for i, c in enumerate(apps)]
    mode = sandbox_mode(dict(meta.annotations or {}), cfg)
    init_ctrs = [one(c, True, f"spec.initContainers[{i}]") for i, c in enumerate(inits)]
    for cp in ctrs + init_ctrs:
        if not cp.argv:
            from minipod.errors import SpecError

            raise SpecError(source, [
                f"container {cp.name!r}: no command given and image {cp.image} has no "
                "Entrypoint or Cmd"])
    return PodPlan(
        name=name, namespace=meta.namespace, uid=uid, created=time.time(),
        hostname=hostname, subdomain=spec.subdomain or "",
        share_pid=bool(spec.share_process_namespace),
        restart_policy=spec.restart_policy or "Always",
        grace_seconds=(spec.termination_grace_period_seconds
                       if spec.termination_grace_period_seconds is not None else 30),
        qos_class=qos, run_dir=run_dir, data_dir=data_dir,
        cgroup_parent=cfg.cgroup_parent, pod_cgroup=pod_slice, sandbox_cgroup=sandbox,
        pod_limits=pod_limits(apps, inits, cfg.pod_pids_limit),
        bridge=cfg.bridge, subnet=cfg.subnet,
        net_state_dir=os.path.join(cfg.root, "networks", cfg.bridge),
        host_veth=host_veth(uid), shm_size=SHM_SIZE,
        resolv_conf=resolv_conf(spec, cfg.resolv_conf),
        host_aliases=[{"ip": a.ip, "hostnames": list(a.hostnames or [])}
                      for a in spec.host_aliases or []],
        containers=ctrs, init_containers=init_ctrs,
        labels=dict(meta.labels or {}), annotations=dict(meta.annotations or {}),
        manifest=loaded.raw, security=pod_security(psc),
        host_ports=host_ports(spec),
        volumes=vol_entries, warnings=[f"{source}: pod {name!r}: {w}" for w in warnings],
        events=events,
        host_network=spec.host_network, host_pid=spec.host_pid, host_ipc=spec.host_ipc,
        netns="" if spec.host_network else netns_path(prefix, name, uid),
        sandbox_mode=mode, pin_dir=pin_dir(cfg.root, name) if mode == "pinned" else "",
    )


def sandbox_mode(annotations: dict, cfg) -> str:
    """The pod's annotation (checked at validation), else the configuration's `sandbox`."""
    from minipod.config import SANDBOX_ANNOTATION

    return annotations.get(SANDBOX_ANNOTATION) or cfg.sandbox


def pod_fields(loaded, uid: str, capacity: int):
    """What the downward API reads about this pod and this node."""
    import socket

    from minipod.pod.volumes.content import PodFields

    pod = loaded.pod
    raw_spec = loaded.raw.get("spec") if isinstance(loaded.raw.get("spec"), dict) else {}
    account = raw_spec.get("serviceAccountName") or raw_spec.get("serviceAccount") or "default"
    containers = {c.name: c for c in [*pod.spec.init_containers, *pod.spec.containers]}
    return PodFields(
        pod.metadata.name, pod.metadata.namespace, uid, dict(pod.metadata.labels),
        dict(pod.metadata.annotations), containers, node_name=socket.gethostname(),
        service_account=str(account), host_ip=host_ip(), cpus=os.cpu_count() or 1,
        memory=capacity)


def host_ip() -> str:
    """The node's address: the source of its default route (what status.hostIP shows)."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source
            return s.getsockname()[0]
    except OSError:
        return ""
