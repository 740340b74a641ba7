"""What the kubectl integration tests share: the pinned kubectl binaries as fixtures, a
running `minipod serve` with a kubeconfig (Served), and helpers to wait and look.
Test modules import the fixtures by name (`from kubeserve import served, ...`).
"""

from __future__ import annotations

import http.client
import os
import pty
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

import kubectl_clients
from conftest import reap_orphans, tied_popen


@pytest.fixture(scope="session")
def kubectl135():
    path = kubectl_clients.kubectl_135()
    if path is None:
        pytest.skip(kubectl_clients.why["1.35"])
    return path


@pytest.fixture(scope="session")
def kubectl120():
    path = kubectl_clients.kubectl_120()
    if path is None:
        pytest.skip(kubectl_clients.why["1.20"])
    return path


class Served:
    """A running `minipod serve` and a kubectl pointed at it."""

    def __init__(self, mp, kubectl: str):
        self.mp = mp
        self.kubectl = kubectl
        self.home = os.path.join(mp.base, "home")  # kubectl's discovery cache, ours alone
        os.makedirs(self.home, exist_ok=True)
        # Its log goes to a file: a pipe nobody drains would block the server once full.
        self.log = os.path.join(mp.base, "serve.log")
        with open(self.log, "w") as f:
            self.proc = tied_popen([sys.executable, "-m", "minipod", "serve", "--port", "0"],
                                   env=mp.env, stdout=f, stderr=f)
        m = mp.wait(lambda: self.proc.poll() is None and re.search(
            r"https://127\.0\.0\.1:(\d+) \(export KUBECONFIG=(\S+)\)", open(self.log).read())
            or self.proc.poll() is not None, 30, "minipod serve to listen")
        assert m is not True, f"minipod serve exited: {open(self.log).read()}"
        self.port, self.kubeconfig = int(m.group(1)), m.group(2)
        self.env = dict(os.environ, KUBECONFIG=self.kubeconfig, HOME=self.home)

    def k(self, *args, check=True, timeout=60, binary=None, **kw):
        p = subprocess.run([binary or self.kubectl, *args], env=self.env, capture_output=True,
                           text=True, timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {p.returncode}:\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p

    def raw(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
            cert: bool = True, read: int = 1 << 20) -> tuple[int, bytes]:
        """One HTTP/1.1 request over TLS (our CA verified), with or without the client cert."""
        d = os.path.dirname(self.kubeconfig)
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
        if cert:
            ctx.load_cert_chain(os.path.join(d, "admin.crt"), os.path.join(d, "admin.key"))
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as s, \
                ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            hdrs = {"Host": f"127.0.0.1:{self.port}", "Content-Length": str(len(body)),
                    "Connection": "close", **(headers or {})}
            t.sendall(f"{method} {path} HTTP/1.1\r\n".encode() + "".join(
                f"{k}: {v}\r\n" for k, v in hdrs.items()).encode() + b"\r\n" + body)
            data = b""
            while len(data) < read:
                try:
                    chunk = t.recv(65536)
                except (ConnectionResetError, ssl.SSLError):
                    break
                if not chunk:
                    break
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), rest

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("minipod serve did not stop on SIGTERM")
        with open(self.log) as f:
            print(f.read())  # shown with a failing test


@pytest.fixture
def served(mp, kubectl135):
    s = Served(mp, kubectl135)
    yield s
    s.stop()


def ready(served, name: str) -> None:
    served.k("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=60s", timeout=90)


def tty_kubectl(served, args: list[str], script: bytes, rows: int, cols: int):
    """kubectl in a pty of the given size; feed `script` after the prompt, return (rc, out)."""
    import fcntl
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execve(served.kubectl, [served.kubectl, *args], served.env)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    out = b""
    sent = False
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
        if not sent and b"# " in out:
            os.write(fd, script)
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def ended(pids: list[int]) -> bool:
    """True once none of `pids` exists any more, not even as a zombie. An exec'd command
    whose `minipod exec` was killed is reparented to us (the subreaper), and its zombie in
    the container's PID namespace would keep that namespace's PID 1 from exiting
    (zap_pid_ns_processes), so the pod from stopping: reap it, as init would."""
    reap_orphans()
    return not any(os.path.exists(f"/proc/{p}") for p in pids)


def procs(needle: str) -> list[int]:
    """PIDs whose command line is exactly `needle`."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if cmd == needle:  # exactly the command in the container, not kubectl's argv
                out.append(int(d))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str = "/index.html") -> bytes:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        assert r.status == 200, (r.status, r.read())
        return r.read()
    finally:
        c.close()


class PortForward:
    """A `kubectl port-forward` running in the background, its output collected."""

    def __init__(self, served, binary: str, pod: str, *args: str):
        ports = [a for a in args if not a.startswith("-")]
        self.p = tied_popen([binary, "port-forward", f"pod/{pod}", *args], env=served.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = b""
        self.err = b""
        self._t = [threading.Thread(target=self._drain, args=(s, n), daemon=True)
                   for s, n in ((self.p.stdout, "out"), (self.p.stderr, "err"))]
        for t in self._t:
            t.start()
        deadline = time.monotonic() + 30
        while self.out.count(b"Forwarding from 127.0.0.1") < len(ports):
            assert self.p.poll() is None and time.monotonic() < deadline, (self.out, self.err)
            time.sleep(0.1)

    def _drain(self, stream, name: str) -> None:
        for line in iter(stream.readline, b""):
            setattr(self, name, getattr(self, name) + line)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)
        for t in self._t:
            t.join(5)
