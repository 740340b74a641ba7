"""The library behind `run`, `stop` and `rm`: start a pod's supervisor and talk to it.

A pod is driven by its own supervisor process (supervisor.py), never by the CLI: the CLI plans,
hands the plan over, waits for "ready" (or the error, after the supervisor rolled back), and --
in the foreground -- waits for the pod to end, which is what Ctrl-C or SIGTERM ask for.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from minipod import python_m, state, trace
from minipod.errors import Conflict, MinipodError, NotFound, SetupError
from minipod.kernel import _libc


def load_plans(path: str, cfg, err=sys.stderr, configmaps: list[str] | None = None) -> list:
    from minipod import objectstore
    from minipod.images.store import ImageStore
    from minipod.pod import plan as planmod
    from minipod.spec import spec

    res = spec.load(path, configmaps or (), objectstore.Store(cfg))
    for w in res.warnings:
        print(f"warning: {w}", file=err)
    store = ImageStore(cfg.image_root)
    # imagePullPolicy, with Kubernetes' defaults (Always for :latest), before planning: the
    # plan pins the exact layers.
    from minipod.images import pull

    wanted = set()
    for lp in res.pods:
        for c in [*(lp.pod.spec.init_containers or []), *lp.pod.spec.containers]:
            if (c.image, c.image_pull_policy) not in wanted:
                wanted.add((c.image, c.image_pull_policy))
                pull.ensure(store, cfg, c.image, c.image_pull_policy, err=err)
    plans = [planmod.build(lp, cfg, store, path, res.objects) for lp in res.pods]
    for w in (w for p in plans for w in p.warnings):
        print(f"warning: {w}", file=err)
    seen = set()
    for p in plans:
        if p.name in seen:
            raise MinipodError(f"{path}: two pods are named {p.name!r}")
        seen.add(p.name)
    return plans


def run(path: str, cfg, detach: bool, dry_run: bool = False, out=sys.stdout,
        err=sys.stderr, configmaps: list[str] | None = None,
        explain: str | None = None, step: bool = False, spawn=None) -> int:
    """`explain`: None, "text" or "json" -- print every primitive as the pod is built.
    `step`: stop after each stage of the set-up until Enter (stdin).
    `spawn`: the class that starts a pod's janitor + supervisor (Daemon's interface):
    Daemon, or the node agent's forking one (minipod/agent/zygote.py)."""
    if dry_run:
        plans = load_plans(path, cfg, err, configmaps)
        json.dump([p.to_json() for p in plans], out, indent=2, default=str)
        out.write("\n")
        return 0
    import contextlib

    from minipod.cli import explaining

    names: list[str] = []
    with contextlib.ExitStack() as stack:
        extra: dict[str, str] = {}
        if explain:
            extra["MINIPOD_EXPLAIN"] = stack.enter_context(
                explaining.Follower(explain, out)).path
        if step:
            extra["MINIPOD_STEP"] = stack.enter_context(
                explaining.Stepper(out, sys.stdin)).env
        rc = _run(path, cfg, detach, out, err, extra, configmaps, names, spawn or Daemon)
    # After the explanation is drained: `run -d` ends with the pod names, as without --explain.
    for name in names:
        print(name, file=out)
    return rc


def _run(path: str, cfg, detach: bool, out, err, extra: dict[str, str],
         configmaps: list[str] | None, names: list[str], spawn) -> int:
    # Start the first pod's background processes now: their imports (and the network agent's
    # pyroute2) then overlap our parsing and validation instead of following them.
    trace.mark("cli: start daemon")
    spare = spawn(detach, cfg.janitor, extra)
    try:
        plans = load_plans(path, cfg, err, configmaps)
        trace.mark("cli: planned")
    except BaseException:
        spare.cancel()
        raise
    pids = launch_all(plans, cfg, spare, detach, extra, spawn)
    if detach:
        names += [p.name for p in plans]
        return 0
    return wait_foreground(pids)


