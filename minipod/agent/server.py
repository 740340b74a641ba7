"""The node agent: `minipod daemon run`, or `python -m minipod.agent.server --root ROOT`.

One process per runtime root that has paid, once, for what every command pays cold: the
imports (pydantic's models, pyroute2, the pod and kubelet code), a manifest validated once
(pydantic builds its validators lazily), the cgroup driver detected. It then only accepts
connections on ROOT/agent.sock and forks a worker per connection; the worker is the command
(cli.main with the client's argv, environment, cwd and stdio) and exits when it is done.

Why a fork per request and not a thread or an in-process handler: the agent must stay
single-threaded (a pod's `run -d` forks from the worker: fork with threads deadlocks); a
request can chdir, change os.environ, crash or hang without touching the agent or another
request; and the fork inherits every imported page copy-on-write (gc.freeze keeps the
collector from dirtying them), which is what makes `run -d`'s pods cheap (zygote.py).

The agent's own loop never reads a request: it checks the peer (SO_PEERCRED: root only),
forks, closes its copy, reaps finished workers. It holds ROOT/agent.lock for its whole life,
so two agents of one root never run: a second one finds the lock taken and exits.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import struct
import sys
import time

from minipod import agent
from minipod.agent import client, protocol, zygote

# What the commands the agent serves import, and what pods' supervisors use: paid once here.
WARM = ("yaml", "pydantic", "prctl", "pyroute2", "minipod.spec.spec", "minipod.spec.checks",
        "minipod.pod.plan", "minipod.pod.pod", "minipod.pod.sandbox", "minipod.pod.container",
        "minipod.kubelet.daemon", "minipod.kubelet.supervisor", "minipod.kubelet.health",
        "minipod.kubelet.remains", "minipod.net.agent", "minipod.net.ipam",
        "minipod.net.links", "minipod.net.nat", "minipod.images.store", "minipod.images.pull",
        "minipod.cli.cli", "minipod.cli.runner", "minipod.cli.status", "minipod.cli.describe",
        "minipod.net.hostport", "cgroupspy.controllers",
        "cgroupspy.interfaces", "cgroupspy.contenttypes", "encodings.ascii",
        # the systemd driver's D-Bus client (imported when it first connects)
        "jeepney", "jeepney.bus_messages", "jeepney.io.blocking", "jeepney.wrappers")
SAMPLE = """apiVersion: v1
kind: Pod
metadata: {name: warm-up}
spec:
  containers:
  - {name: c, image: busybox, command: [sleep, "1"], resources: {limits: {memory: 8Mi}}}
