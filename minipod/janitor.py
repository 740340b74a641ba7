"""The janitor: the supervisor's parent, which cleans up if the supervisor dies unfinished.

It is a child subreaper that only waits, so it costs one sleeping interpreter (its pages are
shared with the supervisor it forked). Imports beyond os/signal happen only if it has to act.
"""

from __future__ import annotations

import os
import signal


def watch(run_dir_fd: int, supervisor: int) -> int:
    """Wait for the supervisor; `run_dir_fd` brings the pod's run directory once it has one."""
    # Ctrl-C reaches the whole foreground process group: it is the supervisor's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # `minipod run` in the foreground forwards SIGTERM here (its only child): pass it on.
    signal.signal(signal.SIGTERM, lambda *_: _forward(supervisor))
    with os.fdopen(run_dir_fd, "rb") as f:
        run_dir = f.readline().decode().strip()
    code = None
    while code is None:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == supervisor:
            code = os.waitstatus_to_exitcode(status)
    if not run_dir:
        return 0  # the CLI had no pod for us (an invalid manifest): nothing was created
    from minipod import state

    st = state.read_json(os.path.join(run_dir, "state.json")) or {}
    if st.get("final") and code is not None and code >= 0:
        return code
    cleanup(run_dir, f"the supervisor died unexpectedly (exit {code})")
    return 1


def _forward(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def cleanup(run_dir: str, why: str) -> None:
    """Tear down from the plan on disk and record the pod as failed. Idempotent."""
    import logging
    import time

    from minipod import cgroups, config, state
    from minipod.plan import PodPlan
    from minipod.pod import Pod

    plan_json = state.read_json(os.path.join(run_dir, "plan.json"))
    if plan_json is None:
        return
    cfg = config.load()
    plan = PodPlan.from_json(plan_json)
    pod = Pod(plan, cgroups.detect(cfg.cgroup_root, cfg.cgroup_driver), [])
    try:
        pod.teardown()
    except Exception as e:  # noqa: BLE001 - record it; `rm` will try again
        logging.getLogger("minipod").warning("cleanup of %s: %s", plan.name, e)
        why += f"; cleanup incomplete: {e}"
    path = os.path.join(run_dir, "state.json")
    st = state.read_json(path) or {}
    st.update(final=True, stopping=False, phase=state.FAILED, message=why, sandbox_pid=0,
              finished_at=time.time())
    for c in (st.get("containers") or {}).values():
        if "running" in c.get("state", {}) or "waiting" in c.get("state", {}):
            c["state"] = {"terminated": {"reason": "Error", "exitCode": 137,
                                         "message": "killed: the supervisor died"}}
        c["pid"] = 0
    if os.path.isdir(run_dir):
        state.write_json(path, st)
