"""Run one Kubernetes handler (probe or lifecycle hook) for a container, without blocking.

    r = spawn(handler, c, container_pid, pod_ip, driver, timeout)
    ... the caller reaps r.pid in its own waitpid loop ...
    ok, message = r.finish(status)

Every handler runs in a forked child, so the supervisor's single-threaded loop never waits on
a slow server or command; the child enforces the timeout itself and writes its failure message
on a close-on-exec pipe (nothing = success). What each handler does is what the kubelet does:

- exec: the command runs in the container's cgroup and in all its namespaces (ipc, uts, net,
  pid, mnt), with its environment, working directory, user and capabilities; stdout and stderr
  are captured together (the kubelet's CombinedOutput, up to 10 KiB). Exit 0 = success. On
  timeout, the command and every process it started are killed.
- httpGet / tcpSocket: made by minipod itself from the host's network namespace to the pod IP
  (or `host`), so the image needs no curl or nc. HTTP 200-399 = success; redirects are followed
  within the same host, as the kubelet's client does. HTTPS skips certificate verification.
- sleep: the lifecycle sleep action.

The messages are the kubelet's own strings (pkg/probe/http, staging cri-client remote_runtime):
    HTTP probe failed with statuscode: 500
    Get "http://10.244.0.5:81/": dial tcp 10.244.0.5:81: connect: connection refused
    dial tcp 10.244.0.5:81: connect: connection refused
    command 'cat /tmp/healthy' exited with 1: cat: can't open '/tmp/healthy': No such file ...
    command "sleep 5" timed out

Imports stay light (the supervisor imports this module); socket and ssl are imported in the
child that needs them. Everything the exec child needs after it has joined the container's
mount namespace must be imported before: the host's Python modules are not on the container's
filesystem (see preload()).
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from dataclasses import dataclass
from typing import Callable, NoReturn

from minipod.errors import MinipodError
from minipod.kernel import caps, ns
from minipod.pod import child, rootfs

KUBE_VERSION = "1.31"
USER_AGENT = f"kube-probe/{KUBE_VERSION}"
OUTPUT_LIMIT = 10 * 1024      # the kubelet's maxReadLength for exec output
BODY_LIMIT = 10 * 1024        # the kubelet's maxRespBodyLength
MAX_REDIRECTS = 10            # Go's http.Client default, kept by the kubelet
REDIRECTS = (301, 302, 303, 307, 308)  # the codes Go's client follows
KINDS = ("exec", "httpGet", "tcpSocket", "grpc", "sleep")
# The namespaces a command joins; mnt last (see ns.join), pid applies to the child forked next.
CONTAINER_NAMESPACES = ["ipc", "uts", "net", "pid", "mnt"]


class ActionError(MinipodError):
    """A handler that cannot be run as written (no action, unknown named port, ...)."""


# --- what to do: a handler resolved against the container and the pod ----------------------

@dataclass(frozen=True)
class Action:
    kind: str                                # exec | httpGet | tcpSocket | sleep
    argv: tuple[str, ...] = ()               # exec
    scheme: str = "http"                     # httpGet: http | https
    host: str = ""                           # httpGet, tcpSocket
    port: int = 0
    target: str = "/"                        # httpGet: the request target (path?query)
    headers: tuple[tuple[str, str], ...] = ()  # httpGet: every header sent, in order
    seconds: float = 0                       # sleep

    @property
    def netloc(self) -> str:
        return hostport(self.host, self.port)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.target}"

    def describe(self) -> str:
        if self.kind == "exec":
            return f"command {gostr(' '.join(self.argv))}"
        if self.kind == "httpGet":
            return f"GET {self.url}"
        if self.kind == "tcpSocket":
            return f"dial tcp {self.netloc}"
        return f"sleep {self.seconds:g}s"


def hostport(host: str, port: int) -> str:
    """Go's net.JoinHostPort: IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gostr(s: str) -> str:
    """Go's %q, near enough for messages."""
    return json.dumps(s, ensure_ascii=False)


