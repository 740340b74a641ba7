"""The per-pod background processes, started by `minipod run` before it has even read the
manifest:

    janitor -- python -m minipod.kubelet.daemon --plan-fd N --ready-fd N --foreground 0|1 --janitor-fd N
    python -m minipod.kubelet.daemon --plan-fd N --ready-fd N --foreground 0|1   (no C janitor built)

The janitor (janitor.py, pause/janitor.c) is the supervisor's parent: a child subreaper that
waits and cleans up if the supervisor dies unfinished. The C janitor starts this module with
`--janitor-fd`, the pipe it listens on; without one, this process forks at once and the parent
becomes the Python janitor (before importing anything, so it stays a bare interpreter whose
pages the supervisor shares). Either way this process becomes the *supervisor*: it starts the
network agent (whose pyroute2 import, 0.1-0.2 s, now overlaps the CLI's parsing and
validation), imports what it needs, and only then waits for the CLI to hand it a pod: one line
on the plan pipe, the pod's run directory. EOF instead means the manifest was invalid: both
exit quietly, having created nothing.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    opts = dict(zip(argv[0::2], argv[1::2]))
    plan_fd = int(opts["--plan-fd"])
    ready_fd = int(opts.get("--ready-fd", -1))
    foreground = opts.get("--foreground") == "1"
    janitor_fd = int(opts.get("--janitor-fd", -1))
    janitor_kind = "c" if janitor_fd >= 0 else "python"
    from minipod import trace
    from minipod.kernel import _libc

    trace.mark("daemon: start")

    if janitor_fd < 0:  # no C janitor: the parent of this fork is the Python one
        r, janitor_fd = os.pipe()
        pid = os.fork()
        if pid:
            # A subreaper, to adopt what a dead supervisor leaves.
            _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
            os.close(janitor_fd)
            for fd in (plan_fd, ready_fd):
                os.close(fd)
            from minipod.kubelet.janitor import watch

            return watch(r, pid)
        os.close(r)
    # The supervisor is a subreaper too (the flag is not inherited across fork): it adopts its
    # containers' PID 1s, which are grandchildren (see container.py), and waits for them.
    _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
    # Ours alone: containers and pause must not hold the janitor's pipe open.
    os.set_inheritable(janitor_fd, False)
    from minipod.net import agent as agentmod

    agent = agentmod.start()
    from minipod.kubelet.supervisor import Host, Supervisor, tell

    host = Host(janitor_kind)
    trace.mark("supervisor: imported, waiting for the plan")
    with os.fdopen(plan_fd, "rb") as f:
        run_dir = f.readline().decode().strip()
    if not run_dir:
        agent.close()
        return 0
    os.write(janitor_fd, run_dir.encode() + b"\n")  # the janitor now knows what to clean up
    if not foreground:
        log = os.open(os.path.join(run_dir, "supervisor.log"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    try:
        code = Supervisor(run_dir, foreground, host).run(ready_fd, agent)
    except BaseException as e:  # noqa: BLE001 - last resort: tell the CLI, let the janitor clean
        tell(ready_fd, {"ok": False, "error": f"supervisor: {type(e).__name__}: {e}"})
        raise
    os.write(janitor_fd, b"done\n")  # torn down and recorded: nothing for the janitor to do
    return code


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip the interpreter's teardown: `rm` waits for these exits
