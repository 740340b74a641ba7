"""Named local volumes for persistentVolumeClaim, as `podman kube play` makes them: one
directory per claim name under <data_root>/volumes/<name>/_data, created on first use and kept
after the pod is gone, until `minipod volume rm NAME`. A volume that a pod record (running or
stopped) still names is in use, and not removed.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from minipod.errors import Conflict, NotFound


def _root(data_root: str) -> str:
    return os.path.join(data_root, "volumes")


def ensure(data: str, name: str) -> str:
    """Create the volume whose data directory is `data` (build.claim_dir) if it is new."""
    base = os.path.dirname(data)
    os.makedirs(data, 0o755, exist_ok=True)
    meta = os.path.join(base, "volume.json")
    if not os.path.exists(meta):
        tmp = meta + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"name": name, "created": time.time()}, f)
        os.rename(tmp, meta)
    return data


def users(root: str) -> dict[str, list[str]]:
    """claim name -> the pods whose records name it."""
    out: dict[str, list[str]] = {}
    pods = os.path.join(root, "pods")
    for pod in sorted(os.listdir(pods)) if os.path.isdir(pods) else []:
        try:
            with open(os.path.join(pods, pod, "plan.json")) as f:
                plan = json.load(f)
        except (OSError, ValueError):
            continue
        for v in plan.get("volumes") or []:
            if isinstance(v, dict) and v.get("kind") == "claim":
                out.setdefault(v.get("claim", ""), []).append(pod)
    return out


def list_all(data_root: str, root: str) -> list[dict]:
    used = users(root)
    out = []
    base = _root(data_root)
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        path = os.path.join(base, name, "_data")
        if not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(base, name, "volume.json")) as f:
                created = json.load(f).get("created")
        except (OSError, ValueError):
            created = None
        out.append({"name": name, "mountpoint": path, "created": created,
                    "pods": used.get(name, [])})
    return out


def remove(data_root: str, root: str, name: str) -> None:
    path = os.path.join(_root(data_root), name)
    if "/" in name or name in ("", ".", "..") or not os.path.isdir(os.path.join(path, "_data")):
        raise NotFound(f"volume {name!r} not found")
    pods = users(root).get(name)
    if pods:
        raise Conflict(f"volume {name!r} is in use by pod {', '.join(pods)} "
                       f"(minipod rm {' '.join(pods)} first)")
    shutil.rmtree(path)
