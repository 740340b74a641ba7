"""`pods/{name}/exec` over WebSocket: the channel protocol of kubectl >= 1.30
(v5.channel.k8s.io; v4 accepted too). wsproto does the WebSocket framing.

Every binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 error (a Status:
Success, or the exit code as the cause `ExitCode`), 4 resize ({"Width", "Height"}); in v5,
255 closes a channel ([255, 0]: stdin is at its end).

The command runs as `minipod exec` in a child process -- the CLI's own path into the
container (cgroup, namespaces, user, capabilities, a pty inside the container's devpts): the
setns and fork it needs must not happen in this threaded server. With a tty, its stdin is a
host pty whose size we set on resize (and signal SIGWINCH, which `minipod exec` copies into the
container's pty). A dropped connection kills the command and everything it started.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import termios
import threading

from minipod.api.status import ApiError

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def handle(api, req, ns: str, name: str):
    from minipod import state
    from minipod.api import pods
    from minipod.errors import MinipodError

    pods._find(api, ns, name)
    argv = req.query.get("command") or []
    if not argv:
        raise ApiError(400, "you must specify at least 1 command")
    rec = state.PodRecord(api.cfg.root, name)
    try:
        c, st = rec.container(req.arg("container") or None)
    except MinipodError as e:
        raise ApiError(400, str(e)) from None
    if not rec.active or "running" not in (st.get("state") or {}):
        raise ApiError(400, f'container {c["name"]} is not valid for pod {name}: not running')
    proto = protocol(req, "exec")
    session = Session(api, req, name, c["name"], argv, proto)
    session.run()
    return None


def protocol(req, what: str) -> str:
    """The channel protocol the WebSocket upgrade asks for, of ours (exec and attach)."""
    upgrade = (req.headers.get("Upgrade") or "").lower()
    offered = [p.strip() for p in (req.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    proto = next((p for p in PROTOCOLS if p in offered), None)
    if upgrade != "websocket" or proto is None or not req.headers.get("Sec-WebSocket-Key"):
        raise ApiError(400, f"minipod serves {what} over WebSocket with the v5.channel.k8s.io "
                            "protocol only (kubectl >= 1.30); SPDY (older kubectl) is not "
                            f"implemented (got Upgrade: {upgrade or 'none'})")
    return proto


class Session:
    def __init__(self, api, req, pod: str, container: str, argv: list[str], proto: str):
        self.api, self.req, self.h = api, req, req.h
        self.pod, self.container, self.argv, self.proto = pod, container, argv, proto
        self.tty = req.flag("tty")
        self.stdin = req.flag("stdin")
        self.wlock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.master: int | None = None
        self.closed = threading.Event()

    def _accept(self) -> None:
        from wsproto.connection import Connection, ConnectionType
        from wsproto.utilities import generate_accept_token

        h = self.h
        h.send_response(101)
        h.send_header("Upgrade", "websocket")
        h.send_header("Connection", "Upgrade")
        h.send_header("Sec-WebSocket-Accept",
                      generate_accept_token(h.headers["Sec-WebSocket-Key"].encode()).decode())
        h.send_header("Sec-WebSocket-Protocol", self.proto)
        h.end_headers()
        h.wfile.flush()
        h.close_connection = True
        h.connection.settimeout(None)  # an interactive shell may sit idle for hours
        self.ws = Connection(ConnectionType.SERVER)

    def send(self, channel: int, data: bytes) -> None:
        from wsproto.events import BytesMessage

        with self.wlock:
            if self.closed.is_set():
                return
            try:
                self.h.wfile.write(self.ws.send(BytesMessage(data=bytes([channel]) + data)))
                self.h.wfile.flush()
            except OSError:
                self.closed.set()

    def _start(self) -> None:
        argv = [sys.executable, "-m", "minipod"]
        if self.api.config_path:
            argv += ["--config", self.api.config_path]
        argv += ["exec", self.pod, "-c", self.container]
        if self.stdin:
            argv.append("-i")
        if self.tty:
            argv.append("-t")
        argv += ["--", *self.argv]
        env = dict(os.environ, TERM="xterm")
        if self.tty:
            import pty

            self.master, slave = pty.openpty()
            self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                         start_new_session=True, env=env, close_fds=True)
            os.close(slave)
        else:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                env=env, close_fds=True)

    def run(self) -> None:
        self._accept()
        self._start()
        self.api.sessions.add(self)
        try:
            self._relay()
        finally:
            self.api.sessions.discard(self)

    def _relay(self) -> None:
        pumps = []
        if self.tty:
            pumps.append(threading.Thread(target=self._pump, args=(self.master, STDOUT),
                                          daemon=True))
        else:
            pumps += [threading.Thread(target=self._pump, args=(self.proc.stdout.fileno(), ch),
                                       daemon=True) for ch in (STDOUT, STDERR)]
        for t in pumps:
            t.start()
        reader = threading.Thread(target=self._read_client, daemon=True)
        reader.start()
        code = self.proc.wait()
        for t in pumps:
            t.join(5)
        if self.closed.is_set():
            return  # the client went away: _read_client killed everything
        if code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                      "message": f"command terminated with non-zero exit code: error "
                                 f"executing command {self.argv}, exit code {code}",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        self.send(ERROR, json.dumps(status).encode())
        self._close_ws()
        if self.master is not None:
            os.close(self.master)

    def _pump(self, fd: int, channel: int) -> None:
        if not self.tty and channel == STDERR:
            fd = self.proc.stderr.fileno()
        while True:
            try:
                data = os.read(fd, 32768)
            except OSError:  # EIO: the pty's other side is closed, the command is done
                return
            if not data:
                return
            self.send(channel, data)

    def _close_ws(self) -> None:
        from wsproto.events import CloseConnection

        with self.wlock:
            if self.closed.is_set():
                return
            try:
                self.h.wfile.write(self.ws.send(CloseConnection(code=1000)))
                self.h.wfile.flush()
            except Exception:
                pass
            self.closed.set()

    def _read_client(self) -> None:
        from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

        buf = b""
        try:
            while True:
                data = self.h.rfile.read1(65536)
                if not data:
                    break
                self.ws.receive_data(data)
                for ev in self.ws.events():
                    if isinstance(ev, Ping):
                        with self.wlock:
                            self.h.wfile.write(self.ws.send(ev.response()))
                            self.h.wfile.flush()
                    elif isinstance(ev, CloseConnection):
                        raise EOFError
                    elif isinstance(ev, (BytesMessage, TextMessage)):
                        part = ev.data if isinstance(ev, BytesMessage) else ev.data.encode()
                        buf += part
                        if ev.message_finished:
                            self._message(buf)
                            buf = b""
        except Exception:
            pass
        self._client_gone()

    def _client_gone(self) -> None:
        if self.proc.poll() is None and not self.closed.is_set():
            # The connection dropped (or was closed) while the command runs: end it all.
            self.closed.set()
            kill_tree(self.proc.pid)

    def _message(self, msg: bytes) -> None:
        if not msg:
            return
        ch, data = msg[0], msg[1:]
        if ch == STDIN:
            try:
                if self.tty:
                    os.write(self.master, data)
                elif self.proc.stdin:
                    self.proc.stdin.write(data)
                    self.proc.stdin.flush()
            except OSError:
                pass
        elif ch == RESIZE and self.master is not None:
            try:
                size = json.loads(data)
                fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                            struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0))
                os.kill(self.proc.pid, signal.SIGWINCH)
            except (ValueError, KeyError, TypeError, OSError):
                pass
        elif ch == CLOSE and data[:1] == bytes([STDIN]):
            if self.tty:
                try:
                    os.write(self.master, b"\x04")  # ^D: the terminal's end of input
                except OSError:
                    pass
            elif self.proc.stdin:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (the command joined the container's pid
    namespace, but from here it is still a descendant of `minipod exec`)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