def resolve_port(port: int | str, c: dict, field: str) -> int:
    """An IntOrString port: a number, or the name of one of the container's ports
    (pkg/kubelet/prober: a name, then a number written as a string)."""
    if isinstance(port, str):
        named = {p.get("name"): p.get("containerPort")
                 for p in (c.get("spec") or {}).get("ports") or [] if p.get("name")}
        if port in named:
            port = named[port]
        elif port.isdigit():
            port = int(port)
        else:
            names = ", ".join(f"{n}={v}" for n, v in named.items()) or "none"
            raise ActionError(f'{field}: container "{c.get("name", "")}" has no port named '
                              f'"{port}" (its named ports: {names})')
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ActionError(f"{field}: invalid port number: {port}")
    return port


def parse(handler: dict, c: dict, pod_ip: str) -> Action:
    """Resolve a probe or lifecycle handler (camelCase dict with one of exec, httpGet,
    tcpSocket, sleep) against the container plan `c` and the pod IP."""
    kinds = [k for k in KINDS if handler.get(k) is not None]
    if not kinds:
        raise ActionError("handler: none of exec, httpGet, tcpSocket, sleep is set")
    if len(kinds) > 1:
        raise ActionError(f"handler: only one action may be set (got {', '.join(kinds)})")
    kind = kinds[0]
    h = handler[kind]
    if kind == "exec":
        argv = tuple(h.get("command") or ())
        if not argv or not argv[0]:
            raise ActionError("exec.command: must not be empty")
        return Action("exec", argv=argv)
    if kind == "sleep":
        seconds = h.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ActionError(f"sleep.seconds: expected a number of seconds (got {seconds!r})")
        return Action("sleep", seconds=seconds)
    if kind == "grpc":
        raise ActionError("grpc: gRPC probes are not supported by minipod "
                          "(use exec, httpGet or tcpSocket)")
    port = resolve_port(h.get("port"), c, f"{kind}.port")
    host = h.get("host") or pod_ip
    if not host:
        raise ActionError(f"{kind}: the pod has no IP and {kind}.host is not set")
    if kind == "tcpSocket":
        return Action("tcpSocket", host=host, port=port)
    scheme = (h.get("scheme") or "HTTP").lower()
    if scheme not in ("http", "https"):
        raise ActionError(f'httpGet.scheme: expected HTTP or HTTPS (got "{h.get("scheme")}")')
    return Action("httpGet", scheme=scheme, host=host, port=port, target=_target(h.get("path")),
                  headers=_headers(h.get("httpHeaders") or [], hostport(host, port)))


def _target(path: str | None) -> str:
    """The request target of a probe path, as Go's url.Parse + URL.RequestURI make it."""
    from urllib.parse import quote

    path = (path or "/").split("#", 1)[0]  # a fragment is never sent
    if not path.startswith("/"):
        path = "/" + path
    # Keep what is already valid (including %XX escapes and the query); escape the rest.
    return quote(path, safe="/:@!$&'()*+,;=-._~%?[]")


def _headers(given: list[dict], netloc: str) -> tuple[tuple[str, str], ...]:
    """The headers the kubelet sends: the pod's httpHeaders, plus Host, User-Agent and
    Accept unless the pod set them (an empty Accept removes it)."""
    pairs: list[tuple[str, str]] = []
    for i, hd in enumerate(given):
        name, value = hd.get("name") or "", hd.get("value") or ""
        if not name or any(ch in name for ch in " \t\r\n:") or any(ch in value for ch in "\r\n"):
            raise ActionError(f"httpGet.httpHeaders[{i}]: invalid header {name!r}: {value!r}")
        pairs.append((name, value))
    names = {n.lower() for n, _ in pairs}
    host = [v for n, v in pairs if n.lower() == "host"]
    out = [("Host", host[0] if host else netloc)]
    if "user-agent" not in names:
        out.append(("User-Agent", USER_AGENT))
    if "accept" not in names:
        out.append(("Accept", "*/*"))
    out += [(n, v) for n, v in pairs
            if n.lower() != "host" and not (n.lower() == "accept" and v == "")]
    if "connection" not in names:
        out.append(("Connection", "close"))  # the kubelet's transport disables keep-alives
    return tuple(out)


