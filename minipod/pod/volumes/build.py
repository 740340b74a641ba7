"""A pod's volumes as plan entries (plain JSON), and a container's mounts of them.

Where each kind lives on the host, as the kubelet keeps them (pkg/volume/*):
    emptyDir             <data_dir>/volumes/<name>            node disk
    emptyDir Memory      <run_dir>/volumes/<name>             a tmpfs (size = sizeLimit)
    configMap            <data_dir>/volumes/<name>            node disk, atomic writer layout
    secret, downwardAPI, <run_dir>/volumes/<name>             a tmpfs: secret data (and the
      projected                                               tokens projected ones carry) never
                                                              touch the node's disk
    hostPath             the path itself                      checked by `type`
    persistentVolumeClaim <data_root>/volumes/<claim>/_data   a named volume that outlives the
                                                              pod (podman kube play's choice)
"""

from __future__ import annotations

import base64
import os
import posixpath

from minipod.errors import SpecError
from minipod.pod.volumes.content import PodFields, volume_files
from minipod.pod.volumes.env import POD_IP_MARK
from minipod.spec.expand import expand

CONTENT = ("configMap", "secret", "downwardAPI", "projected")  # read-only, kubelet-written
TMPFS = ("memory", "secret", "downwardAPI", "projected")


def claim_dir(data_root: str, claim: str) -> str:
    return os.path.join(data_root, "volumes", claim, "_data")


def kind_of(vol) -> str:
    if vol.host_path is not None:
        return "hostPath"
    if vol.config_map is not None:
        return "configMap"
    if vol.secret is not None:
        return "secret"
    if vol.persistent_volume_claim is not None:
        return "claim"
    if vol.downward_api is not None:
        return "downwardAPI"
    if vol.projected is not None:
        return "projected"
    return "memory" if vol.empty_dir.medium == "Memory" else "emptyDir"


def entries(pod, objects, fields: PodFields, data_dir: str, run_dir: str,
            data_root: str) -> tuple[list[dict], list[str]]:
    """(one plan entry per volume, warnings)."""
    out, warnings = [], []
    for i, vol in enumerate(pod.spec.volumes):
        kind = kind_of(vol)
        e: dict = {"name": vol.name, "kind": kind, "tmpfs": kind in TMPFS, "size": None,
                   "files": [], "type": "", "readonly": kind in CONTENT}
        if kind == "hostPath":
            e["dir"] = posixpath.normpath(vol.host_path.path)
            e["type"] = vol.host_path.type
        elif kind == "claim":
            e["claim"] = vol.persistent_volume_claim.claim_name
            e["dir"] = claim_dir(data_root, e["claim"])
            e["readonly"] = vol.persistent_volume_claim.read_only
        else:
            e["dir"] = os.path.join(run_dir if e["tmpfs"] else data_dir, "volumes", vol.name)
        if kind in CONTENT:
            e["files"] = [[p, mode, base64.b64encode(data).decode()]
                          for p, mode, data in volume_files(vol, objects, fields)]
        limit = vol.empty_dir.size_limit if vol.empty_dir is not None else None
        if limit is not None and kind == "memory":
            e["size"] = limit.to_bytes()
        elif limit is not None:
            warnings.append(f"spec.volumes[{i}].emptyDir.sizeLimit: not enforced for a disk-backed "
                            "emptyDir (minipod does not measure and evict); use medium: Memory "
                            "for a hard limit")
        out.append(e)
    return out, warnings


def mounts(c, volumes: dict[str, dict], env: dict[str, str], mount_cls, where: str) -> list:
    """Container `c`'s mounts of the pod's volumes (plan.Mount objects)."""
    out = []
    for i, vm in enumerate(c.volume_mounts):
        vol = volumes[vm.name]
        sub = vm.sub_path
        if vm.sub_path_expr:
            # The kubelet expands subPathExpr with the container's env, then checks the result
            # as it checks a subPath: a value may not climb out of the volume.
            sub = expand(vm.sub_path_expr, {k: v for k, v in env.items()
                                            if POD_IP_MARK not in v})
            if sub.startswith("/") or ".." in sub.split("/"):
                raise SpecError(where, [
                    f"container {c.name!r}: volumeMounts[{i}].subPathExpr: expands to {sub!r}, "
                    "which must be a relative path without '..'"])
        src = os.path.join(vol["dir"], sub) if sub else vol["dir"]
        readonly = bool(vm.read_only) or vol["readonly"]
        if vol["kind"] == "hostPath" and not sub:
            # The host's own path, checked (or created) by its type at pod set-up; a symlink
            # in it is the node admin's, followed as the kubelet follows it.
            out.append(mount_cls(src, vm.mount_path, readonly, "host"))
        else:
            out.append(mount_cls(src, vm.mount_path, readonly, source_root=vol["dir"]))
    return out
