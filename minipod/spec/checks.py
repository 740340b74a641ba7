"""Named semantic checks of a v1 Pod, after pydantic has checked its structure.

Each check is a small function yielding problems as `path: message` lines (the idea of runc's
libcontainer/configs/validate): pkg/apis/core/validation, the parts that matter on one node.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from minipod.spec.kube_fields import (REFUSAL, REFUSED_ANNOTATIONS, SECCOMP_CONTAINER_ANNOTATION,
                                      SECCOMP_POD_ANNOTATION, yaml_name)
from minipod.spec.show import cut, show

if TYPE_CHECKING:
    from minipod.spec.spec import Container, LifecycleHandler, Pod, PodSpec, Probe

# --- semantic checks (pkg/apis/core/validation, the parts that matter on one node) -----------

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
ANNOTATIONS_MAX = 256 * 1024  # TotalAnnotationSizeLimitB: keys and values together
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _label_problem(value: str) -> str | None:
    if len(value) <= 63 and _LABEL.fullmatch(value):
        return None
    return (f"{show(value)} is not a valid DNS-1123 label (at most 63 lowercase letters, digits or"
            " '-', starting and ending with a letter or digit)")


def _subdomain_problem(value: str) -> str | None:
    if len(value) <= 253 and all(_LABEL.fullmatch(p) for p in value.split(".")):
        return None
    return (f"{show(value)} is not a valid DNS-1123 subdomain (at most 253 lowercase letters, digits,"
            " '-' or '.', starting and ending with a letter or digit)")


def _port_name_problem(value: str) -> str | None:
    # IsValidPortName: an IANA service name.
    if (len(value) <= 15 and _IANA_SVC_NAME.fullmatch(value) and "--" not in value
            and re.search("[a-z]", value)):
        return None
    return (f"{show(value)} is not a valid port name (at most 15 lowercase letters, digits or '-',"
            " with at least one letter)")


def _qualified_name_problem(value: str) -> str | None:
    """IsQualifiedName: [prefix/]name, prefix a DNS subdomain, name at most 63 characters."""
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or _subdomain_problem(prefix)):
        return f"{show(value)}: the prefix before '/' must be a DNS subdomain"
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return (f"{show(value)} is not a valid name (at most 63 letters, digits, '-', '_' or '.',"
                " starting and ending with a letter or digit, after an optional DNS prefix and"
                " '/')")
    return None


def _range(path: str, value: int | None, low: int, high: int) -> Iterator[str]:
    if value is not None and not low <= value <= high:
        yield f"{path}: must be between {low} and {high}, inclusive (got {show(value)})"


def each_container(spec: PodSpec) -> Iterator[tuple[str, Container, bool]]:
    """(YAML path, container, is an init container) for every container of the pod."""
    for kind, ctrs in (("containers", spec.containers), ("initContainers", spec.init_containers)):
        for i, c in enumerate(ctrs):
            yield f"spec.{kind}[{i}]", c, kind == "initContainers"


def check_metadata(pod: Pod) -> Iterator[str]:
    m = pod.metadata
    if not m.name:
        yield "metadata.name: required"
    elif problem := _subdomain_problem(m.name):
        yield f"metadata.name: {problem}"
    if problem := _label_problem(m.namespace):
        yield f"metadata.namespace: {problem}"
    for k, v in m.labels.items():
        if problem := _qualified_name_problem(k):
            yield f"metadata.labels: key {problem}"
        elif v and (len(v) > 63 or not _QUALIFIED_NAME.fullmatch(v)):
            yield (f"metadata.labels.{cut(k)}: {show(v)} is not a valid label value (at most 63"
                   " letters, digits, '-', '_' or '.', starting and ending with a letter or"
                   " digit)")
    for k in m.annotations:
        if problem := _qualified_name_problem(k.lower()):
            yield f"metadata.annotations: key {problem}"
    size = sum(len(k.encode()) + len(v.encode()) for k, v in m.annotations.items())
    if size > ANNOTATIONS_MAX:
        yield (f"metadata.annotations: too long: {size} bytes, the total size of annotations"
               f" must be at most {ANNOTATIONS_MAX} bytes (256 KiB)")


def check_pod_fields(pod: Pod) -> Iterator[str]:
    s = pod.spec
    # int64 in the API; minipod's clocks (time.sleep, timers) stop at int32 seconds (68 years).
    yield from _range("spec.terminationGracePeriodSeconds", s.termination_grace_period_seconds,
                      0, INT32_MAX)
    yield from _range("spec.activeDeadlineSeconds", s.active_deadline_seconds, 1, INT64_MAX)
    for name, value in (("hostname", s.hostname), ("subdomain", s.subdomain)):
        if value and (problem := _label_problem(value)):
            yield f"spec.{name}: {problem}"
    if s.host_pid and s.share_process_namespace:
        # The API server's own rule (ValidatePodSecurityContext): no node ever runs this pod.
        yield "spec.shareProcessNamespace: ShareProcessNamespace and HostPID cannot both be enabled"


def check_containers(pod: Pod) -> Iterator[str]:
    if not pod.spec.containers:
        yield "spec.containers: at least one container is required"
    seen: dict[str, str] = {}  # names are unique across containers and initContainers
    for path, c, _ in each_container(pod.spec):
        if problem := _label_problem(c.name):
            yield f"{path}.name: {problem}"
        elif c.name in seen:
            yield f"{path}.name: {show(c.name)} is already the name of {seen[c.name]}"
        else:
            seen[c.name] = path
        if not c.image.strip():
            yield f"{path}.image: required"
        elif problem := _image_problem(c.image):
            yield f"{path}.image: {problem}"


def _image_problem(ref: str) -> str | None:
    # The reference grammar is a pure module of the image layer (no I/O, no store): checking it
    # here makes `validate` catch what `run` would only find when it pulls.
    from minipod.images.reference import InvalidReference, parse

    try:
        parse(ref)
    except InvalidReference as e:
        return str(e).replace(repr(ref), show(ref), 1)
    return None


def check_restart_policies(pod: Pod) -> Iterator[str]:
    # A container-level restartPolicy exists only to make an init container a sidecar.
    for path, c, init in each_container(pod.spec):
        if c.restart_policy is None:
            continue
        if not init:
            yield (f"{path}.restartPolicy: only allowed on initContainers (where Always makes a"
                   " sidecar)")
        elif c.restart_policy != "Always":
            yield f"{path}.restartPolicy: must be Always (got {show(c.restart_policy)})"


def check_env(pod: Pod) -> Iterator[str]:
    for path, c, _ in each_container(pod.spec):
        for i, e in enumerate(c.env):
            p = f"{path}.env[{i}]"
            if not e.name or "=" in e.name:
                yield f"{p}.name: must be non-empty and contain no '=' (got {show(e.name)})"
            if e.value and e.value_from:
                yield f"{p}: may not have both value and valueFrom"
            src = e.value_from
            if src and sum(x is not None for x in (
                    src.field_ref, src.resource_field_ref, src.config_map_key_ref,
                    src.secret_key_ref)) != 1:
                yield f"{p}.valueFrom: must have exactly one source"


def check_ports(pod: Pod) -> Iterator[str]:
    # AccumulateUniqueHostPorts: one hostPort per protocol/hostIP/port in the app containers.
    host_ports: dict[str, str] = {}
    for path, c, init in each_container(pod.spec):
        names: dict[str, int] = {}
        for i, port in enumerate(c.ports):
            p = f"{path}.ports[{i}]"
            if not 1 <= port.container_port <= 65535:
                yield (f"{p}.containerPort: must be between 1 and 65535 "
                       f"(got {show(port.container_port)})")
            if port.host_port is not None and not 0 <= port.host_port <= 65535:
                yield f"{p}.hostPort: must be between 0 and 65535 (got {show(port.host_port)})"
            if port.host_ip and (problem := _ip_problem(port.host_ip)):
                yield f"{p}.hostIP: {problem}"
            if port.host_port and not init:
                key = f"{port.protocol}/{port.host_ip or ''}/{port.host_port}"
                if key in host_ports:
                    yield f"{p}.hostPort: duplicate value {show(key)} (also {host_ports[key]})"
                else:
                    host_ports[key] = p
            # With hostNetwork the pod's ports are the node's: hostPort must equal containerPort.
            if pod.spec.host_network and port.host_port not in (None, 0, port.container_port):
                yield f"{p}.hostPort: must equal containerPort when hostNetwork is true"
            if port.name is None:
                continue
            if problem := _port_name_problem(port.name):
                yield f"{p}.name: {problem}"
            elif port.name in names:
                yield (f"{p}.name: duplicate port name {show(port.name)} "
                       f"(also ports[{names[port.name]}])")
            else:
                names[port.name] = i


def check_volumes(pod: Pod) -> Iterator[str]:
    seen: dict[str, int] = {}
    for i, v in enumerate(pod.spec.volumes):
        if problem := _label_problem(v.name):
            yield f"spec.volumes[{i}].name: {problem}"
        elif v.name in seen:
            yield (f"spec.volumes[{i}].name: duplicate volume name {show(v.name)} "
                   f"(also volumes[{seen[v.name]}])")
        else:
            seen[v.name] = i


def check_mounts(pod: Pod) -> Iterator[str]:
    volumes = {v.name for v in pod.spec.volumes}
    for path, c, _ in each_container(pod.spec):
        targets: dict[str, int] = {}
        for i, m in enumerate(c.volume_mounts):
            p = f"{path}.volumeMounts[{i}]"
            if m.name not in volumes:
                yield f"{p}.name: no volume named {show(m.name)} in spec.volumes"
            if not m.mount_path.startswith("/"):
                yield f"{p}.mountPath: must be an absolute path (got {show(m.mount_path)})"
            target = posixpath.normpath(m.mount_path)
            if problem := _mount_target_problem(target):
                yield f"{p}.mountPath: {show(m.mount_path)}: {problem}"
            if target in targets:
                yield (f"{p}.mountPath: {show(m.mount_path)} is already mounted by "
                       f"volumeMounts[{targets[target]}]")
            targets.setdefault(target, i)
            # validateLocalDescendingPath: subPath stays inside the volume.
            if m.sub_path and (m.sub_path.startswith("/") or ".." in m.sub_path.split("/")):
                yield f"{p}.subPath: must be a relative path without '..' (got {show(m.sub_path)})"


def _mount_target_problem(target: str) -> str | None:
    """Where a volume cannot go, because the runtime builds that place itself (rootfs.py):
    `/` is the image's overlay; /proc must be the container's procfs (runc refuses mounts in
    /proc too: masking /proc/kcore and friends needs the real one); /dev is minipod's tmpfs
    with the device nodes, and masking binds its /dev/null. Below /dev (/dev/shm) and /sys are
    fine: they are mounted over, as runc does."""
    if target in ("/", "//"):
        return "cannot mount a volume over the container's root filesystem"
    if target == "/proc" or target.startswith("/proc/"):
        return "cannot mount a volume on /proc or under it (the container's procfs)"
    if target == "/dev":
        return "cannot mount a volume over /dev (the container's device nodes)"
    return None


# The kernel's largest CFS quota (max_cfs_runtime: 2^44-1 µs) over the kubelet's 100 ms period.
CPU_LIMIT_MAX_MILLI = (2**44 - 1) * 1000 // 100_000
_BYTE_RESOURCES = ("memory", "ephemeral-storage")
_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def _resource_name_problem(name: str) -> str | None:
    # validateContainerResourceName: a standard name, hugepages-<size>, or a qualified
    # extended resource (example.com/gpu). A typo like `memroy` would be a limit ignored.
    if name in _STANDARD_RESOURCES or name.startswith("hugepages-") or "/" in name:
        return None
    return (f"{show(name)} is not a resource name: cpu, memory, ephemeral-storage,"
            " hugepages-<size> or a domain-qualified name (example.com/gpu)")


def check_resources(pod: Pod) -> Iterator[str]:
    for path, c, _ in each_container(pod.spec):
        r = c.resources
        for kind, values in (("requests", r.requests), ("limits", r.limits)):
            for name, q in values.items():
                p = f"{path}.resources.{kind}.{cut(name)}"
                if problem := _resource_name_problem(name):
                    yield f"{path}.resources.{kind}: {problem}"
                elif q.value < 0:
                    yield f"{p}: must not be negative (got {cut(str(q))})"
                elif name in _BYTE_RESOURCES and q.value != q.value.to_integral_value():
                    # The API server warns about it; the kubelet rounds up to whole bytes,
                    # and a 1-byte memory limit kills the container before it starts.
                    yield f"{p}: fractional byte value {show(str(q))} is invalid, must be an integer"
                elif name == "cpu" and kind == "limits" and q.to_milli() > CPU_LIMIT_MAX_MILLI:
                    yield (f"{p}: {show(str(q))} is more than the kernel's largest CPU quota"
                           f" ({CPU_LIMIT_MAX_MILLI // 1000} CPUs)")
        for name, req in r.requests.items():
            lim = r.limits.get(name)
            if lim is not None and req > lim:
                yield (f"{path}.resources.requests.{cut(name)}: must be less than or equal to the"
                       f" limit ({cut(str(req))} > {cut(str(lim))})")


def check_pod_resources(pod: Pod) -> Iterator[str]:
    # The pod's cgroup gets the sum of its containers' limits (plan.pod_limits).
    apps = [c.resources for c in pod.spec.containers]
    memory = sum(r.memory_limit() or 0 for r in apps)
    cpu = sum(r.cpu_limit_milli() or 0 for r in apps)
    # (One container over the limit is reported by check_resources already.)
    if memory > INT64_MAX:
        yield "spec.containers: the memory limits add up to more than 2^63-1 bytes"
    if cpu > CPU_LIMIT_MAX_MILLI >= max((r.cpu_limit_milli() or 0 for r in apps), default=0):
        yield (f"spec.containers: the cpu limits add up to more than the kernel's largest CPU"
               f" quota ({CPU_LIMIT_MAX_MILLI // 1000} CPUs)")


def _port_problem(port: int | str) -> str | None:
    # validatePortNumOrName
    if isinstance(port, int):
        return None if 1 <= port <= 65535 else f"must be between 1 and 65535 (got {show(port)})"
    return _port_name_problem(port)


def _action_problems(p: str, obj: Probe | LifecycleHandler) -> Iterator[str]:
    for attr in ("http_get", "tcp_socket", "grpc"):
        action = getattr(obj, attr, None)
        if action is not None and (problem := _port_problem(action.port)):
            yield f"{p}.{yaml_name(attr)}.port: {problem}"
    sleep = getattr(obj, "sleep", None)
    if sleep is not None:
        yield from _range(f"{p}.sleep.seconds", sleep.seconds, 0, INT32_MAX)


def _probe_number_problems(p: str, probe: Probe) -> Iterator[str]:
    # validateProbe; 0 has already been defaulted (SetDefaults_Probe), so what is left below
    # 1 was negative. int32 in the API.
    yield from _range(f"{p}.initialDelaySeconds", probe.initial_delay_seconds, 0, INT32_MAX)
    for attr in ("timeout_seconds", "period_seconds", "success_threshold", "failure_threshold"):
        yield from _range(f"{p}.{yaml_name(attr)}", getattr(probe, attr), 1, INT32_MAX)
    yield from _range(f"{p}.terminationGracePeriodSeconds",
                      probe.termination_grace_period_seconds, 1, INT32_MAX)


def _one_action(obj: Probe | LifecycleHandler, actions: tuple[str, ...]) -> str | None:
    given = [a for a in actions if getattr(obj, a) is not None]
    if len(given) == 1:
        return None
    yaml_names = [yaml_name(a) for a in actions]
    got = ", ".join(yaml_name(a) for a in given) or "none"
    return f"must have exactly one of {', '.join(yaml_names)} (got {got})"


def check_probes(pod: Pod) -> Iterator[str]:
    probe_actions = ("exec", "http_get", "tcp_socket", "grpc")
    hook_actions = ("exec", "http_get", "tcp_socket", "sleep")
    for path, c, init in each_container(pod.spec):
        sidecar = init and c.restart_policy == "Always"
        for attr in ("liveness_probe", "readiness_probe", "startup_probe"):
            probe = getattr(c, attr)
            if probe is None:
                continue
            p = f"{path}.{yaml_name(attr)}"
            if init and not sidecar:
                yield (f"{p}: not allowed on an init container (only on a sidecar: "
                       "restartPolicy Always)")
            if problem := _one_action(probe, probe_actions):
                yield f"{p}: {problem}"
            yield from _action_problems(p, probe)
            yield from _probe_number_problems(p, probe)
            if attr != "readiness_probe" and probe.success_threshold != 1:
                yield f"{p}.successThreshold: must be 1 (got {probe.success_threshold})"
        if c.lifecycle is None:
            continue
        if init and not sidecar:
            yield f"{path}.lifecycle: not allowed on an init container (only on a sidecar)"
        for attr in ("post_start", "pre_stop"):
            hook = getattr(c.lifecycle, attr)
            if hook is None:
                continue
            if problem := _one_action(hook, hook_actions):
                yield f"{path}.lifecycle.{yaml_name(attr)}: {problem}"
            yield from _action_problems(f"{path}.lifecycle.{yaml_name(attr)}", hook)


def _ip_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{show(value)} is not an IP address"
    return None


def _capability_names() -> frozenset[str]:
    # The names the capability primitive (python-prctl) can set; CAP_LAST_CAP is not one.
    import prctl

    return frozenset(n.upper() for n in prctl.ALL_CAP_NAMES) - {"LAST_CAP"} | {"ALL"}


def check_security(pod: Pod) -> Iterator[str]:
    """User and group IDs as the API server bounds them (IsValidUserID/GroupID: 0..2^31-1), and
    capability names: an unknown name in `drop` is a capability silently kept."""
    for k, v in pod.metadata.annotations.items():
        for prefix, what in REFUSED_ANNOTATIONS.items():
            if (k == prefix or prefix.endswith("/") and k.startswith(prefix)) \
                    and v != "unconfined":
                yield f"metadata.annotations.{cut(k, 80)}: {REFUSAL} ({what})"
    psc = pod.spec.security_context
    if psc is not None:
        for attr in ("run_as_user", "run_as_group", "fs_group"):
            yield from _range(f"spec.securityContext.{yaml_name(attr)}", getattr(psc, attr),
                              0, INT32_MAX)
        for i, g in enumerate(psc.supplemental_groups):
            yield from _range(f"spec.securityContext.supplementalGroups[{i}]", g, 0, INT32_MAX)
    known = None
    for path, c, _ in each_container(pod.spec):
        sc = c.security_context
        if sc is None:
            continue
        for attr in ("run_as_user", "run_as_group"):
            yield from _range(f"{path}.securityContext.{yaml_name(attr)}", getattr(sc, attr),
                              0, INT32_MAX)
        if sc.capabilities is None:
            continue
        known = known or _capability_names()
        for kind in ("add", "drop"):
            for i, name in enumerate(getattr(sc.capabilities, kind)):
                if name.upper().removeprefix("CAP_") not in known:
                    yield (f"{path}.securityContext.capabilities.{kind}[{i}]: unknown capability"
                           f" {show(name)}")


# The kubelet's default sysctl allow-list (pkg/kubelet/sysctl/safe_sysctls.go): namespaced, and
# isolated from other pods. Anything else is refused unless the node's --allowed-unsafe-sysctls
# names it; minipod has no such flag, so it refuses them all, with the kubelet's words.
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
})
_SYSCTL_NAME = re.compile(r"([a-z0-9]([-_a-z0-9]*[a-z0-9])?[./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?")


def sysctl_dots(name: str) -> str:
    """ConvertSysctlVariableToDotsSeparator: `net/ipv4/x` is `net.ipv4.x`."""
    return name.replace("/", ".") if "/" in name else name


def check_sysctls(pod: Pod) -> Iterator[str]:
    psc = pod.spec.security_context
    seen: set[str] = set()
    for i, sc in enumerate(psc.sysctls if psc else []):
        p = f"spec.securityContext.sysctls[{i}].name"
        if len(sc.name) > 253 or not _SYSCTL_NAME.fullmatch(sc.name):
            yield f"{p}: {show(sc.name)} is not a valid sysctl name"
            continue
        name = sysctl_dots(sc.name)
        if name in seen:
            yield f"{p}: duplicate sysctl {show(name)}"
        seen.add(name)
        if name not in SAFE_SYSCTLS:
            yield f"{p}: forbidden sysctl: {name!r} not allowlisted".replace("'", '"') \
                + " (SysctlForbidden: the kubelet's default allow-list has only the safe set)"
            continue
        # A pod in the host's namespace would set the host's value: the kubelet refuses it.
        kind, host = (("ipc", pod.spec.host_ipc) if name.startswith("kernel.")
                      else ("net", pod.spec.host_network))
        if host:
            yield f'{p}: forbidden sysctl: "{name}" not allowed with host {kind} enabled'


def _seccomp_problems(p: str, prof) -> Iterator[str]:
    """pkg/apis/core/validation validateSeccompProfileField."""
    if prof is None:
        return
    if prof.type == "Localhost":
        lp = prof.localhost_profile
        if not lp:
            yield f"{p}.localhostProfile: required when type is Localhost"
        elif lp.startswith("/") or ".." in lp.split("/"):
            yield (f"{p}.localhostProfile: {show(lp)} must be a descending path, relative to the"
                   " seccomp profile root")
    elif prof.localhost_profile is not None:
        yield f"{p}.localhostProfile: can only be set when type is Localhost"


def check_seccomp_procmount(pod: Pod) -> Iterator[str]:
    psc = pod.spec.security_context
    yield from _seccomp_problems("spec.securityContext.seccompProfile",
                                 psc.seccomp_profile if psc else None)
    for path, c, _ in each_container(pod.spec):
        sc = c.security_context
        if sc is None:
            continue
        yield from _seccomp_problems(f"{path}.securityContext.seccompProfile", sc.seccomp_profile)
        if sc.proc_mount == "Unmasked":
            # The API server's validation: an unmasked /proc only inside a user namespace.
            yield (f"{path}.securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers`"
                   " must be false to use `Unmasked`")


def security_warnings(pod: Pod) -> list[str]:
    """The API server's warnings (pkg/api/pod/warnings.go) for the seccomp annotations, which do
    nothing since Kubernetes 1.27: the field is what counts."""
    out = []
    ann = pod.metadata.annotations
    psc = pod.spec.security_context
    msg = 'non-functional in v1.27+; use the "seccompProfile" field instead'
    if SECCOMP_POD_ANNOTATION in ann and not (psc and psc.seccomp_profile):
        out.append(f"metadata.annotations[{SECCOMP_POD_ANNOTATION}]: {msg}")
    for _, c, _ in each_container(pod.spec):
        key = SECCOMP_CONTAINER_ANNOTATION + c.name
        if key in ann and not (c.security_context and c.security_context.seccomp_profile):
            out.append(f"metadata.annotations[{key}]: {msg}")
    return out


def check_dns(pod: Pod) -> Iterator[str]:
    s = pod.spec
    if s.dns_policy == "None" and not (s.dns_config and s.dns_config.nameservers):
        yield "spec.dnsConfig.nameservers: required when dnsPolicy is None"
    if s.dns_config:
        for i, ns in enumerate(s.dns_config.nameservers):
            if problem := _ip_problem(ns):
                yield f"spec.dnsConfig.nameservers[{i}]: {problem}"
    for i, alias in enumerate(s.host_aliases):
        if problem := _ip_problem(alias.ip):
            yield f"spec.hostAliases[{i}].ip: {problem}"


def check_sandbox_mode(pod: Pod) -> Iterator[str]:
    """minipod's own annotation: what holds the pod's namespaces (config.SANDBOX_MODES)."""
    from minipod.config import SANDBOX_ANNOTATION, SANDBOX_MODES

    value = pod.metadata.annotations.get(SANDBOX_ANNOTATION)
    if value is not None and value not in SANDBOX_MODES:
        yield (f"metadata.annotations[{SANDBOX_ANNOTATION}]: unknown sandbox mode {show(value)}"
               f" (one of: {', '.join(SANDBOX_MODES)})")


CHECKS = (check_metadata, check_pod_fields, check_containers, check_restart_policies, check_env,
          check_ports, check_volumes, check_mounts, check_resources, check_pod_resources,
          check_probes, check_dns, check_security, check_sysctls, check_seccomp_procmount,
          check_sandbox_mode)


def check(pod: Pod) -> list[str]:
    """Every semantic problem of a typed pod, as "path: message" lines."""
    from minipod.spec.source_checks import check_sources  # volume and env sources

    return [problem for fn in (*CHECKS, check_sources) for problem in fn(pod)]