class Daemon:
    """A pod's janitor + supervisor pair (daemon.py), started before it is given its pod."""

    def __init__(self, detach: bool, janitor: str = "", extra: dict[str, str] | None = None):
        """`extra`: $MINIPOD_EXPLAIN, $MINIPOD_STEP for the daemon only (explain.py,
        stepping.py); the descriptors $MINIPOD_STEP names are passed on to it."""
        plan_r, self.plan_w = os.pipe()
        self.ready_r, ready_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            for k, v in (extra or {}).items():
                os.environ[k] = v
                if k == "MINIPOD_STEP":
                    for fd in v.split(","):
                        os.set_inheritable(int(fd), True)
            _exec_daemon(plan_r, ready_w, detach, janitor)
        os.close(plan_r)
        os.close(ready_w)

    def cancel(self) -> None:
        """No pod after all: EOF on the plan pipe makes both exit, having created nothing."""
        os.close(self.plan_w)
        os.close(self.ready_r)
        os.waitpid(self.pid, 0)

    def wait(self) -> None:
        """Until the janitor (our child) has exited, with whatever clean-up it did."""
        _wait_child(self.pid)

    def hand(self, run_dir: str) -> dict:
        """Give it the pod; return its answer once the pod runs (or has been rolled back)."""
        try:
            os.write(self.plan_w, run_dir.encode() + b"\n")
        except BrokenPipeError:
            # It died before taking the pod: EOF on the ready pipe below says so. (Raised,
            # this would pass for a closed stdout, which the CLI ends quietly with 0.)
            pass
        finally:
            os.close(self.plan_w)
        with os.fdopen(self.ready_r, "rb") as f:
            line = f.readline()
        return json.loads(line) if line.strip() else {"ok": False, "error": "supervisor died"}


def launch_all(plans: list, cfg, spare: Daemon, detach: bool, extra: dict[str, str],
               spawn) -> list[int]:
    """Start every pod of a file, or none: if one fails (a name taken by a running pod, a
    set-up error), the pods already started are removed again before the error is raised.
    A file is one unit, as `podman kube play` treats it; `kubectl apply` would leave the first
    pods running, which here would be pods nobody asked for on their own. (Every document was
    validated and planned before this: a bad document never starts any pod.)"""
    pids: list[int] = []
    for i, p in enumerate(plans):
        try:
            pids.append(launch(p, cfg, spare if i == 0 else
                               spawn(detach, cfg.janitor, extra)))
        except BaseException as e:
            started = [q.name for q in plans[:i]]
            for name in reversed(started):
                try:
                    remove(name, cfg, force=True)
                except MinipodError as undo:
                    print(f'error: pod "{name}": could not be removed again: {undo}',
                          file=sys.stderr)
            for pid in pids:  # the removed pods' daemons are our children: reap them
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            if started and isinstance(e, MinipodError):
                names = ", ".join(f'"{n}"' for n in started)
                what = f"pod {names} was" if len(started) == 1 else f"pods {names} were"
                err = MinipodError(f"{e} (nothing was left running: {what} removed again; a"
                                   " file runs all its pods or none)")
                err.exit_code = e.exit_code
                raise err from None
            raise
    return pids


def launch(plan, cfg, daemon: Daemon) -> int:
    """Give the pod to its daemon; return the daemon's PID once the pod runs."""
    try:
        run_dir = _claim(plan.name, cfg)
    except BaseException:
        daemon.cancel()
        raise
    if plan.host_ports:
        # After the claim (a running pod of this name is the better error, and a stopped one
        # is replaced, its ports freed) and before anything of the pod exists: a taken port
        # leaves nothing behind but this error.
        from minipod.net import hostport

        try:
            hostport.reserve(plan.hostport_dir, plan.uid, plan.name,
                             [hostport.Mapping(**m) for m in plan.host_ports])
        except BaseException as e:
            daemon.cancel()
            state.remove_dir(run_dir)
            if isinstance(e, MinipodError):
                raise SetupError(f'pod "{plan.name}": {e}') from None
            raise
    try:
        state.write_json(os.path.join(run_dir, "plan.json"), plan.to_json())
        msg = daemon.hand(run_dir)
        trace.mark("cli: pod ready")
        if not msg.get("ok"):
            raise SetupError(f'pod "{plan.name}": {msg.get("error")}')
        return daemon.pid
    except BaseException:
        # The supervisor rolled back, or died and its janitor is cleaning up: wait for the
        # daemon (the janitor is our child) so that nobody tears down beside us, then remove
        # whatever is left -- a supervisor killed mid-setup leaves its data directory, which
        # only `rm` removes, and this pod has no record for anyone to `rm` once we are done.
        daemon.wait()
        from minipod.kubelet import remains

        try:
            remains.remove(cfg, plan.name)
        except MinipodError as e:
            print(f"warning: {e} (minipod rm -f {plan.name} tries again)", file=sys.stderr)
        raise


