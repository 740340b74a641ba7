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

The worker does not fork J itself, though, but asks a clean fork of itself to (prefork, Z):
whatever the worker writes before J's fork -- the parsed command line, the manifest, its
validation and plan -- sits in pages that J and S would share with the worker alone, and that
become S's own once the worker exits: about 4 MB of private memory in every pod's S. Z is
forked before the command runs, while the worker's pages are still the agent's, and does
nothing but fork J on request; so S starts out sharing all but a few pages with the agent.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from minipod.agent import client
from minipod.cli import runner


_zygote: socket.socket | None = None  # the worker's end of its socket pair with Z


def prefork() -> None:
    """Fork Z (see the module doc): in the worker of a `run`, before the command runs."""
    global _zygote
    ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sys.stdout.flush()  # or Z's forks would write our buffered output again
    sys.stderr.flush()
    if os.fork() == 0:
        ours.close()
        _serve(its)
    its.close()
    _zygote = ours


def _serve(sock: socket.socket) -> None:
    """Z: for every request (the janitor's path, and the pipes as SCM_RIGHTS), fork J and
    answer its PID; exit when the worker closes its end (it exits, or has no more pods).
    Never returns."""
    try:
        from minipod.agent import server

        server.forget()  # the client's connection: the worker answers it, not us
        # Not the client's terminal either (J would replace them anyway), and not its Ctrl-C:
        # that is the worker's to act on (it cancels J through the pipes).
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, 4096, 2)
            if not msg:
                break
            janitor = msg.decode()
            pid = os.fork()
            if pid == 0:
                sock.close()
                _janitor(fds[0], fds[1], janitor if janitor != "-" else None)
            for fd in fds:
                os.close(fd)
            sock.send(str(pid).encode())
            _reap()
    finally:
        os._exit(0)


def _reap() -> None:
    """J exits at once when its pod is cancelled: not a zombie of ours for long."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


class Daemon(runner.Daemon):
    """runner.Daemon's pipes and protocol (hand, cancel), forked by Z instead of exec'd."""

    def __init__(self, detach: bool, janitor: str = "", extra: dict[str, str] | None = None):
        if not detach or extra:
            raise ValueError("the agent starts detached pods only (no --explain, --step)")
        if _zygote is None:
            raise RuntimeError("zygote.prefork() was not called in this worker")
        from minipod.kubelet.janitor import find

        plan_r, self.plan_w = os.pipe()
        self.ready_r, ready_w = os.pipe()
        try:
            socket.send_fds(_zygote, [(find(janitor) or "-").encode()], [plan_r, ready_w])
            self.pid = int(_zygote.recv(32) or b"0")
        finally:
            os.close(plan_r)
            os.close(ready_w)
        if not self.pid:
            os.close(self.plan_w)
            os.close(self.ready_r)
            raise RuntimeError("the agent's zygote has gone")

    def cancel(self) -> None:
        """EOF on the plan pipe, as runner.Daemon's; J is Z's child, not ours: Z reaps it."""
        os.close(self.plan_w)
        os.close(self.ready_r)

    def wait(self) -> None:
        """Until J has exited. Not our child: its pidfd says when (J's PID is not reused
        before Z has reaped it, and Z lives as long as we hold its socket)."""
        import select

        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)


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