"""
CODE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the minipod package

# The agent's descriptors a fork must not keep (the lock would outlive the agent in every
# pod, the listener would keep the socket alive): raw fds, closed by forget().
_inherited: list[int] = []


class _Stop(Exception):
    pass


def main(argv: list[str]) -> int:
    opts = dict(zip(argv[0::2], argv[1::2]))
    lock = opts.get("--lock-fd")
    return serve(opts["--root"], int(lock) if lock is not None else None)


def serve(root: str, lock: int | None = None) -> int:
    """Run the agent of `root` until SIGTERM, SIGINT or a `stop` request. `lock`: the
    root's lock, taken for us by the command that started us (client._spawn); else we take
    it here. 0 also when another agent holds it (it serves; nothing to do)."""
    # A process that lives for days must not pin the directory it was started from (nothing
    # mounted there could be unmounted); each worker changes to its client's directory.
    root = os.path.abspath(root)
    os.chdir("/")
    os.makedirs(root, exist_ok=True)
    if lock is None:
        lock = client.take_lock(agent.path(root, agent.LOCK))
        if lock is None:
            _log(f"another agent holds {agent.path(root, agent.LOCK)}: leaving it to serve")
            return 0
    else:
        os.set_inheritable(lock, False)
    _inherited.append(lock)
    started = time.time()

    stopping, me = [], os.getpid()

    def stop(signum, _frame):
        if os.getpid() != me:  # a worker just forked, before it reset its handlers
            os._exit(128 + signum)
        # Raising ends a warm-up or a blocking accept at once; but Python swallows an
        # exception raised where it ignores them (an at-fork callback: logging registers
        # one, and we fork for every request), so the loop also checks the flag.
        stopping.append(True)
        raise _Stop

    # From here on, SIGTERM (daemon stop, systemd, a test) ends us through the finally
    # below, also while we warm up: a socket bound just before it is removed again.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    listener, inode, served = None, None, 0
    try:
        # Now, while the C environment is the one we were started with: python-prctl finds
        # the argv it rewrites by walking back from environ[0], once, and keeps what it
        # found. A worker replaces the environment (the client's), so a pod's title set
        # there would otherwise walk through the heap.
        from minipod.kernel import proctitle

        proctitle.set_title(f"minipod-agent -root {root}", "minipod-agent")
        code = _watch_code()  # before the imports: a change while they run is seen too
        _inherited.append(code.fd)
        _warm()
        if stopping:
            raise _Stop
        zygote.start(root)  # now, while our pages are the warm-up's (zygote.py says why)
        listener, inode = _listen(root)
        _inherited.append(listener.fileno())
        listener.settimeout(1.0)  # wake up now and then to reap workers (and see `stopping`)
        where = agent.path(root, agent.SOCKET) if inode is not None \
            else "systemd's socket (fd 3)"
        _log(f"agent {os.getpid()} listening on {where} "
             f"({time.time() - started:.2f}s to warm up)")
        while not stopping:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                _reap(root)
                if code.changed():
                    _log(STALE)
                    break
                continue
            with conn:
                if code.changed():
                    # Our modules are the old code, the files the new: a worker would run a
                    # mix of both (what it imports lazily). Let the client run the command
                    # in-process, and the next command start an agent of the new code.
                    _refuse(conn, STALE)
                    _log(STALE)
                    break
                if _peer_uid(conn) != 0:
                    _refuse(conn, "the minipod agent serves root only")
                else:
                    served += 1
                    _fork_worker(conn, root, started, served)
            _reap(root)
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        zygote.stop()
        _unlink_ours(agent.path(root, agent.SOCKET), inode)
        if listener is not None:
            listener.close()
        os.close(lock)  # the lock goes last: a new agent may bind once we are gone
        _log(f"agent {os.getpid()} stopped after {served} requests")
    return 0


STALE = "minipod's code changed on disk: stopping (the next command starts one of the new)"


def _watch_code():
    """A watch on every directory of the package we run (a `git pull`, a reinstall)."""
    from minipod.kernel import inotify

    dirs = [d for d, _, _ in os.walk(CODE) if os.path.basename(d) != "__pycache__"]
    return inotify.Watch(dirs, (".py", ".json"))


# And every module of these: what a pod's supervisor may import at any point of its life,
# imported there it would be pages of its own in every pod (a module that is imported late
# costs about a megabyte of each supervisor's private memory).
WARM_PACKAGES = ("minipod.kubelet", "minipod.pod", "minipod.pod.volumes", "minipod.kernel",
                 "minipod.cgroups")


def _warm() -> None:
    import importlib
    import pkgutil

    names = list(WARM)
    for pkg in WARM_PACKAGES:
        path = importlib.import_module(pkg).__path__
        names += [m.name for m in pkgutil.iter_modules(path, pkg + ".")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a command will say it, with its own error
            _log(f"warm-up: import {name}: {type(e).__name__}: {e}")
    try:
        from minipod import cgroups, config
        from minipod.cli import cli
        from minipod.spec import spec

        cli.parser()
        spec.loads(SAMPLE, "warm-up.yaml")
        cfg = config.load()
        cgroups.remember(cfg.cgroup_root, cfg.cgroup_driver)
        from minipod.net import links

        links.warm()
    except Exception as e:  # noqa: BLE001
        _log(f"warm-up: {type(e).__name__}: {e}")
    # Everything alive now is for life: out of the collector's reach, so that neither the
    # agent nor its forks write to those pages (they stay shared with every fork).
    gc.collect()
    gc.freeze()


def _listen(root: str) -> tuple[socket.socket, int | None]:
    """The listening socket: systemd's (socket activation: LISTEN_FDS, fd 3), else ours,
    bound at ROOT/agent.sock with mode 0600 from the start (umask), a stale one replaced --
    we hold the lock, so a socket there is a dead agent's."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and \
            int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(k, None)  # not for our forks
        s = socket.socket(fileno=3)
        s.set_inheritable(False)
        return s, None  # systemd's socket: systemd removes it
    path = agent.path(root, agent.SOCKET)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        s.bind(path)
    finally:
        os.umask(old)
    s.listen(128)
    return s, os.stat(path).st_ino


def _unlink_ours(path: str, inode: int | None) -> None:
    try:
        if inode is not None and os.stat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid


def _refuse(conn: socket.socket, why: str) -> None:
    try:
        conn.setblocking(False)  # never wait on a peer we do not serve
        protocol.send(conn, {"refused": why})
    except OSError:
        pass


