"""The per-pod background processes, started by `minipod run` before it has even read the
manifest:

    python -m minipod.daemon --plan-fd N --ready-fd N --foreground 0|1

This process forks at once. The parent becomes the *janitor* (janitor.py): a child subreaper
that waits, and cleans up if the supervisor dies unfinished. It forks before importing anything,
so it stays a bare interpreter whose pages the supervisor shares. The child becomes the
*supervisor*: it starts the network agent (whose pyroute2 import, 0.1-0.2 s, now overlaps the
CLI's parsing and validation), imports what it needs, and only then waits for the CLI to hand
it a pod: one line on the plan pipe, the pod's run directory. EOF instead means the manifest
was invalid: both exit quietly, having created nothing.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    opts = dict(zip(argv[0::2], argv[1::2]))
    plan_fd = int(opts["--plan-fd"])
    ready_fd = int(opts.get("--ready-fd", -1))
    foreground = opts.get("--foreground") == "1"
    from minipod import _libc, trace

    trace.mark("daemon: start")

    # Both are subreapers (the flag is not inherited across fork): the janitor adopts what a
    # dead supervisor leaves; the supervisor adopts its containers' PID 1s, which are
    # grandchildren (see container.py).
    _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        for fd in (plan_fd, ready_fd):
            os.close(fd)
        from minipod.janitor import watch

        return watch(r, pid)
    os.close(r)
    _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
    from minipod.net import agent as agentmod

    agent = agentmod.start()
    from minipod.supervisor import Host, Supervisor, tell

    host = Host()
    trace.mark("supervisor: imported, waiting for the plan")
    with os.fdopen(plan_fd, "rb") as f:
        run_dir = f.readline().decode().strip()
    if not run_dir:
        agent.close()
        return 0
    os.write(w, run_dir.encode() + b"\n")  # the janitor now knows what to clean up
    os.close(w)
    if not foreground:
        log = os.open(os.path.join(run_dir, "supervisor.log"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    try:
        return Supervisor(run_dir, foreground, host).run(ready_fd, agent)
    except BaseException as e:  # noqa: BLE001 - last resort: tell the CLI, let the janitor clean
        tell(ready_fd, {"ok": False, "error": f"supervisor: {type(e).__name__}: {e}"})
        raise


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip the interpreter's teardown: `rm` waits for these exits
