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


class Guard:
    """The janitor, as its supervisor sees it. A pod must never run unguarded without anyone
    knowing: if the janitor dies, the write end of its pipe reports POLLERR (no reader left)
    and our parent becomes someone else (a subreaper, or PID 1, which is never the janitor)."""

    def __init__(self, fd: int, pid: int):
        from minipod import state

        self.fd, self.pid = fd, pid
        self.start = state.proc_start_time(pid) if pid > 1 else None

    def lost(self) -> str | None:
        """Why the pod is unguarded, or None while the janitor listens."""
        import select

        p = select.poll()
        p.register(self.fd, 0)  # POLLERR and POLLHUP are always reported
        if self.pid <= 1 or os.getppid() != self.pid or p.poll(0):
            return (f"the janitor (PID {self.pid}) has died: the pod would run with nobody "
                    "to clean up after its supervisor")
        return None


def _injected_failures() -> None:
    """$MINIPOD_TEST_FAIL_AFTER=STEP (set by tests only): fail pod set-up right after STEP, so
    a test can check that every step's undo leaves the host as it was. STEP is one of start
    (the supervisor's own: it dies before it reads its pod), dirs,
    cgroups, sandbox, prepare:CTR, network (the veth and lease made, before the /etc files),
    etc, release:CTR (the container's process has exec'd)."""
    step = os.environ.get("MINIPOD_TEST_FAIL_AFTER")
    if not step:
        return
    from minipod.errors import SetupError
    from minipod.pod import container
    from minipod.pod.pod import Pod

    def fail_after(fn, when=lambda *a: True, before=False):
        def wrapped(*args, **kw):
            out = None if before else fn(*args, **kw)
            if when(*args):
                raise SetupError(f"injected failure after {step}")
            return out
        return wrapped

    kind, _, ctr = step.partition(":")
    if kind == "start":  # the supervisor dies before it has taken its pod (a crash, a kill)
        raise RuntimeError("injected crash before the pod")
    if kind == "prepare":
        Pod.prepare = fail_after(Pod.prepare, lambda self, c: c.name == ctr)
    elif kind == "release":
        container.Pending.wait = fail_after(container.Pending.wait,
                                            lambda self, *_: self.name == ctr)
    elif kind == "network":
        Pod.write_etc_files = fail_after(Pod.write_etc_files, before=True)
    else:
        attr = {"dirs": "_make_dirs", "cgroups": "_make_cgroups", "sandbox": "_finish_sandbox",
                "etc": "write_etc_files"}[kind]
        setattr(Pod, attr, fail_after(getattr(Pod, attr)))


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
    # In /, not in the directory `minipod run` was typed in, which the janitor, the supervisor
    # and the pause (forked from it) would keep busy for the pod's life: nothing mounted there
    # could be unmounted. What we are given is absolute (config.export, config.PATHS).
    os.chdir("/")

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
    return supervise(plan_fd, ready_fd, foreground, janitor_fd, janitor_kind)


def supervise(plan_fd: int, ready_fd: int, foreground: bool, janitor_fd: int,
              janitor_kind: str) -> int:
    """The supervisor's side, in the janitor's child: here, or forked from the node agent's
    warm interpreter (minipod/agent/zygote.py), whose imports then cost nothing."""
    from minipod import trace
    from minipod.kernel import _libc

    # Before anything forks: `run --explain` hands its file over in the environment, and
    # every process forked from here on (agent, sandbox, containers) inherits the descriptor.
    from minipod import explain, stepping  # noqa: F401

    guard = Guard(janitor_fd, os.getppid())
    # The supervisor is a subreaper too (the flag is not inherited across fork): it adopts its
    # containers' PID 1s, which are grandchildren (see container.py), and waits for them.
    _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
    # Ours alone: containers and pause must not hold the janitor's pipe open.
    os.set_inheritable(janitor_fd, False)
    from minipod.net import agent as agentmod

    agent = agentmod.start()
    from minipod.kubelet.supervisor import Host, Supervisor, tell

    host = Host(janitor_kind)
    host.guard = guard
    _injected_failures()
    trace.mark("supervisor: imported, waiting for the plan")
    with os.fdopen(plan_fd, "rb") as f:
        run_dir = f.readline().decode().strip()
    if not run_dir:
        agent.close()
        return 0
    from minipod.kubelet import titles

    titles.set_for(titles.SUPERVISOR, run_dir)  # `ps` names the pod from now on
    try:
        os.write(janitor_fd, run_dir.encode() + b"\n")  # the janitor now knows what to clean up
        lost = guard.lost()
    except BrokenPipeError:
        lost = guard.lost() or "the janitor has died"
    if lost:  # nothing is created yet: refuse the pod rather than run it unguarded
        tell(ready_fd, {"ok": False, "error": lost})
        agent.close()
        return 1
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
    try:
        code = main(sys.argv[1:])
    except Exception as e:  # a bug: one line, as the CLI says it (the agent's forks too)
        if os.environ.get("MINIPOD_DEBUG"):
            raise
        print(f"minipod supervisor: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip the interpreter's teardown: `rm` waits for these exits