def _wait_child(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


def _claim(name: str, cfg) -> str:
    """The pod's run directory. A stopped pod of the same name is replaced (its record and
    logs go), as running a manifest again after Ctrl-C should just work; a running one is not,
    and neither is a name another `run` has claimed a moment ago."""
    from minipod.kubelet import remains

    try:
        return state.claim(cfg.root, name)
    except Conflict:
        try:
            rec = state.PodRecord(cfg.root, name)
        except MinipodError:
            return state.claim(cfg.root, name)  # removed meanwhile
        if rec.creating:
            raise
        if rec.active and rec.state.get("final"):
            # Its supervisor has finished and is on its way out: let it go first.
            remains.wait_gone(rec.state["supervisor_pid"], rec.state.get("supervisor_start"),
                              10)
        if remains.supervisor(remains.find(cfg, name), remains.cgroup_driver(cfg)) is not None:
            raise
        remove(name, cfg)  # stopped, or damaged beyond use: replaced
        return state.claim(cfg.root, name)


def _exec_daemon(plan_r: int, ready_w: int, detach: bool, janitor: str) -> None:
    try:
        if detach:
            os.setsid()
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
        else:
            # If `minipod run` itself is killed, stop the pod rather than orphan it.
            _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGTERM)
        for fd in (plan_r, ready_w):
            os.set_inheritable(fd, True)
        argv = [*python_m("minipod.kubelet.daemon"), "--plan-fd", str(plan_r),
                "--ready-fd", str(ready_w), "--foreground", "0" if detach else "1"]
        from minipod.kubelet.janitor import find

        c_janitor = find(janitor)  # the C janitor starts the daemon as its child (janitor.c)
        if c_janitor:
            argv = [c_janitor, "--", *argv]
        os.execv(argv[0], argv)
    finally:
        os._exit(127)


def wait_foreground(pids: list[int]) -> int:
    """Wait for the pods; Ctrl-C reaches their supervisors directly (same process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: [_kill(p, signal.SIGTERM) for p in pids])
    code = 0
    for pid in pids:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        code = code or os.waitstatus_to_exitcode(status)
    return code


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop(name: str, cfg, grace: int | None = None) -> None:
    from minipod.kubelet import remains

    rec = state.PodRecord(cfg.root, name)
    rem = remains.find(cfg, name)
    found = remains.supervisor(rem, remains.cgroup_driver(cfg))
    if found is None:
        for j in remains.janitors(rem):  # its supervisor died: let its janitor finish first
            remains.wait_gone(*j, 30)
        rec = state.PodRecord(cfg.root, name)
        if not rec.state.get("final"):
            from minipod.kubelet.janitor import cleanup

            cleanup(rec.dir, "stopped after its supervisor was gone")
        return
    pid, start = found
    jan = remains.janitor_of(pid)  # now: once the supervisor is gone its parent is someone else
    if grace is not None:
        state.write_json(os.path.join(rec.dir, "stop.json"), {"grace": grace})
    _kill(pid, signal.SIGTERM)
    effective = grace if grace is not None else rec.plan.get("grace_seconds", 30)
    if not remains.wait_gone(pid, start, effective + 60):
        raise MinipodError(f'pod "{name}" did not stop within {effective + 60}s')
    # The janitor exits right after the supervisor; it is what releases the run directory.
    if jan:
        remains.wait_gone(*jan, 10)


def remove(name: str, cfg, force: bool = False) -> None:
    """Remove a pod: whatever exists of it, however damaged its record (remains.py)."""
    from minipod.kubelet import remains

    rem = remains.find(cfg, name)
    if not rem.exists(cfg):
        raise NotFound(f'pod "{name}" not found')
    if remains.supervisor(rem, remains.cgroup_driver(cfg)) is not None:
        if not force:
            raise Conflict(f'pod "{name}" is running: stop it first, or use rm -f')
        if rem.record is not None:
            stop(name, cfg, grace=0)
            rem = remains.find(cfg, name)  # what the supervisor recorded as it ended
    rec = rem.record
    if rec is not None and not rec.broken and rec.state.get("final") \
            and "cleanup incomplete" not in rec.state.get("message", ""):
        # Its supervisor tore it down and said so: only the data and the record are left.
        import shutil

        shutil.rmtree(rec.plan["data_dir"], ignore_errors=True)
        state.remove_dir(rec.dir)
        if not remains.find(cfg, name).data_dirs:
            return
    remains.remove(cfg, name)  # kills a supervisor that is still there, then frees the rest
