"""Sockets of another network namespace, for a process that stays in its own.

A socket belongs to the network namespace it was created in for its whole life, whichever
namespace the process that uses it is in later: connect() on it routes in that namespace, and
127.0.0.1 there is the pod's loopback. So to dial into a pod (port-forward, as containerd's
PortForward does by entering the sandbox's netns and dialling localhost), only the socket()
call has to happen inside the pod's netns; the relaying can run anywhere.

That one call runs in a forked helper which joins the namespace once, at start, and then
makes sockets on request, handing each back over a unix socketpair (SCM_RIGHTS). The caller
never changes its own namespaces (setns in a multi-threaded Python process would move only
one thread, and whichever thread next ran Python code would not know where it is), and the
helper is forked before the caller starts any thread. It exits when its socketpair reaches
EOF, i.e. when the caller closes it or dies, so it cannot outlive its user.

A threaded caller (the API server's port-forward) must not fork a Python child at all: it
uses NetnsSockets.spawn(), which execs a fresh `python -m minipod.net.nssocket` (fork+exec is
safe with threads; only the exec'd program runs in the child) that opens the namespace file
and serves the same protocol.

Protocol, per request: -> 8 bytes, struct "ii" (family, type); <- 1 byte b"+" with the fd
attached, or b"-" followed by a one-line error and a newline.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading

from minipod.kernel import _libc
from minipod.net import NetError

REQUEST = struct.Struct("ii")


class NetnsSocketError(NetError):
    """The namespace could not be joined, or a socket could not be made in it."""


class NetnsSockets:
    """socket(family, type) inside the network namespace `netns_fd` refers to."""

    def __init__(self, netns_fd: int | None, what: str = "the pod's network namespace",
                 _path: str | None = None) -> None:
        self.what = what
        self._lock = threading.Lock()  # one request at a time on the shared socketpair
        self._proc = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ready_r, ready_w = os.pipe()
        if _path is not None:  # spawn(): exec a fresh helper
            import subprocess

            from minipod import python_m

            try:
                self._proc = subprocess.Popen(
                    [*python_m("minipod.net.nssocket"), str(theirs.fileno()),
                     str(ready_w), _path], pass_fds=(theirs.fileno(), ready_w),
                    stdin=subprocess.DEVNULL, close_fds=True)
            except OSError:
                for x in (ours, theirs):
                    x.close()
                for fd in (ready_r, ready_w):
                    os.close(fd)
                raise
            pid = self._proc.pid
        else:
            pid = os.fork()
            if pid == 0:  # never returns into the caller's code
                try:
                    ours.close()
                    os.close(ready_r)
                    _child(theirs, netns_fd, ready_w)
                finally:
                    os._exit(0)
        theirs.close()
        os.close(ready_w)
        self.pid = pid
        self._sock = ours
        with os.fdopen(ready_r, "rb") as f:  # EOF with no data: joined and serving
            err = f.read()
        if err:
            self.close()
            raise NetnsSocketError(f"enter {what}: {err.decode(errors='replace')}")

    @classmethod
    def spawn(cls, netns_path: str, what: str = "the pod's network namespace") -> "NetnsSockets":
        """The same, from a threaded process: the helper is exec'd, and opens `netns_path`."""
        return cls(None, what, _path=netns_path)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        with self._lock:
            try:
                self._sock.sendall(REQUEST.pack(family, type))
                msg, fds, _, _ = socket.recv_fds(self._sock, 4096, 1)
            except OSError as e:
                raise NetnsSocketError(f"socket helper for {self.what}: {e.strerror}") from None
        if msg[:1] == b"+" and fds:
            return socket.socket(fileno=fds[0])
        for fd in fds:
            os.close(fd)
        if not msg:
            raise NetnsSocketError(f"socket helper for {self.what} exited")
        raise NetnsSocketError(f"socket in {self.what}: {msg[1:].decode(errors='replace').strip()}")

    def close(self) -> None:
        self._sock.close()  # EOF: the helper exits
        if self._proc is not None:
            self._proc.wait()
        elif self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        self.pid = 0

    def __enter__(self) -> "NetnsSockets":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child(sock: socket.socket, netns_fd: int, ready_w: int) -> None:
    try:
        # Ctrl-C goes to the whole foreground group: the caller decides when we stop (EOF).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        keep = {sock.fileno(), netns_fd, ready_w}
        for fd in range(3, max(keep) + 1):  # no listener or relay of the caller's stays open
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.closerange(max(keep) + 1, 1 << 16)
        _libc.setns(netns_fd, _libc.CLONE_NEWNET, what="setns net")
        os.close(netns_fd)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        os.write(ready_w, f"{e}".encode()[:4096])
        return
    os.close(ready_w)
    while True:
        try:
            req = sock.recv(REQUEST.size, socket.MSG_WAITALL)
        except OSError:
            return
        if len(req) < REQUEST.size:
            return  # EOF: the caller is done (or gone)
        family, type_ = REQUEST.unpack(req)
        try:
            s = socket.socket(family, type_)
        except OSError as e:
            sock.sendall(b"-" + f"{e.strerror}\n".encode())
            continue
        try:
            socket.send_fds(sock, [b"+"], [s.fileno()])
        except OSError:
            return
        finally:
            s.close()


def main(argv: list[str]) -> None:
    """`python -m minipod.net.nssocket SOCK_FD READY_FD NETNS_PATH` (spawn()'s helper)."""
    sock_fd, ready_w, path = int(argv[0]), int(argv[1]), argv[2]
    sock = socket.socket(fileno=sock_fd)
    try:
        netns = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        os.write(ready_w, f"open {path}: {e.strerror}".encode())
        return
    _child(sock, netns, ready_w)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
