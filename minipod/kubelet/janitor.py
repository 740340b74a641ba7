"""The janitor: the supervisor's parent, which cleans up if the supervisor dies unfinished.

Two implementations keep one protocol. The C janitor (pause/janitor.c, ~0.7 MB RSS) is used
when built; it execs `python -m minipod.kubelet.janitor RUN_DIR WHY` only when there is something to
clean. Without a C compiler this Python one runs instead (daemon.py forks it before any
import, so it costs one sleeping interpreter, ~10 MB RSS / ~3 MB private per pod).

The protocol: the supervisor writes its run directory, one line, when it gets a pod, and
"done", one line, once it has torn the pod down and recorded its end. A supervisor that exits
without "done" died unfinished: the janitor tears the pod down from the plan on disk (or
from whatever is left of the pod's record: remains.py).

The supervisor watches its janitor in turn (daemon.Guard): one that dies before the pod runs
fails the start; one that dies later is reported (a JanitorLost event, janitorPid 0).
"""

from __future__ import annotations

import os
import signal
import sys


def find(configured: str = "") -> str | None:
    """The C janitor to exec, or None for this Python one. `configured` (config `janitor`,
    $MINIPOD_JANITOR): a path to try first, or "python" to ask for the Python janitor."""
    if configured == "python":
        return None
    from minipod.pod import pause

    return pause.first_executable([p for p in (configured, *pause.installed("janitor")) if p])


def watch(pipe_fd: int, supervisor: int) -> int:
    """Wait for the supervisor, whose messages (see the module doc) come on `pipe_fd`."""
    # Ctrl-C reaches the whole foreground process group: it is the supervisor's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # `minipod run` in the foreground forwards SIGTERM here (its only child): pass it on.
    signal.signal(signal.SIGTERM, lambda *_: _forward(supervisor))
    msg = b""
    while b"\n" not in msg and (chunk := os.read(pipe_fd, 4096)):
        msg += chunk
    if b"\n" in msg:
        from minipod.kubelet import titles

        titles.set_for(titles.JANITOR, msg.decode().partition("\n")[0])
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
    # "done" came before the supervisor exited; its forked helpers may still hold the pipe.
    os.set_blocking(pipe_fd, False)
    try:
        while chunk := os.read(pipe_fd, 4096):
            msg += chunk
    except BlockingIOError:
        pass
    os.close(pipe_fd)
    run_dir, newline, rest = msg.decode().partition("\n")
    if not newline:
        # The CLI had no pod for us (an invalid manifest): nothing was created. A supervisor
        # that died this early may leave its network agent to us: wait for it (janitor.c).
        _reap_all()
        return 0
    if "done\n" in rest and code is not None and code >= 0:
        return code
    cleanup(run_dir, f"the supervisor died unexpectedly (exit {code})")
    return 1


def _reap_all() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _forward(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def cleanup(run_dir: str, why: str) -> None:
    """Tear down what the pod holds (from its plan, or from whatever is left of its record:
    remains.py) and record the pod as failed. Its data directory stays, for `logs`; `rm`
    removes it. Idempotent."""
    import time

    from minipod import config, state
    from minipod.kubelet import remains

    run_dir = run_dir.rstrip("/")
    cfg = config.load()
    rem = remains.find(cfg, os.path.basename(run_dir), os.path.dirname(os.path.dirname(run_dir)))
    errors = remains.teardown(cfg, rem)
    if errors:
        print(f"minipod: cleanup of {rem.name}: {'; '.join(errors)}", file=sys.stderr)
        why += f"; cleanup incomplete: {'; '.join(errors)}"
    if rem.record is None:
        return  # no record to write the outcome into (`rm` removed it meanwhile)
    path = os.path.join(run_dir, "state.json")
    st = dict(rem.record.state)
    st.update(final=True, stopping=False, phase=state.FAILED, message=why, sandbox_pid=0,
              finished_at=time.time())
    for c in (st.get("containers") or {}).values():
        if "running" in c.get("state", {}) or "waiting" in c.get("state", {}):
            c["state"] = {"terminated": {"reason": "Error", "exitCode": 137,
                                         "message": "killed: the supervisor died"}}
        c["pid"] = 0
    try:
        state.write_json(path, st)
    except FileNotFoundError:
        pass  # `rm -f` removed the run directory meanwhile: nothing left to record


if __name__ == "__main__":
    # What the C janitor execs when its supervisor died unfinished: RUN_DIR WHY.
    cleanup(sys.argv[1], sys.argv[2])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # the pod failed; skip the interpreter's teardown (`rm` waits for our exit)
