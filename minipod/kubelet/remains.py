"""What exists of a pod, found from whatever is left of its record; and its removal.

`rm -f` must free a pod whatever is left of it: a whole record (the plan names everything), a
damaged one, or nothing but its name. Each resource is found from the plan when there is one,
and otherwise from what the name and the configuration derive (see plan.py's naming):

    processes   everything in the pod's cgroup tree <cgroup_parent>/<prefix>-<name>.slice
    supervisor  state.json's PID, or the process writing to <run_dir>/supervisor.log
    uid         plan.json; the data directory <data_root>/pods/<namespace>_<name>_<uid>;
                the IP in state.json, whose lease file names its owner (the uid)
    veth        plan.json; state.json's network; else plan.host_veth(uid)
    netns name  plan.json; else plan.netns_path(prefix, name, uid) in /run/netns
    pins        <root>/sandboxes/<name> (a pinned sandbox's namespaces and /dev/shm)
    leases      those the uid owns (the network goes with the last one)
    mounts      whatever is mounted under the run or data directories

Every step is idempotent (gone = done) and runs even when an earlier one failed: the errors are
collected and reported together, so a second `rm -f` finishes what the first could not.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from dataclasses import dataclass, field

from minipod import state
from minipod.errors import MinipodError, NotFound

MNT_DETACH = 2


@dataclass
class Remains:
    name: str
    run_dir: str
    record: state.PodRecord | None
    pod_cgroup: str
    cgroup_parent: str
    uids: dict[str, str] = field(default_factory=dict)  # uid -> host veth
    data_dirs: list[str] = field(default_factory=list)
    pin_dir: str = ""  # where a pinned sandbox's namespaces would be (plan.pin_dir)

    @property
    def plan(self) -> dict | None:
        return self.record.plan if self.record is not None and self.record.has_plan else None

    def exists(self, cfg) -> bool:
        if self.record is not None or self.data_dirs or self.uids or os.path.isdir(self.pin_dir):
            return True
        return any(os.path.isdir(p) for p in cgroup_driver(cfg).paths(self.pod_cgroup).values())


def find(cfg, name: str, root: str | None = None) -> Remains:
    """What exists of pod `name` (records under `root`, default the configured one)."""
    from minipod.pod import plan as planmod

    if not state.valid_name(name):  # it becomes paths that are deleted
        raise NotFound(f'pod "{name}" not found (not a valid pod name)')
    root = root or cfg.root
    try:
        rec = state.PodRecord(root, name)
    except MinipodError:
        rec = None
    pod_cgroup, _ = planmod.cgroup_names(cfg.cgroup_parent, cfg.cgroup_prefix, name)
    rem = Remains(name, state.pod_dir(root, name), rec, pod_cgroup, cfg.cgroup_parent,
                  pin_dir=planmod.pin_dir(root, name))
    plan = rem.plan
    st = rec.state if rec is not None else {}
    if plan:
        rem.pod_cgroup, rem.cgroup_parent = plan["pod_cgroup"], plan["cgroup_parent"]
        rem.uids[plan["uid"]] = plan["host_veth"]
        rem.data_dirs.append(plan["data_dir"])
    # The data directories of this name: a plan names one, a crash may have left others.
    pods = os.path.join(cfg.data_root, "pods")
    try:
        entries = os.listdir(pods)
    except OSError:
        entries = []
    for e in entries:
        parts = e.split("_")  # <namespace>_<name>_<uid>: DNS names and UUIDs have no "_"
        if len(parts) == 3 and parts[1] == name:
            path = os.path.join(pods, e)
            if path not in rem.data_dirs:
                rem.data_dirs.append(path)
            rem.uids.setdefault(parts[2], planmod.host_veth(parts[2]))
    net = st.get("network") or {}
    owner = _lease_owner(cfg, net.get("ip"))
    if owner:
        rem.uids.setdefault(owner, net.get("host_veth") or planmod.host_veth(owner))
    return rem


def _lease_owner(cfg, ip) -> str | None:
    from minipod.net import NetConfig, ipam

    if not isinstance(ip, str) or not ip:
        return None
    try:
        return ipam.leases(NetConfig.under(cfg.root, cfg.bridge, cfg.subnet).state_dir).get(ip)
    except Exception:  # noqa: BLE001 - an unreadable lease directory: no owner to learn
        return None


# --- the pod's own processes ---------------------------------------------------------------------

def supervisor(rem: Remains, driver=None) -> tuple[int, int | None] | None:
    """(pid, start time) of the pod's live supervisor, or None."""
    st = rem.record.state if rem.record is not None else {}
    pid, start = st.get("supervisor_pid"), st.get("supervisor_start")
    if state.process_alive(pid, start):
        return pid, start
    # state.json is damaged or stale. The supervisor is the parent of its pause and of its
    # containers' PID 1s (a subreaper, it adopts them): killing those alone would only make it
    # restart them.
    if driver is not None:
        for p in driver.procs(rem.pod_cgroup):
            parent = _ppid(p)
            if parent and _is_minipod(parent):
                return parent, state.proc_start_time(parent)
    # Or the process that logs to the run directory (a detached supervisor does).
    log = os.path.join(rem.run_dir, "supervisor.log")
    for p in _pids():
        try:
            # " (deleted)": the run directory itself is gone, the supervisor still runs.
            if os.readlink(f"/proc/{p}/fd/1") in (log, log + " (deleted)") and _is_minipod(p):
                return p, state.proc_start_time(p)
        except OSError:
            continue
    return None


