"""`pods/{name}/exec`: a command in a container, its stdio relayed over the client's channels.

The channels (stdin 0, stdout 1, stderr 2, error 3: the final Status, resize 4) come over one
of two transports, behind the small Channels interface below:
- WebSocket (wschannels.py): v5.channel.k8s.io / v4, kubectl >= 1.30;
- SPDY/3.1 streams (spdyexec.py): v4.channel.k8s.io down to v2, kubectl before 1.30.
The process side is the same for both, here.

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
import termios
import threading
from typing import Protocol

from minipod import python_m
from minipod.api.status import ApiError

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class Channels(Protocol):
    """What a session needs of its transport. serve() reads the client until it is gone
    (or the channels are closed), calling the session's stdin(), stdin_end() and resize();
    the other methods are called from the session's threads."""

    closed: bool  # the client is gone: nothing more can be sent

    def send(self, channel: int, data: bytes) -> None: ...
    def end(self, channel: int) -> None: ...  # no more output on this channel
    def finish(self, status: dict) -> None: ...  # the final Status, then the close
    def serve(self, session: "Session") -> None: ...


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
    tty, stdin = req.flag("tty"), req.flag("stdin")
    channels = open_channels(req, "exec", stdin=stdin, stdout=req.flag("stdout"),
                             stderr=req.flag("stderr") and not tty, tty=tty)
    Session(api, channels, name, c["name"], argv, tty=tty, stdin=stdin).run()
    return None


def open_channels(req, what: str, *, stdin: bool, stdout: bool, stderr: bool,
                  tty: bool) -> Channels:
    """Upgrade the request to the channels its client asked for (the 101 is sent here)."""
    from minipod.api import spdyexec, upgrade, wschannels

    if upgrade.is_websocket(req):
        return wschannels.accept(req)
    if upgrade.is_spdy(req):
        return spdyexec.accept(req, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
    raise ApiError(400, f"{what} needs an upgrade to WebSocket ({wschannels.PROTOCOLS[0]}) or "
                        f"SPDY/3.1 (got Upgrade: {req.headers.get('Upgrade') or 'none'})")


def exit_status(code: int, argv: list[str]) -> dict:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"{argv}, exit code {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


class Session:
    """A `minipod exec` child and its relay to the channels."""

    def __init__(self, api, channels: Channels, pod: str, container: str, argv: list[str],
                 tty: bool = False, stdin: bool = False):
        self.api, self.ch = api, channels
        self.pod, self.container, self.argv = pod, container, argv
        self.tty, self.stdin_open = tty, stdin
        self.proc: subprocess.Popen | None = None
        self.master: int | None = None

    def _start(self) -> None:
        argv = python_m("minipod")
        if self.api.config_path:
            argv += ["--config", self.api.config_path]
        argv += ["exec", self.pod, "-c", self.container]
        if self.stdin_open:
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
                argv, stdin=subprocess.PIPE if self.stdin_open else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                env=env, close_fds=True)

    def run(self) -> None:
        self._start()
        self.api.sessions.add(self)
        try:
            self._relay()
        finally:
            self.api.sessions.discard(self)
            if self.master is not None:
                os.close(self.master)
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass

    def _relay(self) -> None:
        if self.tty:
            pumps = [(self.master, STDOUT)]
        else:
            pumps = [(self.proc.stdout.fileno(), STDOUT), (self.proc.stderr.fileno(), STDERR)]
        threads = [threading.Thread(target=self._pump, args=p, daemon=True) for p in pumps]
        for t in threads:
            t.start()
        reader = threading.Thread(target=self._read_client, daemon=True)
        reader.start()
        code = self.proc.wait()
        for t in threads:
            t.join(5)
        if not self.ch.closed:  # else the client went away: _read_client killed everything
            for _, channel in pumps:
                self.ch.end(channel)
            self.ch.finish(exit_status(code, self.argv))
        reader.join(10)

    def _pump(self, fd: int, channel: int) -> None:
        while True:
            try:
                data = os.read(fd, 32768)
            except OSError:  # EIO: the pty's other side is closed, the command is done
                return
            if not data:
                return
            self.ch.send(channel, data)

    def _read_client(self) -> None:
        try:
            self.ch.serve(self)
        finally:
            self.client_gone()

    # -- what the channels call --
    def client_gone(self) -> None:
        if self.proc.poll() is None and self.ch.closed:
            # The connection dropped (or was closed) while the command runs: end it all.
            kill_tree(self.proc.pid)

    def stdin(self, data: bytes) -> None:
        try:
            if self.tty:
                os.write(self.master, data)
            elif self.proc.stdin:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def stdin_end(self) -> None:
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

    def resize(self, width: int, height: int) -> None:
        if self.master is None:
            return
        try:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
            os.kill(self.proc.pid, signal.SIGWINCH)
        except OSError:
            pass


def parse_size(data: bytes) -> tuple[int, int] | None:
    """{"Width": w, "Height": h} -> (w, h); None if it is not that."""
    try:
        size = json.loads(data)
        return int(size["Width"]), int(size["Height"])
    except (ValueError, KeyError, TypeError):
        return None


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
