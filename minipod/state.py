"""Pod state on disk: one directory per pod under <root>/pods/<name>.

    plan.json     the plan (written once by the CLI, read by the supervisor and by teardown)
    state.json    the runtime state (written by the supervisor)
    stop.json     a stop request (grace period) left by `minipod stop` before it signals
    etc/          the pod's hosts, hostname and resolv.conf, bind-mounted into containers
    rootfs/<ctr>  empty mount points: the overlays exist only inside the containers' namespaces

Writes are atomic and durable: temp file, fsync, rename, fsync of the directory. Readers never
lock: a rename is atomic, so they see the old or the new file, never half of one.

Reading is tolerant: a record can still be damaged (a disk full at the wrong time, a file
edited or deleted by hand, a crash between mkdir and the first write). A damaged record is a
PodRecord with `broken` saying what is wrong, in one line; `ps` shows it as Unknown and
`rm -f` removes whatever exists of it (kubelet/remains.py). One bad pod never hides the others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

from minipod.errors import Conflict, MinipodError, NotFound

# Pod phases (Kubernetes) plus the display values the runtime itself needs.
PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
FINAL = (SUCCEEDED, FAILED)
UNKNOWN = "Unknown"
# A directory this young with no plan.json is a `run` between its mkdir and its first write.
CLAIM_GRACE = 10.0
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"  # exec/attach/logs without -c


class Broken(MinipodError):
    """A pod's record on disk is damaged (the message says which file, and how)."""


# A pod name is a DNS subdomain (RFC 1123), as the manifest's validation requires. Checked here
# too, because a name read from the command line becomes a path that `rm -f` deletes:
# "../x" must never reach rmtree.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and ".." not in name


def pods_dir(root: str) -> str:
    return os.path.join(root, "pods")


def pod_dir(root: str, name: str) -> str:
    return os.path.join(pods_dir(root), name)


def write_json(path: str, data: dict) -> None:
    """Atomic and durable, as write_bytes."""
    write_bytes(path, json.dumps(data, indent=1, default=str).encode())


def write_bytes(path: str, data: bytes, mode: int = 0o666) -> None:
    """Atomic and durable: a crash at any point leaves the old file or the new one, whole.
    `mode` is the new file's from its first byte (umask applies), never widened later.

    The fsync of the file comes before the rename, or a power loss could leave the new name
    pointing at an empty file; the directory's fsync makes the rename itself durable.
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp)  # a crashed run's, of our PID: O_EXCL below must make the file itself
    except FileNotFoundError:
        pass
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: str) -> dict | None:
    """The object in a JSON file; None if it does not exist; Broken if it is not an object."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Broken(f"{path}: unreadable: {e.strerror}") from None
    name = os.path.basename(path)
    if not text.strip():
        raise Broken(f"{name}: empty")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise Broken(f"{name}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise Broken(f"{name}: a JSON {_kind(data)} where an object belongs")
    return data


def _kind(v) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(v), type(v).__name__)


# The fields readers use, and their types: a plan.json that lacks one is damaged, so that no
# reader ever fails on a KeyError deep inside a view.
PLAN_FIELDS = {"name": str, "namespace": str, "uid": str, "created": (int, float),
               "run_dir": str, "data_dir": str, "cgroup_parent": str, "pod_cgroup": str,
               "sandbox_cgroup": str, "bridge": str, "subnet": str, "host_veth": str,
               "grace_seconds": int, "qos_class": str, "restart_policy": str,
               "containers": list, "init_containers": list}
CONTAINER_FIELDS = {"name": str, "image": str, "image_ref": str, "image_digest": str,
                    "argv": list, "caps": list, "cgroup": str, "log_dir": str}
STATE_FIELDS = {"containers": dict, "events": list, "network": dict, "pause": dict}


def check_plan(plan: dict) -> None:
    _fields("plan.json", plan, PLAN_FIELDS)
    if not plan["containers"]:
        raise Broken("plan.json: no containers")
    for key in ("init_containers", "containers"):
        for i, c in enumerate(plan[key]):
            if not isinstance(c, dict):
                raise Broken(f"plan.json: {key}[{i}]: a JSON {_kind(c)} where an object belongs")
            _fields(f"plan.json: {key}[{i}]", c, CONTAINER_FIELDS)


