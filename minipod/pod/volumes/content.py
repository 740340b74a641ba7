"""The files of configMap, secret, downwardAPI and projected volumes, as the kubelet computes
them (pkg/volume/configmap, secret, downwardapi, projected; pkg/fieldpath): a list of
(relative path, mode, bytes), written later by the atomic writer."""

from __future__ import annotations

import json
import math

from minipod.spec.source_checks import SUBSCRIPT

DEFAULT_MODE = 0o644  # configMap, secret, downwardAPI and projected alike

File = tuple[str, int, bytes]


class PodFields:
    """What fieldRef and resourceFieldRef read: the pod's metadata and its containers."""

    def __init__(self, name: str, namespace: str, uid: str, labels: dict, annotations: dict,
                 containers: dict, node_name: str = "", service_account: str = "default",
                 host_ip: str = "", cpus: int = 1, memory: int = 0):
        self.name, self.namespace, self.uid = name, namespace, uid
        self.labels, self.annotations = labels, annotations
        self.containers = containers  # name -> Container model
        self.node_name, self.service_account, self.host_ip = node_name, service_account, host_ip
        self.cpus, self.memory = cpus, memory  # the node's allocatable, for unset limits

    def field(self, path: str) -> str:
        """pkg/fieldpath ExtractFieldPathAsString (the status.podIP fields are env.py's)."""
        m = SUBSCRIPT.match(path)
        if m:
            return (self.labels if m.group(1) == "labels" else self.annotations).get(m.group(2), "")
        simple = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                  "metadata.uid": self.uid, "spec.nodeName": self.node_name,
                  "spec.serviceAccountName": self.service_account,
                  "status.hostIP": self.host_ip, "status.hostIPs": self.host_ip}
        if path in simple:
            return simple[path]
        if path in ("metadata.labels", "metadata.annotations"):
            return format_map(self.labels if path == "metadata.labels" else self.annotations)
        raise KeyError(path)  # the checks let no other path through

    def resource(self, ref, container: str) -> str:
        """ExtractContainerResourceValue: the value divided by the divisor, rounded up; with
        no limit set, the node's allocatable (the kubelet's own fallback)."""
        c = self.containers[ref.container_name or container]
        kind, res = ref.resource.split(".", 1)
        q = (c.resources.limits if kind == "limits" else c.resources.requests).get(res)
        if q is None and kind == "requests":
            q = c.resources.limits.get(res)  # the API server copies a limit into the request
        divisor = ref.divisor
        if res == "cpu":
            milli = q.to_milli() if q is not None else (self.cpus * 1000 if kind == "limits"
                                                        else 0)
            div = divisor.to_milli() if divisor is not None else 1000
            return str(math.ceil(milli / max(div, 1)))
        value = q.to_bytes() if q is not None else (self.memory if kind == "limits" and
                                                    res == "memory" else 0)
        div = divisor.to_bytes() if divisor is not None else 1
        return str(math.ceil(value / max(div, 1)))


def format_map(m: dict) -> str:
    """fieldpath.FormatMap: sorted `key="value"` lines, Go-quoted, no newline at the end."""
    return "\n".join(f"{k}={json.dumps(m[k], ensure_ascii=False)}" for k in sorted(m))


def key_files(data: dict[str, bytes], items, default_mode: int | None) -> list[File]:
    """A ConfigMap's or Secret's keys as files: every key under its own name, or only the
    `items` (key -> path, mode). Keys an optional source lacks are left out."""
    mode = DEFAULT_MODE if default_mode is None else default_mode
    if not items:
        return [(k, mode, v) for k, v in sorted(data.items())]
    return [(it.path, mode if it.mode is None else it.mode, data[it.key])
            for it in items if it.key in data]


def downward_files(items, fields: PodFields, default_mode: int | None,
                   container: str = "") -> list[File]:
    mode = DEFAULT_MODE if default_mode is None else default_mode
    out = []
    for f in items:
        if f.field_ref is not None:
            value = fields.field(f.field_ref.field_path)
        else:
            value = fields.resource(f.resource_field_ref, container)
        out.append((f.path, mode if f.mode is None else f.mode, value.encode()))
    return out


def volume_files(vol, objects, fields: PodFields) -> list[File]:
    """The files of one configMap, secret, downwardAPI or projected volume."""
    ns = fields.namespace

    def data(kind: str, name: str) -> dict[str, bytes]:
        obj = objects.get(kind, ns, name)
        return obj.data if obj is not None else {}  # optional (the checks made sure)

    if vol.config_map is not None:
        s = vol.config_map
        return key_files(data("ConfigMap", s.name), s.items, s.default_mode)
    if vol.secret is not None:
        s = vol.secret
        return key_files(data("Secret", s.secret_name), s.items, s.default_mode)
    if vol.downward_api is not None:
        return downward_files(vol.downward_api.items, fields, vol.downward_api.default_mode)
    files: dict[str, File] = {}
    for src in vol.projected.sources:  # a later source's path wins, as in the kubelet
        mode = vol.projected.default_mode
        if src.config_map is not None:
            got = key_files(data("ConfigMap", src.config_map.name), src.config_map.items, mode)
        elif src.secret is not None:
            got = key_files(data("Secret", src.secret.name), src.secret.items, mode)
        elif src.downward_api is not None:
            got = downward_files(src.downward_api.items, fields, mode)
        else:
            continue  # serviceAccountToken & co.: warned about by the loader
        files.update((f[0], f) for f in got)
    return list(files.values())
