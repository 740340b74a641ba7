"""A container's own environment, as the kubelet makes it (pkg/kubelet/kubelet_pods.go
makeEnvironmentVariables): envFrom first (later sources override earlier ones), then env in
order, each `value` $(VAR)-expanded against what came before, each valueFrom resolved.

The pod IP is not known when the plan is made: the network is set up after the containers'
processes are forked (pod.py). status.podIP and status.podIPs therefore get POD_IP_MARK here,
which expansion carries into every value and argument that refers to them, and the container's
process replaces the mark with the real address when it is released to exec (container.py),
which happens only once the network is up.
"""

from __future__ import annotations

from minipod.errors import SpecError
from minipod.pod.volumes.content import PodFields
from minipod.spec.expand import expand
from minipod.spec.source_checks import env_name_problem

from minipod.pod.volumes.podip import POD_IP_MARK, fill_pod_ip  # noqa: F401


def container_env(c, fields: PodFields, objects,
                  where: str = "manifest") -> tuple[dict[str, str], list[str]]:
    """({name: value} in order, the messages of InvalidEnvironmentVariableNames events)."""
    ns = fields.namespace
    own: dict[str, str] = {}
    warnings: list[str] = []
    for ef in c.env_from:
        kind, ref = ("ConfigMap", ef.config_map_ref) if ef.config_map_ref else ("Secret",
                                                                               ef.secret_ref)
        obj = objects.get(kind, ns, ref.name)
        if obj is None:
            continue  # optional (the loader refused a missing required one)
        bad = []
        for k, v in obj.env_data().items():
            name = ef.prefix + k
            if env_name_problem(name) or b"\0" in v:
                bad.append(name)
                continue
            own[name] = v.decode(errors="replace")
        if bad:
            # The kubelet's InvalidEnvironmentVariableNames event, in its words: skipped, not
            # fatal.
            warnings.append(f"Keys [{', '.join(sorted(bad))}] from the EnvFrom {kind.lower()} "
                            f"{ns}/{ref.name} were skipped since they are invalid environment "
                            "variable names.")
    for e in c.env:
        src = e.value_from
        if src is None:
            own[e.name] = expand(e.value or "", own)
        elif src.field_ref is not None:
            path = src.field_ref.field_path
            own[e.name] = POD_IP_MARK if path in ("status.podIP", "status.podIPs") \
                else fields.field(path)
        elif src.resource_field_ref is not None:
            own[e.name] = fields.resource(src.resource_field_ref, c.name)
        else:
            kind, ref = ("ConfigMap", src.config_map_key_ref) if src.config_map_key_ref \
                else ("Secret", src.secret_key_ref)
            obj = objects.get(kind, ns, ref.name)
            data = obj.env_data() if obj is not None else {}
            if ref.key in data:
                if b"\0" in data[ref.key]:
                    raise SpecError(where, [f'container "{c.name}": env {e.name}: {kind.lower()} '
                                            f'"{ref.name}" key {ref.key}: holds a NUL byte, '
                                            "which an environment variable cannot"])
                own[e.name] = data[ref.key].decode(errors="replace")
            # else optional and missing: the kubelet leaves the variable out
    return own, warnings

