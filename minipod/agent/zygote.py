"""`run -d` in the node agent: a pod's janitor and supervisor forked from the warm agent.

runner.Daemon execs `janitor -- python -m minipod.kubelet.daemon`, a fresh interpreter that
imports everything again (~0.3 s of CPU). Here the agent's worker forks instead:

    worker --fork--> J: setsid, stdio /dev/null, a subreaper
                     J --fork--> S: the supervisor (daemon.supervise), warm: nothing to import
                     J --exec--> janitor --adopt S FD PYTHON   (pause/janitor.c; S stays its child)
                                 or the Python janitor (janitor.watch), if none is built

so the pod has the same pair of processes as without the agent, in the same relation: S is
J's child, J is a subreaper and cleans up if S dies. Neither is the agent's child: J is the
worker's, and the worker exits as soon as it has answered, so J is reparented (to init, or the
nearest subreaper) and a SIGKILLed agent takes no pod with it. S shares the agent's pages
copy-on-write until it writes to them.
"""

from __future__ import annotations

import os
import signal
import sys

from minipod.agent import client
from minipod.cli import runner


class Daemon(runner.Daemon):
    """runner.Daemon's pipes and protocol (hand, cancel), forked instead of exec'd."""

    def __init__(self, detach: bool, janitor: str = "", extra: dict[str, str] | None = None):
        if not detach or extra:
            raise ValueError("the agent starts detached pods only (no --explain, --step)")
        from minipod.kubelet.janitor import find

        c_janitor = find(janitor)
        plan_r, self.plan_w = os.pipe()
        self.ready_r, ready_w = os.pipe()
        sys.stdout.flush()  # or the forks would write our buffered output again
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            _janitor(plan_r, ready_w, c_janitor)
        os.close(plan_r)
        os.close(ready_w)


def _janitor(plan_r: int, ready_w: int, c_janitor: str | None) -> None:
    """J, then S (see the module doc). Never returns."""
    try:
        from minipod.agent import server
        from minipod.kernel import _libc

        server.forget()  # the agent's socket, lock and the client's connection
        # And every other descriptor the worker has: above all the worker's ends of this
        # pod's pipes (and of a sibling pod's, in a file of several): held here, S would
        # never see EOF on its plan pipe (an exec'd supervisor loses them by close-on-exec).
        # No object of ours that owns one of them is ever closed here: J and S never return.
        for fd in [int(f) for f in os.listdir("/proc/self/fd")]:
            if fd > 2 and fd not in (plan_r, ready_w):
                try:
                    os.close(fd)
                except OSError:
                    pass  # the listdir's own descriptor, gone already
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        # Before S exists, so that nothing S forks is ever without a subreaper above it
        # (the flag survives the exec into the C janitor, which sets it again anyway).
        _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
        r, w = os.pipe()
        supervisor = os.fork()
        if supervisor == 0:
            os.close(r)
            _supervisor(plan_r, ready_w, w, "c" if c_janitor else "python")
        os.close(w)
        os.close(plan_r)
        os.close(ready_w)
        if c_janitor:
            os.set_inheritable(r, True)
            os.execv(c_janitor, [c_janitor, "--adopt", str(supervisor), str(r), sys.executable,
                                 client.TITLE_ROOM])
        from minipod.kubelet.janitor import watch

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        code = watch(r, supervisor)
        os._exit(code)
    finally:
        os._exit(127)


def _supervisor(plan_r: int, ready_w: int, janitor_w: int, kind: str) -> None:
    code = 1
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        from minipod.kubelet import daemon

        code = daemon.supervise(plan_r, ready_w, False, janitor_w, kind)
    except BaseException as e:  # noqa: BLE001 - never back into the worker's code
        try:
            print(f"minipod supervisor: {type(e).__name__}: {e}", file=sys.stderr)
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)
