"""The library behind `run`, `stop` and `rm`: start a pod's supervisor and talk to it.

A pod is driven by its own supervisor process (supervisor.py), never by the CLI: the CLI plans,
hands the plan over, waits for "ready" (or the error, after the supervisor rolled back), and --
in the foreground -- waits for the pod to end, which is what Ctrl-C or SIGTERM ask for.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

from minipod import _libc, state
from minipod.errors import Conflict, MinipodError, SetupError


def load_plans(path: str, cfg, err=sys.stderr) -> list:
    from minipod import plan as planmod
    from minipod import spec
    from minipod.images.store import ImageStore

    res = spec.load(path)
    for w in res.warnings:
        print(f"warning: {w}", file=err)
    store = ImageStore(cfg.image_root)
    plans = [planmod.build(lp, cfg, store, path) for lp in res.pods]
    seen = set()
    for p in plans:
        if p.name in seen:
            raise MinipodError(f"{path}: two pods are named {p.name!r}")
        seen.add(p.name)
    return plans


def run(path: str, cfg, detach: bool, dry_run: bool = False, out=sys.stdout,
        err=sys.stderr) -> int:
    agent = None
    if not dry_run:
        # pyroute2 takes 0.1-0.2 s to import: start the network helper now, so that import
        # overlaps parsing, validation and planning instead of following them.
        from minipod.net import agent as agentmod

        agent = agentmod.start()
    try:
        plans = load_plans(path, cfg, err)
        if dry_run:
            json.dump([p.to_json() for p in plans], out, indent=2, default=str)
            out.write("\n")
            return 0
        procs = []
        for i, p in enumerate(plans):
            procs.append(launch(p, cfg, agent if i == 0 else None, detach))
            agent = None  # handed to the first pod's supervisor; others start their own
    except BaseException:
        if agent is not None:
            agent.close()
        raise
    if detach:
        for p in plans:
            print(p.name, file=out)
        return 0
    return wait_foreground(procs)


def launch(plan, cfg, agent, detach: bool) -> int:
    """Start the pod's supervisor; return its (janitor) PID once the pod runs."""
    run_dir = state.claim(cfg.root, plan.name)
    try:
        state.write_json(os.path.join(run_dir, "plan.json"), plan.to_json())
        r, w = os.pipe()
        agent_fd = agent.fileno() if agent is not None else -1
        pid = os.fork()
        if pid == 0:
            _exec_supervisor(run_dir, w, agent_fd, detach)
        os.close(w)
        if agent is not None:
            agent.pid = None  # the supervisor owns it now: close our end, don't wait for it
            agent.close()
        with os.fdopen(r, "rb") as f:
            line = f.readline()
        msg = json.loads(line) if line.strip() else {"ok": False, "error": "supervisor died"}
        if not msg.get("ok"):
            os.waitpid(pid, 0)
            raise SetupError(f'pod "{plan.name}": {msg.get("error")}')
        return pid
    except BaseException:
        state.remove_dir(run_dir)  # the supervisor rolled everything else back
        raise


def _exec_supervisor(run_dir: str, ready_w: int, agent_fd: int, detach: bool) -> None:
    try:
        if detach:
            os.setsid()
            null = os.open("/dev/null", os.O_RDWR)
            log = os.open(os.path.join(run_dir, "supervisor.log"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
        else:
            # If `minipod run` itself is killed, stop the pod rather than orphan it.
            _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGTERM)
        for fd in (ready_w, agent_fd):
            if fd >= 0:
                os.set_inheritable(fd, True)
        argv = [sys.executable, "-m", "minipod.supervisor", run_dir, "--ready-fd", str(ready_w),
                "--agent-fd", str(agent_fd), "--foreground", "0" if detach else "1"]
        os.execv(sys.executable, argv)
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


def wait_gone(pid: int, start: int | None, timeout: float) -> bool:
    """Wait for a process that is not our child to exit (pidfd: no polling of /proc)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not state.process_alive(pid, start):
            return True
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def stop(name: str, cfg, grace: int | None = None) -> None:
    rec = state.PodRecord(cfg.root, name)
    if not rec.active:
        if not rec.state.get("final"):
            from minipod.janitor import cleanup

            cleanup(rec.dir, "stopped after its supervisor was gone")
        return
    if grace is not None:
        state.write_json(os.path.join(rec.dir, "stop.json"), {"grace": grace})
    pid, start = rec.state["supervisor_pid"], rec.state.get("supervisor_start")
    _kill(pid, signal.SIGTERM)
    effective = grace if grace is not None else rec.plan["grace_seconds"]
    if not wait_gone(pid, start, effective + 60):
        raise MinipodError(f'pod "{name}" did not stop within {effective + 60}s')
    # The janitor exits right after the supervisor; it is what releases the run directory.
    jpid = rec.state.get("janitor_pid")
    if jpid:
        wait_gone(jpid, None, 10)


def remove(name: str, cfg, force: bool = False) -> None:
    rec = state.PodRecord(cfg.root, name)
    if rec.active:
        if not force:
            raise Conflict(f'pod "{name}" is running: stop it first, or use rm -f')
        stop(name, cfg, grace=0)
    from minipod.janitor import cleanup

    cleanup(rec.dir, "removed")  # idempotent: after a crash this is what frees everything
    import shutil

    shutil.rmtree(rec.plan["data_dir"], ignore_errors=True)
    state.remove_dir(rec.dir)


def wait_until(cond, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()