# --- the running handler, as the caller sees it -----------------------------------------------

@dataclass
class Running:
    """A handler running in child `pid`; `fd` gets its failure message (nothing = success)."""

    pid: int
    fd: int
    what: str                   # e.g. 'GET http://10.244.0.5:80/', for messages
    timeout_message: str = ""   # what a child killed by its SIGALRM backstop means
    error: str = ""             # set when the parent could not start the action

    def finish(self, status: int) -> tuple[bool, str]:
        """Interpret the child's wait status (the caller reaped it); closes fd.
        Returns (ok, message); a success may carry a message too (a redirect warning)."""
        msg = self._read()
        if self.error:
            return False, self.error
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            if code == 0:
                return True, msg
            return False, msg or f"{self.what}: handler exited with status {code}"
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGALRM and self.timeout_message:
                return False, self.timeout_message
            return False, msg or f"{self.what}: handler killed by {signal.Signals(sig).name}"
        return False, msg or f"{self.what}: unexpected wait status {status:#x}"

    def cancel(self) -> None:
        """Kill the handler (the caller still reaps it). An exec'd command dies with it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _read(self) -> str:
        """Everything the child wrote. Never blocks: the child is gone, and nothing else
        holds the pipe's write end (it is close-on-exec and closed before any exec)."""
        if self.fd < 0:
            return ""
        data = b""
        os.set_blocking(self.fd, False)
        try:
            while chunk := os.read(self.fd, 65536):
                data += chunk
        except BlockingIOError:
            pass
        finally:
            self.close()
        return data.decode(errors="replace").rstrip()


def preload() -> None:
    """Import what a process needs after it has joined a container's mount namespace (the host's
    Python modules are not there): prctl, used by minipod.kernel.caps."""
    import prctl  # noqa: F401


def spawn(handler: dict, c: dict, container_pid: int, pod_ip: str, driver,
          timeout: float | None) -> Running:
    """Start `handler` for container plan `c` (whose PID 1 is `container_pid`) in a child.

    Never blocks and never raises for a bad handler or a failed start: those come back from
    finish() as failures. Only fork/pipe exhaustion (OSError) is raised.
    """
    try:
        action = parse(handler, c, pod_ip)
    except ActionError as e:
        message = str(e)
        return _fork(lambda: (False, message), "handler")
    what = action.describe()
    if action.kind == "sleep":
        return _fork(lambda: run_sleep(action.seconds, timeout), what)
    if action.kind in ("httpGet", "tcpSocket"):
        run = run_http if action.kind == "httpGet" else run_tcp
        r = _fork(lambda: run(action, _deadline(timeout)), what, alarm=timeout)
        r.timeout_message = timeout_message(action)
        return r
    if not container_pid:
        return _fork(lambda: (False, f'container "{c.get("name", "")}" is not running'), what)
    preload()
    go_r, go_w = os.pipe()
    try:
        r = _fork(lambda: _exec_in_container(action, c, container_pid, timeout, go_r), what,
                  keep=(go_r,))
    except BaseException:
        os.close(go_w)
        raise
    finally:
        os.close(go_r)
    try:
        # The command must be born in the container's cgroup (its limits and accounting), so
        # the child waits until we have moved it there.
        driver.join(c["cgroup"], r.pid)
        os.write(go_w, b"g")
    except Exception as e:  # noqa: BLE001 - the child exits on the closed pipe; finish() reports
        r.error = f"{what}: {e}"
    finally:
        os.close(go_w)
    return r


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def timeout_message(action: Action) -> str:
    if action.kind == "httpGet":
        return (f"Get {gostr(action.url)}: context deadline exceeded "
                "(Client.Timeout exceeded while awaiting headers)")
    if action.kind == "tcpSocket":
        return f"dial tcp {action.netloc}: i/o timeout"
    if action.kind == "exec":
        return f"command {gostr(' '.join(action.argv))} timed out"
    return "container terminated before sleep hook finished"


