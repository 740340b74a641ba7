"""Pod state on disk: one directory per pod under <root>/pods/<name>.

    plan.json     the plan (written once by the CLI, read by the supervisor and by teardown)
    state.json    the runtime state (written by the supervisor, atomically: temp + rename)
    stop.json     a stop request (grace period) left by `minipod stop` before it signals
    etc/          the pod's hosts, hostname and resolv.conf, bind-mounted into containers
    rootfs/<ctr>  empty mount points: the overlays exist only inside the containers' namespaces
Readers never lock: a rename is atomic, so they see the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil

from minipod.errors import Conflict, MinipodError, NotFound

# Pod phases (Kubernetes) plus the display values the runtime itself needs.
PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
FINAL = (SUCCEEDED, FAILED)


def pods_dir(root: str) -> str:
    return os.path.join(root, "pods")


def pod_dir(root: str, name: str) -> str:
    return os.path.join(pods_dir(root), name)


def write_json(path: str, data: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.rename(tmp, path)


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise MinipodError(f"{path}: unreadable: {e}") from None


def claim(root: str, name: str) -> str:
    """Create the pod's directory; the name is taken iff mkdir succeeds (atomic, no lock)."""
    os.makedirs(pods_dir(root), exist_ok=True)
    d = pod_dir(root, name)
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        raise Conflict(f'pod "{name}" already exists (minipod rm -f {name} to replace it)') \
            from None
    return d


def remove_dir(d: str) -> None:
    shutil.rmtree(d, ignore_errors=True)


def names(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(pods_dir(root)) if not n.startswith("."))
    except FileNotFoundError:
        return []


class PodRecord:
    """What readers (ps, get, inspect, logs, exec, rm) know about a pod."""

    def __init__(self, root: str, name: str):
        self.dir = pod_dir(root, name)
        self.name = name
        self.plan = read_json(os.path.join(self.dir, "plan.json"))
        if self.plan is None:
            raise NotFound(f'pod "{name}" not found')
        self.state = read_json(os.path.join(self.dir, "state.json")) or {}

    @property
    def supervisor_alive(self) -> bool:
        return process_alive(self.state.get("supervisor_pid"), self.state.get("supervisor_start"))

    @property
    def active(self) -> bool:
        """The pod's supervisor runs (it may be starting, running or stopping)."""
        return self.supervisor_alive

    def container(self, name: str | None) -> tuple[dict, dict]:
        """(plan, state) of a container; None = the first app container, as kubectl defaults."""
        ctrs = self.plan["init_containers"] + self.plan["containers"]
        if name is None:
            c = self.plan["containers"][0]
        else:
            match = [c for c in ctrs if c["name"] == name]
            if not match:
                choices = ", ".join(c["name"] for c in ctrs)
                raise NotFound(f'container "{name}" not found in pod "{self.name}" '
                               f"(choose one of: {choices})")
            c = match[0]
        return c, self.state.get("containers", {}).get(c["name"], {})


def proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks (field 22 of /proc/PID/stat): detects PID reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return int(data.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int | None, start: int | None) -> bool:
    if not pid:
        return False
    st = proc_start_time(pid)
    return st is not None and (start is None or st == start)