def janitors(rem: Remains) -> list[tuple[int, int | None]]:
    """Janitors at work on this pod: recorded in state.json, or the C janitor's clean-up
    (`python -m minipod.kubelet.janitor RUN_DIR WHY`). `rm` waits for them rather than
    tearing down beside them."""
    st = rem.record.state if rem.record is not None else {}
    out = []
    pid, start = st.get("janitor_pid"), st.get("janitor_start")
    if state.process_alive(pid, start) and _is_minipod(pid):
        out.append((pid, start))
    for p in _pids():
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"minipod.kubelet.janitor" in argv and rem.run_dir.encode() in argv \
                and p not in [j[0] for j in out]:
            out.append((p, state.proc_start_time(p)))
    return out


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def janitor_of(pid: int) -> tuple[int, int | None] | None:
    """The supervisor's parent if it is its janitor (never PID 1, nor a foreign subreaper)."""
    ppid = _ppid(pid)
    if not ppid or ppid <= 1 or not _is_minipod(ppid):
        return None
    return ppid, state.proc_start_time(ppid)


def _is_minipod(pid: int) -> bool:
    """A supervisor, a janitor, or a janitor that has become the clean-up (same PID)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    from minipod.kubelet import titles

    return (b"minipod.kubelet.daemon" in argv or b"minipod.kubelet.janitor" in argv
            or titles.role_of(argv) is not None)


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def wait_gone(pid: int, start: int | None, timeout: float) -> bool:
    """Wait for a process that is not our child to exit (pidfd: no polling of /proc)."""
    import select

    if not state.process_alive(pid, start):
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not state.process_alive(pid, start):
            return True
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def kill_supervisor(cfg, rem: Remains, grace: int = 0, timeout: float = 60) -> None:
    """Stop the pod's supervisor (SIGTERM: it tears its pod down; SIGKILL if it does not go),
    then wait for its janitor, which removes nothing once the supervisor said "done"."""
    found = supervisor(rem, cgroup_driver(cfg))
    if found is None:
        for jan in janitors(rem):  # its supervisor is dead: a janitor may be cleaning up
            wait_gone(*jan, 30)
        return
    pid, start = found
    jan = janitor_of(pid)
    if os.path.isdir(rem.run_dir):
        state.write_json(os.path.join(rem.run_dir, "stop.json"), {"grace": grace})
    _kill(pid, signal.SIGTERM)
    if not wait_gone(pid, start, grace + timeout):
        _kill(pid, signal.SIGKILL)
        wait_gone(pid, start, 5)
    for j in [jan] if jan else janitors(rem):
        wait_gone(*j, 30)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# --- teardown -------------------------------------------------------------------------------------

def cgroup_driver(cfg):
    """The cgroup driver of the configuration."""
    from minipod import cgroups

    return cgroups.detect(cfg.cgroup_root, cfg.cgroup_driver)


def teardown(cfg, rem: Remains) -> list[str]:
    """Free what the pod holds on the host (its data directories stay). Errors, one line each."""
    from minipod import net
    from minipod.net import NetConfig

    errors: list[str] = []

    def step(what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - every step runs; see the module doc
            errors.append(f"{what}: {e}")

    driver = cgroup_driver(cfg)
    plan = rem.plan
    if plan:  # the plan knows best: the orchestrator's own teardown
        from minipod.pod.plan import PodPlan
        from minipod.pod.pod import Pod

        try:
            pod = Pod(PodPlan.from_json(plan), driver, [])
        except (TypeError, KeyError, ValueError) as e:
            errors.append(f"plan.json: {e}")
        else:
            step("teardown", pod.teardown)
    step("kill the pod's processes", _kill_tree, driver, rem.pod_cgroup)
    netcfg = NetConfig.under(cfg.root, cfg.bridge, cfg.subnet)
    if plan:
        netcfg = NetConfig(plan["bridge"], plan["subnet"], plan.get("net_state_dir")
                           or netcfg.state_dir)
    from minipod.net import hostport

    from minipod.pod.plan import hostport_dir

    ports = hostport_dir(os.path.dirname(os.path.dirname(rem.run_dir)))
    # By uid, and by name: `run` reserves a pod's ports before its plan.json exists.
    held = set(rem.uids) | set(_step_value(errors, "hostPorts", hostport.owners, ports,
                                           rem.name) or {})
    for uid in sorted(held):
        step(f"hostPorts of {uid}", hostport.release, ports, uid)
    from minipod.kernel import nspin
    from minipod.net import netns
    from minipod.pod.plan import netns_path

    # The pins of a pinned sandbox hold its netns as the name does (pod/pinned.py).
    step("pinned namespaces", nspin.remove_dir, rem.pin_dir)
    for uid, veth in rem.uids.items():
        # The netns name first: it would keep the netns, and the pod's end of the veth, alive.
        step(f"netns name of {uid}", netns.unpin, netns_path(cfg.cgroup_prefix, rem.name, uid))
        step(f"network of {uid}", net.teardown_pod, netcfg, uid, veth)
    step("unmount", _unmount_under, [rem.run_dir, *rem.data_dirs, rem.pin_dir])
    step("cgroups", _remove_tree, driver, rem.pod_cgroup, rem.cgroup_parent)
    shutil.rmtree(os.path.join(rem.run_dir, "rootfs"), ignore_errors=True)
    return errors


def _step_value(errors: list[str], what: str, fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - as teardown's steps: collected, not raised
        errors.append(f"{what}: {e}")
        return None


def _kill_tree(driver, group: str, timeout: float = 10.0) -> None:
    from minipod.pod.pod import reap

    deadline = time.monotonic() + timeout
    while pids := driver.procs(group):
        driver.kill(group, signal.SIGKILL)
        reap()
        if time.monotonic() > deadline:
            raise MinipodError(f"processes {pids} in {group} would not die")
        time.sleep(0.01)


def _remove_tree(driver, group: str, parent: str) -> None:
    """The group and every group below it, leaves first; then the parent if it is unused."""
    from minipod.cgroups import fs

    groups = {group}
    for base in driver.paths(group).values():
        for d in fs.walk(base):
            rel = os.path.relpath(d, base)
            if rel != ".":
                groups.add(f"{group}/{rel}")
    for g in sorted(groups, key=lambda g: -g.count("/")):
        driver.remove(g)
    try:
        driver.remove(parent)  # busy while other pods exist: that's fine
    except Exception:  # noqa: BLE001
        pass


def _unmount_under(dirs: list[str]) -> None:
    """Detach every mount at or below these directories, deepest first."""
    tops = [os.path.realpath(d) for d in dirs if d]
    with open("/proc/self/mountinfo") as f:
        points = [_unescape(ln.split()[4]) for ln in f]
    found = [p for p in points if any(p == t or p.startswith(t + "/") for t in tops)]
    from minipod.kernel import _libc

    for p in sorted(set(found), key=lambda p: -p.count("/")):
        try:
            _libc.umount2(p, MNT_DETACH)  # detach: a busy mount must not stop the removal
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):  # not a mount (any more), gone
                raise MinipodError(str(e)) from None


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def remove(cfg, name: str) -> None:
    """Everything of the pod, its record and data included; MinipodError if a part stays."""
    rem = find(cfg, name)
    kill_supervisor(cfg, rem)
    rem = find(cfg, name)  # the supervisor may have recorded more (or torn everything down)
    errors = teardown(cfg, rem)
    if errors:
        # The record stays, so that `rm -f` can be run again to finish the job.
        raise MinipodError(f'pod "{name}": could not remove everything: {"; ".join(errors)}')
    for d in rem.data_dirs:
        shutil.rmtree(d, ignore_errors=True)
    state.remove_dir(rem.run_dir)