def _fork(body: Callable[[], tuple[bool, str]], what: str, keep: tuple[int, ...] = (),
          alarm: float | None = None) -> Running:
    """Fork a child that runs body() -> (ok, message), reports and exits; it never returns."""
    parent = os.getpid()
    report_r, report_w = os.pipe()  # O_CLOEXEC: no exec'd program inherits it
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(report_r)
            _child_start(parent, (report_w, *keep))
            if alarm is not None:
                # Backstop for what socket timeouts cannot bound (a hung name lookup): the
                # kernel kills us with SIGALRM, which finish() reads as a timeout.
                signal.setitimer(signal.ITIMER_REAL, alarm + 0.2)
            ok, msg = body()
            if msg:
                _write_all(report_w, msg.encode(errors="replace"))
            code = 0 if ok else 1
        except BaseException as e:  # noqa: BLE001 - report everything, never return
            try:
                _write_all(report_w, f"{what}: {child.describe(e)}".encode(errors="replace"))
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(report_w)
    return Running(pid, report_r, what)


def _child_start(parent: int, keep: tuple[int, ...]) -> None:
    # The parent's signal handlers write to its wakeup pipe; a child must not (see child.py).
    signal.set_wakeup_fd(-1)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, signal.SIG_DFL)
    child.die_with_parent(parent)
    # Hold none of the parent's descriptors: a copy of a pipe's write end would keep its
    # reader from seeing EOF.
    child.close_fds_except(keep)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


# --- exec: inside the container -----------------------------------------------------------

def prepare_process(c: dict) -> dict[str, str]:
    """Make the calling process look like container `c`'s own: working directory, OOM score,
    user, capabilities. Returns the container's environment for exec.

    Shared by every process that execs inside a running container (probes, hooks, `minipod
    exec`). Call it in the process that will exec, after it has joined the container's
    namespaces (mnt included: the user is looked up in the container's /etc/passwd) and after
    its stdio is in place (a pty is opened as root), then close fds and exec. Order
    matters: the bounding set is dropped while we still have CAP_SETPCAP, before setuid;
    permitted/effective are limited after it (as container.py does for PID 1).
    """
    step = f"working directory {c['cwd']}"
    try:
        os.chdir(c["cwd"] if os.path.isdir(c["cwd"]) else "/")
        if "oom_score_adj" in c:
            child.set_oom_score_adj(c["oom_score_adj"])
        step = f"resolve user {c.get('user') or '0'}"
        uid, gid, groups = rootfs.lookup_user(c.get("user") or "")
        step = "set user and capabilities"
        caps.drop_bounding(c["caps"])
        if uid or gid:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
        caps.limit(c["caps"], c.get("no_new_privs", False))
    except OSError as e:
        raise OSError(e.errno, f"{step}: {child.describe(e)}") from None
    return dict(kv.split("=", 1) for kv in c["env"])


def restore_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ; an exec'd program must get the default actions
    (a shell pipeline's writer should die of SIGPIPE, not see EPIPE)."""
    for s in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)


def _exec_in_container(action: Action, c: dict, container_pid: int, timeout: float | None,
                       go_r: int) -> tuple[bool, str]:
    # The host's /proc, opened before we leave the host's mount namespace: the timeout kill
    # walks the process tree by host PIDs (what fork() returned to us).
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if os.read(go_r, 1) != b"g":
        os._exit(1)  # the parent could not put us in the cgroup; it reports why
    os.close(go_r)
    try:
        ns.join(container_pid, CONTAINER_NAMESPACES)
    except OSError as e:
        return False, (f"join the namespaces of container {c.get('name', '')!r} "
                       f"(pid {container_pid}): {child.describe(e)}")
    return run_command(list(action.argv), lambda: prepare_process(c), timeout, proc_fd)


