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
- grpc: a grpc.health.v1.Health/Check call to the pod IP (grpcprobe.py); SERVING = success.
- sleep: the lifecycle sleep action.

The messages are the kubelet's own strings (pkg/probe/http, staging cri-client remote_runtime):
    HTTP probe failed with statuscode: 500
    Get "http://10.244.0.5:81/": dial tcp 10.244.0.5:81: connect: connection refused
    dial tcp 10.244.0.5:81: connect: connection refused
    command 'cat /tmp/healthy' exited with 1: cat: can't open '/tmp/healthy': No such file ...
    command "sleep 5" timed out

Here: what a handler says (parse) and running it in a child (spawn, Running). How: exec in
incontainer.py, httpGet and tcpSocket in netprobe.py, grpc in grpcprobe.py. Imports stay light
(the supervisor imports this module); socket, ssl and h2 are imported in the child that needs
them.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from minipod.errors import MinipodError
from minipod.kubelet import incontainer, netprobe
from minipod.kubelet.netprobe import gostr, hostport
from minipod.pod import child

if TYPE_CHECKING:
    from minipod.pod.plan import ContainerPlan

KUBE_VERSION = "1.31"
USER_AGENT = f"kube-probe/{KUBE_VERSION}"
KINDS = ("exec", "httpGet", "tcpSocket", "grpc", "sleep")


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
    service: str = ""                        # grpc: the service name asked about

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
        if self.kind == "grpc":
            return f"grpc {self.netloc} {gostr(self.service)}"
        return f"sleep {self.seconds:g}s"


def resolve_port(port: int | str, c: ContainerPlan, field: str) -> int:
    """An IntOrString port: a number, or the name of one of the container's ports
    (pkg/kubelet/prober: a name, then a number written as a string)."""
    if isinstance(port, str):
        named = {p.get("name"): p.get("containerPort")
                 for p in (c.spec or {}).get("ports") or [] if p.get("name")}
        if port in named:
            port = named[port]
        elif port.isdigit():
            port = int(port)
        else:
            names = ", ".join(f"{n}={v}" for n, v in named.items()) or "none"
            raise ActionError(f'{field}: container "{c.name}" has no port named '
                              f'"{port}" (its named ports: {names})')
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ActionError(f"{field}: invalid port number: {port}")
    return port


def parse(handler: dict, c: ContainerPlan, pod_ip: str) -> Action:
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
    port = resolve_port(h.get("port"), c, f"{kind}.port")
    host = h.get("host") or pod_ip
    if not host:
        raise ActionError(f"{kind}: the pod has no IP and {kind}.host is not set")
    if kind == "tcpSocket":
        return Action("tcpSocket", host=host, port=port)
    if kind == "grpc":  # mode TLS: TLS without verification (the kubelet's GRPCAction.mode)
        return Action("grpc", host=host, port=port, service=h.get("service") or "",
                      scheme="https" if h.get("mode") == "TLS" else "http")
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


def spawn(handler: dict, c: ContainerPlan, container_pid: int, pod_ip: str, driver,
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
        run = netprobe.run_http if action.kind == "httpGet" else netprobe.run_tcp
        r = _fork(lambda: run(action, _deadline(timeout)), what, alarm=timeout)
        r.timeout_message = timeout_message(action)
        return r
    if action.kind == "grpc":
        from minipod.kubelet import grpcprobe

        r = _fork(lambda: grpcprobe.run_grpc(action, _deadline(timeout), timeout), what,
                  alarm=timeout)
        r.timeout_message = ("timeout: health rpc did not complete within "
                             f"{grpcprobe.seconds(timeout or 1)}")
        return r
    if not container_pid:
        return _fork(lambda: (False, f'container "{c.name}" is not running'), what)
    go_r, go_w = os.pipe()
    try:
        r = _fork(lambda: incontainer.run(action.argv, c, container_pid, timeout, go_r), what,
                  keep=(go_r,))
    except BaseException:
        os.close(go_w)
        raise
    finally:
        os.close(go_r)
    try:
        # The command must be born in the container's cgroup (its limits and accounting), so
        # the child waits until we have moved it there.
        driver.join(c.cgroup, r.pid)
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
    if action.kind == "grpc":
        return "timeout: health rpc did not complete in time"
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


# --- sleep ----------------------------------------------------------------------------------

def run_sleep(seconds: float, timeout: float | None) -> tuple[bool, str]:
    if timeout is not None and timeout < seconds:
        time.sleep(max(timeout, 0))
        return False, "container terminated before sleep hook finished"
    time.sleep(seconds)
    return True, ""
