"""The client side: the `minipod` command hands its argv to the node agent when that pays.

Only commands that are short and non-interactive go to the agent (ROUTED): the agent's
worker runs them with our argv, environment, working directory and stdio, so their output and
exit code are exactly those of the in-process CLI. Everything else -- and every routed command
when the agent cannot be reached -- runs in-process as before: that fallback is deliberately
the whole CLI, not a second implementation.

The first routed command that finds no agent starts one in the background (double fork,
setsid, exec) and runs in-process itself: it would not get its answer sooner by waiting for
the agent to import everything. The agent's lock (server.py) makes sure two such commands
never leave two agents.

This module is imported by every `minipod` command: it must stay cheap (no pydantic, no
pyroute2, not even minipod.config: the root is read from the config file by hand, below).
"""

from __future__ import annotations

import os
import sys

from minipod import agent, python_m

# Mirrors of config.py's defaults (dataclasses + tomllib cost ~40 ms cold; a unit test
# keeps these equal to config.Config's).
DEFAULT_CONFIG = "/etc/minipod/config.toml"
DEFAULT_ROOT = "/run/minipod"
ROUTED = {"validate", "ps", "get", "inspect", "describe", "events", "rm", "stop", "run"}
# The padding that gives the agent's argv room for its forks' titles (titles.py): `ps`
# shows trailing spaces as nothing, and a rewritten argv cannot grow.
TITLE_ROOM = " " * 160


def enabled(env=os.environ) -> bool:
    """$MINIPOD_AGENT=0 runs every command in-process and never starts an agent."""
    return env.get("MINIPOD_AGENT", "1") not in ("0", "off", "no", "false") \
        and os.geteuid() == 0


def routed(argv: list[str]) -> tuple[str, str | None] | None:
    """(command, --config value) if `argv` is for the agent, else None."""
    config, i = None, 0
    while i < len(argv):
        a = argv[i]
        if a == "--config" and i + 1 < len(argv):
            config, i = argv[i + 1], i + 2
        elif a.startswith("--config="):
            config, i = a.partition("=")[2], i + 1
        elif a.startswith("-"):
            return None  # -h, or a mistake: argparse in-process says so
        else:
            break
    if i >= len(argv) or argv[i] not in ROUTED:
        return None
    cmd, rest = argv[i], argv[i + 1:]
    rest = rest[:rest.index("--")] if "--" in rest else rest
    if cmd == "get" and ("-w" in rest or "--watch" in rest):
        return None  # a loop until Ctrl-C: nothing to gain
    if cmd == "run" and ("-d" not in rest and "--detach" not in rest
                         or "--explain" in rest or "--step" in rest):
        return None  # the foreground run is the pod's own terminal session
    return cmd, config


def root_of(config: str | None, env=os.environ) -> str | None:
    """The runtime root the command's config names, or None if this cheap reading is unsure
    (config.load would then say what is wrong, in-process)."""
    if env.get("MINIPOD_ROOT"):
        return env["MINIPOD_ROOT"]
    path = config or env.get("MINIPOD_CONFIG") or DEFAULT_CONFIG
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return DEFAULT_ROOT if path == DEFAULT_CONFIG else None
    except OSError:
        return None
    found = DEFAULT_ROOT
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key.startswith("["):
            return None  # tables: not a flat minipod config, let config.load judge
        if not eq or key != "root":
            continue
        quote = value[:1]
        if quote not in ('"', "'") or value.find(quote, 1) < 0:
            return None
        found = value[1:value.index(quote, 1)]
        if quote == '"' and "\\" in found:
            return None  # an escape in a basic string: config.load reads it (no json here)
    return found or None