def run_command(argv: list[str], prepare: Callable[[], dict[str, str]],
                timeout: float | None, proc_fd: int) -> tuple[bool, str]:
    """Fork, prepare() in the child, exec argv; capture stdout+stderr; enforce the timeout.

    We stay outside the command (we may be outside its PID namespace) and wait on a pidfd, so
    the timeout needs no signals. On timeout the command and all its descendants are killed
    (see kill_tree); processes that had already left the tree are not ours to find.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _command_child(argv, prepare, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    deadline = _deadline(timeout)
    output = bytearray()
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    timed_out = False
    try:
        while True:
            wait = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = not select.select([pidfd], [], [], 0)[0]
                    break
                wait = int(left * 1000) + 1
            events = poller.poll(wait)
            if any(fd == pidfd for fd, _ in events):
                break
            if events and not _read_into(out_r, output):
                poller.unregister(out_r)
        if timed_out:
            kill_tree(pid, proc_fd)
        _, status = os.waitpid(pid, 0)
        # What the command wrote before it exited is in the pipe; don't wait for more (a
        # background process it left behind may hold the pipe open forever).
        os.set_blocking(out_r, False)
        try:
            while _read_into(out_r, output):
                pass
        except BlockingIOError:
            pass
        os.set_blocking(err_r, False)
        try:
            err = os.read(err_r, 4096).decode(errors="replace")
        except BlockingIOError:
            err = ""
    finally:
        for fd in (out_r, err_r, pidfd):
            os.close(fd)
    cmd = " ".join(argv)
    if timed_out:
        return False, f"command {gostr(cmd)} timed out"
    if err:
        return False, f"unable to start container process: {err}"
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as runtimes report
    if code == 0:
        return True, ""
    text = output.decode(errors="replace").rstrip("\n")
    return False, f"command '{cmd}' exited with {code}: {text}".rstrip()


def _read_into(fd: int, buf: bytearray) -> bool:
    """Read a chunk into buf (keeping at most OUTPUT_LIMIT bytes); False at EOF."""
    data = os.read(fd, 65536)
    if len(buf) < OUTPUT_LIMIT:
        buf += data[:OUTPUT_LIMIT - len(buf)]
    return bool(data)


def _command_child(argv: list[str], prepare: Callable[[], dict[str, str]], out_w: int,
                   err_w: int) -> NoReturn:
    try:
        # Its own session: no terminal's signals, and one process group to kill on timeout.
        os.setsid()
        restore_signals()
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        env = prepare()
        # Die with the process that watches us (set after setuid, which would clear it).
        child.die_with_parent(None)
        child.close_fds_except((err_w,))
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            _write_all(err_w, child.exec_error(argv[0], e).encode(errors="replace"))
    except BaseException as e:  # noqa: BLE001 - report, never return into the caller's code
        try:
            _write_all(err_w, child.describe(e).encode(errors="replace"))
        except BaseException:  # noqa: BLE001
            pass
    os._exit(127)


def kill_tree(root: int, proc_fd: int, wait: float = 2.0) -> None:
    """SIGKILL `root` and every descendant, and wait (up to `wait` s) until they have exited.

    Each found process is held by a pidfd (so a recycled PID is never signalled) and stopped
    first, and the tree walked again until nothing new appears, so a process cannot fork its
    way out between our walk and our kill. SIGKILL only starts an exit; waiting on the pidfds
    means that when we report "timed out" nothing the command started still runs.
    """
    held: dict[int, int | None] = {}
    try:
        while new := (descendants(root, proc_fd) | {root}) - held.keys():
            for pid in new:
                held[pid] = _pidfd(pid)
                _signal(held[pid], signal.SIGSTOP)
        try:
            os.killpg(root, signal.SIGKILL)  # root is a session leader: its group goes too
        except (ProcessLookupError, PermissionError):
            pass
        for fd in held.values():
            _signal(fd, signal.SIGKILL)
        _wait_exited([fd for fd in held.values() if fd is not None], wait)
    finally:
        for fd in held.values():
            if fd is not None:
                os.close(fd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None  # it exited since the walk


def _signal(pidfd: int | None, sig: int) -> None:
    if pidfd is None:
        return
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass


def _wait_exited(pidfds: list[int], wait: float) -> None:
    """A pidfd turns readable when its process has exited (zombie or reaped)."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    left, deadline = len(pidfds), time.monotonic() + wait
    while left and (ms := int((deadline - time.monotonic()) * 1000)) > 0:
        for fd, _ in poller.poll(ms):
            poller.unregister(fd)
            left -= 1


