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

from minipod.spec.kube_fields import yaml_name

if TYPE_CHECKING:
    from minipod.spec.spec import Container, LifecycleHandler, Pod, PodSpec, Probe

# --- semantic checks (pkg/apis/core/validation, the parts that matter on one node) -----------

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _label_problem(value: str) -> str | None:
    if len(value) <= 63 and _LABEL.fullmatch(value):
        return None
    return (f"{value!r} is not a valid DNS-1123 label (at most 63 lowercase letters, digits or"
            " '-', starting and ending with a letter or digit)")


def _subdomain_problem(value: str) -> str | None:
    if len(value) <= 253 and all(_LABEL.fullmatch(p) for p in value.split(".")):
        return None
    return (f"{value!r} is not a valid DNS-1123 subdomain (at most 253 lowercase letters, digits,"
            " '-' or '.', starting and ending with a letter or digit)")


def _port_name_problem(value: str) -> str | None:
    # IsValidPortName: an IANA service name.
    if (len(value) <= 15 and _IANA_SVC_NAME.fullmatch(value) and "--" not in value
            and re.search("[a-z]", value)):
        return None
    return (f"{value!r} is not a valid port name (at most 15 lowercase letters, digits or '-',"
            " with at least one letter)")


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


def check_pod_fields(pod: Pod) -> Iterator[str]:
    s = pod.spec
    if s.termination_grace_period_seconds < 0:
        yield (f"spec.terminationGracePeriodSeconds: must be >= 0 "
               f"(got {s.termination_grace_period_seconds})")
    for name, value in (("hostname", s.hostname), ("subdomain", s.subdomain)):
        if value and (problem := _label_problem(value)):
            yield f"spec.{name}: {problem}"


def check_containers(pod: Pod) -> Iterator[str]:
    if not pod.spec.containers:
        yield "spec.containers: at least one container is required"
    seen: dict[str, str] = {}  # names are unique across containers and initContainers
    for path, c, _ in each_container(pod.spec):
        if problem := _label_problem(c.name):
            yield f"{path}.name: {problem}"
        elif c.name in seen:
            yield f"{path}.name: {c.name!r} is already the name of {seen[c.name]}"
        else:
            seen[c.name] = path
        if not c.image.strip():
            yield f"{path}.image: required"


def check_restart_policies(pod: Pod) -> Iterator[str]:
    # A container-level restartPolicy exists only to make an init container a sidecar.
    for path, c, init in each_container(pod.spec):
        if c.restart_policy is None:
            continue
        if not init:
            yield (f"{path}.restartPolicy: only allowed on initContainers (where Always makes a"
                   " sidecar)")
        elif c.restart_policy != "Always":
            yield f"{path}.restartPolicy: must be Always (got {c.restart_policy!r})"


def check_env(pod: Pod) -> Iterator[str]:
    for path, c, _ in each_container(pod.spec):
        for i, e in enumerate(c.env):
            p = f"{path}.env[{i}]"
            if not e.name or "=" in e.name:
                yield f"{p}.name: must be non-empty and contain no '=' (got {e.name!r})"
            if e.value and e.value_from:
                yield f"{p}: may not have both value and valueFrom"
            src = e.value_from
            if src and bool(src.field_ref) == bool(src.resource_field_ref):
                yield f"{p}.valueFrom: must have exactly one source"


def check_ports(pod: Pod) -> Iterator[str]:
    for path, c, _ in each_container(pod.spec):
        names: dict[str, int] = {}
        for i, port in enumerate(c.ports):
            p = f"{path}.ports[{i}]"
            if not 1 <= port.container_port <= 65535:
                yield f"{p}.containerPort: must be between 1 and 65535 (got {port.container_port})"
            if port.host_port is not None and not 0 <= port.host_port <= 65535:
                yield f"{p}.hostPort: must be between 0 and 65535 (got {port.host_port})"
            # With hostNetwork the pod's ports are the node's: hostPort must equal containerPort.
            if pod.spec.host_network and port.host_port not in (None, 0, port.container_port):
                yield f"{p}.hostPort: must equal containerPort when hostNetwork is true"
            if port.name is None:
                continue
            if problem := _port_name_problem(port.name):
                yield f"{p}.name: {problem}"
            elif port.name in names:
                yield (f"{p}.name: duplicate port name {port.name!r} "
                       f"(also ports[{names[port.name]}])")
            else:
                names[port.name] = i


def check_volumes(pod: Pod) -> Iterator[str]:
    seen: dict[str, int] = {}
    for i, v in enumerate(pod.spec.volumes):
        if problem := _label_problem(v.name):
            yield f"spec.volumes[{i}].name: {problem}"
        elif v.name in seen:
            yield (f"spec.volumes[{i}].name: duplicate volume name {v.name!r} "
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
                yield f"{p}.name: no volume named {m.name!r} in spec.volumes"
            if not m.mount_path.startswith("/"):
                yield f"{p}.mountPath: must be an absolute path (got {m.mount_path!r})"
            target = posixpath.normpath(m.mount_path)
            if target in targets:
                yield (f"{p}.mountPath: {m.mount_path!r} is already mounted by "
                       f"volumeMounts[{targets[target]}]")
            targets.setdefault(target, i)
            # validateLocalDescendingPath: subPath stays inside the volume.
            if m.sub_path and (m.sub_path.startswith("/") or ".." in m.sub_path.split("/")):
                yield f"{p}.subPath: must be a relative path without '..' (got {m.sub_path!r})"


def check_resources(pod: Pod) -> Iterator[str]:
    for path, c, _ in each_container(pod.spec):
        r = c.resources
        for kind, values in (("requests", r.requests), ("limits", r.limits)):
            for name, q in values.items():
                if q.value < 0:
                    yield f"{path}.resources.{kind}.{name}: must not be negative (got {q})"
        for name, req in r.requests.items():
            lim = r.limits.get(name)
            if lim is not None and req > lim:
                yield (f"{path}.resources.requests.{name}: must be less than or equal to the limit"
                       f" ({req} > {lim})")


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
            if attr != "readiness_probe" and probe.success_threshold != 1:
                yield f"{p}.successThreshold: must be 1 (got {probe.success_threshold})"
        if c.lifecycle is None:
            continue
        if init and not sidecar:
            yield f"{path}.lifecycle: not allowed on an init container (only on a sidecar)"
        for attr in ("post_start", "pre_stop"):
            hook = getattr(c.lifecycle, attr)
            if hook is not None and (problem := _one_action(hook, hook_actions)):
                yield f"{path}.lifecycle.{yaml_name(attr)}: {problem}"


def _ip_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


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


CHECKS = (check_metadata, check_pod_fields, check_containers, check_restart_policies, check_env,
          check_ports, check_volumes, check_mounts, check_resources, check_probes, check_dns)


def check(pod: Pod) -> list[str]:
    """Every semantic problem of a typed pod, as "path: message" lines."""
    return [problem for fn in CHECKS for problem in fn(pod)]