def check_state(st: dict) -> None:
    for k, t in STATE_FIELDS.items():
        if st.get(k) is not None and not isinstance(st[k], t):
            raise Broken(f"state.json: {k}: a JSON {_kind(st[k])} where "
                         f"{'an object' if t is dict else 'an array'} belongs")
    for k in ("supervisor_pid", "supervisor_start", "janitor_pid", "janitor_start",
              "sandbox_pid"):
        if st.get(k) is not None and (not isinstance(st[k], int) or isinstance(st[k], bool)):
            raise Broken(f"state.json: {k}: {st[k]!r} is not a PID")
    for i, e in enumerate(st.get("events") or []):
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in
                                              ("type", "reason", "message")) \
                or not isinstance(e.get("firstTimestamp"), (int, float)):
            raise Broken(f"state.json: events[{i}]: not an event")
    for n, c in (st.get("containers") or {}).items():
        if not isinstance(c, dict) or not isinstance(c.get("state", {}), dict):
            raise Broken(f"state.json: containers.{n}: not a container status")


def _fields(where: str, d: dict, fields: dict) -> None:
    for k, t in fields.items():
        if k not in d:
            raise Broken(f"{where}: no field {k!r}")
        if not isinstance(d[k], t) or (isinstance(d[k], bool) and t is not bool):
            raise Broken(f"{where}: {k}: a JSON {_kind(d[k])} of the wrong type")


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
        return sorted(n for n in os.listdir(pods_dir(root)) if valid_name(n)
                      and os.path.isdir(os.path.join(pods_dir(root), n)))
    except FileNotFoundError:
        return []


class PodRecord:
    """What readers (ps, get, inspect, logs, exec, rm) know about a pod.

    `plan` and `state` are always dicts: when a file is missing or damaged, `broken` says so
    (one line) and `plan` holds only what the directory itself tells (name, age).
    """

    def __init__(self, root: str, name: str):
        if not valid_name(name):
            raise NotFound(f'pod "{name}" not found (not a valid pod name)')
        self.dir = pod_dir(root, name)
        self.name = name
        try:
            st = os.stat(self.dir)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f'pod "{name}" not found') from None
        problems: list[str] = []
        plan = self._load("plan.json", check_plan, problems)
        self.has_plan = plan is not None  # whole and usable: teardown can follow it
        if plan is None and not problems:
            problems.append("plan.json is missing")
        self.state = self._load("state.json", check_state, problems) or {}
        self.plan = plan or {"name": name, "created": st.st_mtime, "containers": [],
                             "init_containers": []}
        self.broken: str | None = "; ".join(problems) or None
        # Nothing written yet, just made: a `run` that has claimed the name a moment ago.
        self.creating = (self.broken == "plan.json is missing" and not self.state
                         and time.time() - st.st_mtime < CLAIM_GRACE)

    def _load(self, filename: str, check, problems: list[str]) -> dict | None:
        try:
            data = read_json(os.path.join(self.dir, filename))
            if data is not None:
                check(data)
            return data
        except Broken as e:
            problems.append(str(e))
            return None

    def require(self) -> "PodRecord":
        """Self, or Broken naming the damage: for the views that need the whole record."""
        if self.broken:
            raise Broken(f'pod "{self.name}" is damaged: {self.broken} '
                         f"(minipod rm -f {self.name} removes what is left of it)")
        return self

    @property
    def supervisor_alive(self) -> bool:
        return process_alive(self.state.get("supervisor_pid"), self.state.get("supervisor_start"))

    @property
    def active(self) -> bool:
        """The pod's supervisor runs (it may be starting, running or stopping)."""
        return self.supervisor_alive

    def container(self, name: str | None) -> tuple[dict, dict]:
        """(plan, state) of a container; None = kubectl's default: the one the
        kubectl.kubernetes.io/default-container annotation names, else the first app one."""
        self.require()
        ctrs = self.plan["init_containers"] + self.plan["containers"]
        if name is None:
            want = (self.plan.get("annotations") or {}).get(DEFAULT_CONTAINER)
            c = next((c for c in ctrs if c["name"] == want), self.plan["containers"][0])
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
    # PID 1 is never one of ours: a pod's processes re-parented to init are recorded as 1.
    if not pid or pid <= 1:
        return False
    st = proc_start_time(pid)
    return st is not None and (start is None or st == start)