def descendants(root: int, proc_fd: int) -> set[int]:
    """PIDs below `root`, from the parent links in /proc/*/stat (proc_fd: a /proc directory)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir(proc_fd):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"{name}/stat", os.O_RDONLY, dir_fd=proc_fd)
            try:
                data = os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError:
            continue  # it exited meanwhile
        ppid = int(data.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out: set[int] = set()
    todo = [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in out:
                out.add(kid)
                todo.append(kid)
    return out


# --- sleep, tcpSocket, httpGet: from the host -------------------------------------------------

def run_sleep(seconds: float, timeout: float | None) -> tuple[bool, str]:
    if timeout is not None and timeout < seconds:
        time.sleep(max(timeout, 0))
        return False, "container terminated before sleep hook finished"
    time.sleep(seconds)
    return True, ""


class _Timeout(Exception):
    pass


class _Failed(Exception):
    pass


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Timeout()
    return left


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def _dial(host: str, port: int, deadline: float | None):
    """Connect like Go's net.Dial: every address of host in turn; Go's error words."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise _Failed(f"dial tcp: lookup {host}: {_lower_first(e.strerror or str(e))}") \
            from None
    error = f"dial tcp {hostport(host, port)}: no addresses"
    for family, kind, proto, _, addr in infos:
        where = hostport(addr[0], addr[1])
        s = socket.socket(family, kind, proto)
        try:
            s.settimeout(_remaining(deadline))
            s.connect(addr)
            return s
        except (_Timeout, TimeoutError):
            s.close()
            raise _Timeout(f"dial tcp {where}: i/o timeout") from None
        except OSError as e:
            s.close()
            error = f"dial tcp {where}: connect: {_lower_first(e.strerror or str(e))}"
    raise _Failed(error)


def run_tcp(action: Action, deadline: float | None) -> tuple[bool, str]:
    try:
        _dial(action.host, action.port, deadline).close()
    except _Timeout as e:
        return False, str(e) or timeout_message(action)
    except _Failed as e:
        return False, str(e)
    return True, ""