def call(argv: list[str]) -> int | None:
    """Run `argv` in the agent and return its exit code, or None: run it in-process."""
    if not enabled():
        return None
    r = routed(argv)
    if r is None:
        return None
    root = root_of(r[1])
    if root is None or len(agent.path(root, agent.SOCKET)) > 107:  # sun_path's limit
        return None
    sock = connect(root)
    if sock is None:
        start(root)
        return None
    import _signal  # not `signal`: its enums cost ~3 ms (protocol.py says why it matters)

    from minipod.agent import protocol

    worker = None
    try:
        code_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        req = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(),
               "umask": _umask(), "code": code_dir}
        protocol.send(sock, req, [0, 1, 2])
        while True:
            try:
                msg, _ = protocol.recv(sock)
            except KeyboardInterrupt:
                if worker is None:
                    return 130
                # Ctrl-C is the command's, as in-process: a `run -d` then rolls back.
                os.kill(worker, _signal.SIGINT)
                continue
            if "refused" in msg:
                return None  # another minipod's agent (other code): ours runs in-process
            if "pid" in msg:
                worker = msg["pid"]
            elif "exit" in msg:
                return int(msg["exit"])
    except (OSError, protocol.ProtocolError) as e:
        if worker is None:
            return None  # nothing has run yet: in-process then
        print(f"error: the minipod agent went away during the command ({e}; see "
              f"{agent.path(root, agent.LOG)})", file=sys.stderr)
        return 1
    finally:
        sock.close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def connect(root: str):
    """A connection to the root's agent, or None if none listens."""
    import _socket  # not `socket` (see protocol.py)

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(agent.path(root, agent.SOCKET))
        return sock
    except OSError:  # ENOENT, ECONNREFUSED (a dead agent's socket), EACCES
        sock.close()
        return None


def starting(root: str) -> bool:
    """True while an agent holds the root's lock (it is starting, or it runs)."""
    import fcntl

    try:
        fd = os.open(agent.path(root, agent.LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def start(root: str, wait: float = 0) -> bool:
    """Start the root's agent in the background (unless one is starting already); with
    `wait`, wait up to that many seconds until it answers. True if it answers."""
    if not starting(root):
        _spawn(root)
    if wait <= 0:
        return False
    import time

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if request(root, "status") is not None:
            return True
        time.sleep(0.01)
    return False


def _spawn(root: str) -> None:
    """Double fork + setsid: the agent is nobody's child and has no terminal; it logs to
    ROOT/agent.log. Our own environment becomes its environment (its config).

    The first child takes the root's lock before it forks the agent, and the agent inherits
    it across the exec: so by the time we return, starting() is true -- or another agent
    had the lock and nothing was exec'd. Taking it only in the new interpreter would leave
    ~50 ms in which neither is true: two commands then both exec an agent, and the one that
    loses would take the lock later, after a `daemon stop`, and serve again."""
    os.makedirs(root, exist_ok=True)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            lock = take_lock(agent.path(root, agent.LOCK))
            if lock is None or os.fork():
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            log = os.open(agent.path(root, agent.LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                          0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            if lock != 3:
                os.dup2(lock, 3)
            os.set_inheritable(3, True)  # the one descriptor the agent keeps across the exec
            os.closerange(4, 1 << 16)  # raw descriptors only: we exec right away
            argv = server_argv(root, "--lock-fd", "3")
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


def server_argv(root: str, *opts: str) -> list[str]:
    """The agent's command line: a fresh interpreter, and room at the end for the titles
    its forks set (TITLE_ROOM)."""
    return [*python_m("minipod.agent.server"), "--root", root, *opts, TITLE_ROOM]


def take_lock(path: str) -> int | None:
    """An exclusive flock on the root's lock file (a close-on-exec descriptor), or None if
    an agent holds it. The agent keeps it for its whole life: at most one agent per root."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file someone removed meanwhile: lock the new one


def request(root: str, op: str) -> dict | None:
    """A control request (status, stop) to the root's agent; None if none listens."""
    sock = connect(root)
    if sock is None:
        return None
    from minipod.agent import protocol

    try:
        protocol.send(sock, {"op": op})
        msg, _ = protocol.recv(sock)
        if op == "stop":
            # The worker that stopped the agent answers, then exits: its end closes on exit,
            # so at EOF nothing of the agent is left (`daemon stop` returns to a host
            # without it, as a test's leak check sees the host).
            sock.settimeout(10)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass  # it was stopped all the same
        return msg
    except (OSError, protocol.ProtocolError):
        return None
    finally:
        sock.close()