def _reap(root: str) -> None:
    """Finished workers; and the zygote, should it die (killed by hand, a bug): forked again,
    or no `run -d` could start a pod."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == zygote.pid:
            _log(f"zygote {pid} died ({_how(status)}); forking another")
            zygote.start(root)


def _how(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"signal {-code}" if code < 0 else f"exit {code}"


def _fork_worker(conn: socket.socket, root: str, started: float, served: int) -> None:
    pid = os.fork()
    if pid:
        return
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        agent_pid = os.getppid()
        forget()
        _inherited.append(conn.fileno())  # for the forks of `run -d` (zygote.py)
        _worker(conn, {"pid": agent_pid, "root": root, "since": started, "served": served,
                       "code": CODE, "python": sys.executable})
        code = 0
    except BaseException as e:  # noqa: BLE001 - a worker never returns into the loop
        _log(f"worker {os.getpid()}: {type(e).__name__}: {e}")
    finally:
        os._exit(code)


def forget() -> None:
    """Close the agent's descriptors in a fork (see _inherited)."""
    while _inherited:
        try:
            os.close(_inherited.pop())
        except OSError:
            pass


def _worker(conn: socket.socket, status: dict) -> None:
    conn.settimeout(30)  # a client that connects and says nothing
    msg, fds = protocol.recv(conn)
    conn.settimeout(None)
    op = msg.get("op")
    if op == "status":
        status["rss_kb"] = _rss_kb(status["pid"])
        protocol.send(conn, {"status": status})
    elif op == "stop":
        protocol.send(conn, {"stopped": _stop_agent(status["pid"])})
    elif "argv" in msg:
        if msg.get("code") != CODE:
            protocol.send(conn, {"refused": f"this agent runs the minipod of {CODE}"})
        elif len(fds) != 3:
            protocol.send(conn, {"refused": f"expected 3 descriptors, got {len(fds)}"})
        else:
            _command(conn, msg, fds)
    else:
        protocol.send(conn, {"refused": f"unknown request {sorted(msg)}"})
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _command(conn: socket.socket, msg: dict, fds: list[int]) -> None:
    """Become the client's command: its stdio, environment, cwd, umask; then cli.main."""
    for f in (sys.stdout, sys.stderr):
        f.flush()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    fds.clear()
    # The same stream objects (modules bound them as default arguments), on the new fds,
    # buffered as Python would buffer them at start-up.
    sys.stdout.reconfigure(line_buffering=os.isatty(1))
    sys.stderr.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(msg["env"])
    os.chdir(msg["cwd"])
    os.umask(int(msg["umask"]))
    from minipod import trace

    trace.PATH = os.environ.get("MINIPOD_TRACE", "")
    agent.in_agent = True
    protocol.send(conn, {"pid": os.getpid()})
    _die_with_client(conn)
    from minipod.cli import cli

    try:
        code = cli.main(msg["argv"])
    except SystemExit as e:  # argparse: usage errors (2), -h (0)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # MINIPOD_DEBUG re-raises: the traceback, as Python prints it
        import traceback

        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    protocol.send(conn, {"exit": code})


def _die_with_client(conn: socket.socket) -> None:
    """End the command if its client goes (SIGKILLed, its terminal closed), as the command
    in-process would have ended with it -- not go on starting the rest of a file's pods that
    nobody waits for. The client sends nothing after its request (Ctrl-C comes as a signal),
    so the socket turns readable only at its EOF; O_ASYNC makes that a SIGIO."""
    import fcntl

    def gone(_signum, _frame):
        try:
            if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b"":
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        os._exit(128 + signal.SIGHUP)  # what a client killed with its terminal would see

    signal.signal(signal.SIGIO, gone)
    fcntl.fcntl(conn.fileno(), fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(conn.fileno(), fcntl.F_SETFL, fcntl.fcntl(conn.fileno(), fcntl.F_GETFL)
                | os.O_ASYNC)


def _stop_agent(pid: int) -> int:
    """SIGTERM the agent and return once it is gone (its socket removed), so that `daemon
    stop` returns to a host without it."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    # We are its child: it is gone once we are reparented (a zombie until then).
    deadline = time.monotonic() + 10
    while os.getppid() == pid and time.monotonic() < deadline:
        select.select([pidfd], [], [], 0.05)
    os.close(pidfd)
    return pid


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _log(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} minipod agent: {line}", file=sys.stderr,
          flush=True)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
