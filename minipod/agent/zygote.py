"""`run -d` in the node agent: a pod's janitor and supervisor forked from the warm agent.

runner.Daemon execs `janitor -- python -m minipod.kubelet.daemon`, a fresh interpreter that
imports everything again (~0.3 s of CPU). In the agent, a fork does it instead:

    agent --fork--> Z: the zygote, forked once, right after the warm-up; forks J on request
    worker ---------> Z: "a pod": the pipes (SCM_RIGHTS), the client's env and umask
                     Z --fork--> J: setsid, stdio /dev/null, a subreaper, the client's env
                     J --fork--> S: the supervisor (daemon.supervise), warm: nothing to import
                     J --exec--> janitor --adopt S FD PYTHON   (pause/janitor.c; S stays its child)
                                 or the Python janitor (janitor.watch), if none is built

so the pod has the same pair of processes as without the agent, in the same relation: S is
J's child, J is a subreaper and cleans up if S dies. Neither is the agent's child, and Z dies
with the agent (PR_SET_PDEATHSIG), so J is reparented (to init, or the nearest subreaper) and
a SIGKILLed agent takes no pod with it.

Why Z, and not a fork of the worker: memory. S shares its pages copy-on-write with whoever
still maps them. A page that the worker (or any process between the agent and S) wrote
before S's fork, or that the agent rewrote after it, is shared by S and those processes only,
and becomes S's own once they exit -- the worker does at once. Z is forked while the agent's
pages are the warm-up's (frozen: gc.freeze), lives as long as the agent and writes next to
nothing, so S starts out sharing everything but what J wrote with Z and the agent. What is
left is S's own doing: every object it touches has its reference count written, so every
page it reads an object from becomes its own copy -- which is also why J gets the client's
environment as a difference (refilling os.environ cost 0.4 MB) and why the agent imports
every module S could import (server.WARM). Measured on 8 pods of one container (USS of each
S once running): 7.96 MB forked from the worker, 6.95 MB from Z, 4.82 MB with both.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from minipod.agent import client
from minipod.cli import runner

_sock: socket.socket | None = None  # the agent's end of its socket pair with Z (workers use it)
pid = 0  # Z's PID, in the agent
_env: dict[str, str] = {}  # Z's environment (the agent's), which J starts out with
MSG_MAX = 1 << 18


def start(root: str) -> int:
    """Fork Z, in the agent (again, if Z died: see server._reap). Returns its PID."""
    global _sock, pid, _env
    if _sock is not None:
        _sock.close()
    _env = dict(os.environ)
    ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sys.stdout.flush()  # or Z's forks would write our buffered output again
    sys.stderr.flush()
    agent_pid = os.getpid()
    child = os.fork()
    if child == 0:
        ours.close()
        _serve(its, root, agent_pid)
    its.close()
    _sock, pid = ours, child
    return child


def stop() -> None:
    """In the agent, on its way out: Z goes first (it would die with us anyway)."""
    global _sock, pid
    if _sock is not None:
        _sock.close()
        _sock = None
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        pid = 0


def _serve(sock: socket.socket, root: str, agent_pid: int) -> None:
    """Z: for every request, fork J (who reads the request: Z's own pages stay as they are)
    and answer J's PID on the request's reply socket. Never returns."""
    try:
        from minipod.kernel import _libc, proctitle

        _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != agent_pid:  # it died before the line above
            os._exit(0)
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _close_all_but(sock.fileno())  # the agent's lock, its code watch, systemd's socket
        _null_stdio()
        proctitle.set_title(f"minipod-zygote -root {root}", "minipod-zygote")
        sock.settimeout(1.0)  # wake up now and then to reap the Js of pods that ended
        while True:
            try:
                msg, fds, flags, _ = socket.recv_fds(sock, MSG_MAX, 3)
            except TimeoutError:
                _reap()
                continue
            if not msg:
                break
            if len(fds) != 3 or flags & socket.MSG_TRUNC:
                for fd in fds:
                    os.close(fd)
                continue  # the worker sees its reply socket closed: no J
            child = os.fork()
            if child == 0:
                _janitor(msg, fds)
            os.close(fds[0])
            os.close(fds[1])
            try:
                os.write(fds[2], str(child).encode())
            except OSError:
                pass  # the worker is gone: J finds EOF on its plan pipe and exits
            os.close(fds[2])
            _reap()
    finally:
        os._exit(0)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _close_all_but(*keep: int) -> None:
    for fd in [int(f) for f in os.listdir("/proc/self/fd")]:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listdir's own descriptor, gone already


def _null_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


class Daemon(runner.Daemon):
    """runner.Daemon's pipes and protocol (hand, cancel, wait), forked by Z, not exec'd."""

    def __init__(self, detach: bool, janitor: str = "", extra: dict[str, str] | None = None):
        if not detach or extra:
            raise ValueError("the agent starts detached pods only (no --explain, --step)")
        from minipod import trace
        from minipod.errors import MinipodError
        from minipod.kubelet.janitor import find

        if _sock is None:
            raise RuntimeError("no zygote in this process (zygote.start runs in the agent)")
        umask = os.umask(0)
        os.umask(umask)
        # The client's environment as a difference from Z's (usually none: the agent was
        # started from the same shell): J writes no more of its pages than it must.
        env = {k: v for k, v in os.environ.items() if _env.get(k) != v}
        unset = [k for k in _env if k not in os.environ]
        req = {"env": env, "unset": unset, "umask": umask,
               "janitor": find(janitor) or "", "trace": trace.PATH}
        plan_r, self.plan_w = os.pipe()
        self.ready_r, ready_w = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = 0
        try:
            socket.send_fds(_sock, [json.dumps(req).encode()], [plan_r, ready_w,
                                                                  theirs.fileno()])
            theirs.close()  # now: Z's copy is the only one, so Z's exit is our EOF
            ours.settimeout(30)
            self.pid = int(ours.recv(32) or b"0")
        except OSError:
            pass
        finally:
            theirs.close()  # (idempotent: for the send that failed)
            ours.close()
            os.close(plan_r)
            os.close(ready_w)
        if not self.pid:
            os.close(self.plan_w)
            os.close(self.ready_r)
            raise MinipodError("the node agent could not start the pod's processes (its "
                               "zygote is gone; `minipod daemon stop` restarts the agent)")

    def cancel(self) -> None:
        """EOF on the plan pipe, as runner.Daemon's; J is Z's child, not ours: Z reaps it."""
        os.close(self.plan_w)
        os.close(self.ready_r)

    def wait(self) -> None:
        """Until J has exited. Not our child: its pidfd says when (J's PID is not reused
        before Z has reaped it, within a second of its exit; J exits once S has)."""
        import select

        from minipod.kernel import pidfd

        fd = pidfd.open_(self.pid)
        if fd is None:
            return
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)


def _janitor(msg: bytes, fds: list[int]) -> None:
    """J, then S (see the module doc). Never returns."""
    try:
        from minipod import trace
        from minipod.kernel import _libc

        plan_r, ready_w, reply = fds
        os.close(reply)
        req = json.loads(msg)
        # The client's, as if the worker had forked us: S reads its config, trace file and
        # test hooks from the environment, and files it creates get the client's umask.
        for k in req["unset"]:
            del os.environ[k]
        os.environ.update(req["env"])
        # Not the client's directory: a pod's processes live in / (config.PATHS says why).
        os.chdir("/")
        os.umask(req["umask"])
        trace.PATH = req["trace"]
        c_janitor = req["janitor"] or None
        # Z has closed the agent's descriptors; Z's own socket goes too (S must not keep Z
        # from seeing the agent's end close).
        _close_all_but(plan_r, ready_w)
        os.setsid()
        _null_stdio()
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

        late = os.environ.get("MINIPOD_TEST_LATE_IMPORTS")  # set by tests only (test_agent)
        # Only then: the set's reference to every module name would make a megabyte of the
        # pages those names live in this process's own.
        before = set(sys.modules) if late else set()
        try:
            code = daemon.supervise(plan_r, ready_w, False, janitor_w, kind)
        finally:
            if late:  # what the agent's warm-up (server.WARM) missed
                with open(f"{late}.{os.getpid()}", "w") as f:
                    f.write("".join(f"{m}\n" for m in sorted(set(sys.modules) - before)))
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
