"""`pods/{name}/attach` over WebSocket (v5.channel.k8s.io, v4 too): the same channels and the
same WebSocket plumbing as exec (exec.py's Session), relayed to the container's attach socket
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
    proto = execmod.protocol(req, "attach")
    tty = bool(c.get("tty"))
    try:  # before the upgrade, so that a refusal is an HTTP answer kubectl prints
        client = ap.Client(ap.socket_path(rec.plan["run_dir"], c["name"]), stdin=stdin,
                           stdout=stdout, stderr=stderr and not tty)
    except (OSError, EOFError, ap.Refused):
        raise ApiError(400, not_running) from None
    AttachSession(api, req, name, c["name"], proto, client, stdout, stderr and not tty).run()
    return None


class AttachSession(execmod.Session):
    def __init__(self, api, req, pod: str, container: str, proto: str, client: ap.Client,
                 stdout: bool, stderr: bool):
        super().__init__(api, req, pod, container, [], proto)
        self.client = client
        self.tty = client.tty
        self.want = {ap.STDOUT: stdout, ap.STDERR: stderr}

    def run(self) -> None:
        try:
            self._accept()
            self.api.sessions.add(self)
            try:
                self._relay()
            finally:
                self.api.sessions.discard(self)
        finally:
            self.client.close()

    def _relay(self) -> None:
        threading.Thread(target=self._read_client, daemon=True).start()
        while (msg := self.client.recv()) is not None:
            kind, payload = msg
            if self.want.get(kind):
                self.send(kind, payload)
        if not self.closed.is_set():
            self.send(execmod.ERROR, json.dumps({"metadata": {}, "status": "Success"}).encode())
            self._close_ws()

    def _message(self, msg: bytes) -> None:
        if not msg:
            return
        ch, data = msg[0], msg[1:]
        if ch == execmod.STDIN:
            self.client.send_stdin(data)
        elif ch == execmod.RESIZE:
            try:
                size = json.loads(data)
                self.client.resize(int(size["Width"]), int(size["Height"]))
            except (ValueError, KeyError, TypeError):
                pass
        elif ch == execmod.CLOSE and data[:1] == bytes([execmod.STDIN]):
            self.client.close_stdin()

    def _client_gone(self) -> None:
        """kubectl went away (or closed the WebSocket): a detach. The shutdown wakes the
        relay's recv() in the other thread."""
        self.closed.set()
        self.client.detach()
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
