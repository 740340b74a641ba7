"""`pods/{name}/attach`: the same channels as exec, over the same transports (WebSocket, or
SPDY for kubectl before 1.30: exec.open_channels), relayed to the container's attach socket
at its pod's supervisor (kubelet/attachproto.py, whose data kinds are these channels).

As the kubelet does it: the tty is the container's (`tty` in its spec), whatever the request
says, and with a tty there is no stderr; `stdin=true` on a container without stdin is not an
error, its input goes nowhere (containerd has no stdin to copy it to); the session ends when
the container exits or, without stdinOnce, when the client's stdin ends; then the error
channel carries a Success Status. A dropped connection is a detach: the container goes on.
"""

from __future__ import annotations

import json
import socket
import threading

from minipod.api import exec as execmod
from minipod.api.status import ApiError
from minipod.kubelet import attachproto as ap


def handle(api, req, ns: str, name: str):
    from minipod import state
    from minipod.api import pods
    from minipod.errors import MinipodError

    pods._find(api, ns, name)
    rec = state.PodRecord(api.cfg.root, name)
    try:
        c, st = rec.container(req.arg("container") or None)
    except MinipodError as e:
        raise ApiError(400, str(e)) from None
    stdin, stdout, stderr = req.flag("stdin"), req.flag("stdout"), req.flag("stderr")
    if not (stdin or stdout or stderr):
        raise ApiError(400, "you must specify at least 1 of stdin, stdout, stderr")
    not_running = f'container {c["name"]} is not valid for pod {name}: not running'
    if not rec.active or "running" not in (st.get("state") or {}):
        raise ApiError(400, not_running)
    tty = bool(c.get("tty"))
    try:  # before the upgrade, so that a refusal is an HTTP answer kubectl prints
        client = ap.Client(ap.socket_path(rec.plan["run_dir"], c["name"]), stdin=stdin,
                           stdout=stdout, stderr=stderr and not tty)
    except (OSError, EOFError, ap.Refused):
        raise ApiError(400, not_running) from None
    try:
        # The streams a SPDY client opens follow its own tty flag, not the container's.
        channels = execmod.open_channels(req, "attach", stdin=stdin, stdout=stdout,
                                         stderr=stderr and not req.flag("tty"),
                                         tty=req.flag("tty"))
    except BaseException:
        client.close()
        raise
    AttachSession(api, channels, client, stdout, stderr and not tty).run()
    return None


class AttachSession:
    def __init__(self, api, channels: execmod.Channels, client: ap.Client, stdout: bool,
                 stderr: bool):
        self.api, self.ch, self.client = api, channels, client
        self.proc = None  # (server.serve's shutdown kills the processes of exec sessions)
        self.tty = client.tty
        self.want = {ap.STDOUT: stdout, ap.STDERR: stderr}

    def run(self) -> None:
        try:
            self.api.sessions.add(self)
            try:
                self._relay()
            finally:
                self.api.sessions.discard(self)
        finally:
            self.client.close()

    def _relay(self) -> None:
        reader = threading.Thread(target=self._read_client, daemon=True)
        reader.start()
        while (msg := self.client.recv()) is not None:
            kind, payload = msg
            if self.want.get(kind):
                self.ch.send(kind, payload)
        if not self.ch.closed:
            for kind, wanted in self.want.items():
                if wanted:
                    self.ch.end(kind)
            self.ch.finish({"metadata": {}, "status": "Success"})
        reader.join(10)

    def _read_client(self) -> None:
        try:
            self.ch.serve(self)
        finally:
            self.client_gone()

    def stdin(self, data: bytes) -> None:
        self.client.send_stdin(data)

    def stdin_end(self) -> None:
        self.client.close_stdin()

    def resize(self, width: int, height: int) -> None:
        self.client.resize(width, height)

    def client_gone(self) -> None:
        """kubectl went away (or closed the connection): a detach. The shutdown wakes the
        relay's recv() in the other thread."""
        if not self.ch.closed:
            return
        self.client.detach()
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