def run_http(action: Action, deadline: float | None) -> tuple[bool, str]:
    """GET action.url the way the kubelet's prober does; (ok, message)."""
    from urllib.parse import urljoin, urlsplit

    scheme, host, port, target = action.scheme, action.host, action.port, action.target
    headers = list(action.headers)  # headers[0] is Host (see _headers)
    custom_host = headers[0][1] != action.netloc
    url = action.url
    for hop in range(MAX_REDIRECTS + 1):
        try:
            code, fields, body = http_once(scheme, host, port, target, headers, deadline)
        except _Timeout:
            return False, (f"Get {gostr(url)}: context deadline exceeded "
                           "(Client.Timeout exceeded while awaiting headers)")
        except _Failed as e:
            return False, f"Get {gostr(url)}: {e}"
        location = fields.get("location")
        if code in REDIRECTS and location:
            new = urljoin(url, location)
            parts = urlsplit(new)
            if (parts.hostname or "") != action.host.lower():
                # The kubelet does not follow a redirect to another host: it reports the 3xx as
                # a success with a warning (probe.Warning).
                return True, f"Probe terminated redirects, Response body: {body}"
            if hop == MAX_REDIRECTS:
                return False, f"Get {gostr(new)}: stopped after {MAX_REDIRECTS} redirects"
            try:
                new_port = parts.port
            except ValueError:
                return False, f"Get {gostr(new)}: invalid port in redirect"
            if parts.scheme not in ("http", "https"):
                return False, f'Get {gostr(new)}: unsupported protocol scheme "{parts.scheme}"'
            scheme = parts.scheme
            port = new_port or (443 if scheme == "https" else 80)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            # Go keeps a custom Host header only through a relative redirect.
            if not (custom_host and not urlsplit(location).netloc):
                headers[0] = ("Host", parts.netloc)
            url = new
            continue
        if 200 <= code < 300:
            return True, ""
        if 300 <= code < 400:
            return True, f"Probe terminated redirects, Response body: {body}"
        return False, f"HTTP probe failed with statuscode: {code}"
    return False, f"Get {gostr(url)}: stopped after {MAX_REDIRECTS} redirects"


def request_bytes(target: str, headers: list[tuple[str, str]] | tuple) -> bytes:
    lines = [f"GET {target} HTTP/1.1"] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status code and the (lower-cased) header fields of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if (len(status) < 2 or not status[0].startswith("HTTP/1.") or len(status[1]) != 3
            or not status[1].isdigit()):
        raise _Failed("net/http: HTTP/1.x transport connection broken: "
                      f"malformed HTTP response {gostr(lines[0][:80])}")
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return int(status[1]), fields


def http_once(scheme: str, host: str, port: int, target: str, headers: list[tuple[str, str]],
              deadline: float | None) -> tuple[int, dict[str, str], str]:
    """One GET over a fresh connection: (status code, header fields, start of the body)."""
    import socket

    sock = _dial(host, port, deadline)
    try:
        if scheme == "https":
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the kubelet's InsecureSkipVerify
            sni = None if _is_ip(host) else host
            try:
                sock.settimeout(_remaining(deadline))
                sock = ctx.wrap_socket(sock, server_hostname=sni)
            except ssl.SSLError as e:
                raise _Failed(f"tls: {e.reason or e}") from None
        try:
            sock.settimeout(_remaining(deadline))
            sock.sendall(request_bytes(target, headers))
            data = b""
            while True:
                head, sep, rest = data.partition(b"\r\n\r\n")
                if sep:
                    code, fields = parse_head(head)
                    if 100 <= code < 200 and code != 101:
                        data = rest  # an interim response (100 Continue): the real one follows
                        continue
                    break
                if len(data) > 65536:
                    raise _Failed("net/http: HTTP/1.x transport connection broken: "
                                  "response headers too long")
                sock.settimeout(_remaining(deadline))
                chunk = sock.recv(65536)
                if not chunk:
                    raise _Failed("EOF" if not data else "unexpected EOF")
                data += chunk
            body = rest
            if 300 <= code < 400:  # the body only matters for the redirect warning
                try:
                    while len(body) < BODY_LIMIT:
                        sock.settimeout(_remaining(deadline))
                        chunk = sock.recv(BODY_LIMIT)
                        if not chunk:
                            break
                        body += chunk
                except (_Timeout, OSError):
                    pass
            return code, fields, body[:BODY_LIMIT].decode(errors="replace")
        except (socket.timeout, TimeoutError):
            raise _Timeout() from None
        except OSError as e:
            raise _Failed(f"read tcp {hostport(host, port)}: "
                          f"{_lower_first(e.strerror or str(e))}") from None
    finally:
        sock.close()


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False
