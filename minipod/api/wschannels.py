"""exec/attach channels over WebSocket: v5.channel.k8s.io (kubectl >= 1.30), v4 too.

Every binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 error (the
final Status), 4 resize ({"Width", "Height"}); in v5, [255, ch] closes a channel ([255, 0]:
stdin is at its end). v4 has no close: stdin just stops.
"""

from __future__ import annotations

import json
import threading

from minipod.api import exec as execmod
from minipod.api import upgrade

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


def accept(req) -> "WsChannels":
    ws, proto = upgrade.websocket(req, PROTOCOLS)
    return WsChannels(ws, proto)


class WsChannels:
    def __init__(self, ws: upgrade.WebSocket, proto: str):
        self.ws, self.proto = ws, proto
        self.closed = False
        self._lock = threading.Lock()

    def send(self, channel: int, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.ws.send(bytes([channel]) + data)
        except OSError:
            self.closed = True

    def end(self, channel: int) -> None:
        pass  # the close of the WebSocket ends them all

    def finish(self, status: dict) -> None:
        self.send(execmod.ERROR, json.dumps(status).encode())
        with self._lock:
            if not self.closed:
                self.closed = True
                self.ws.close(1000)

    def serve(self, session) -> None:
        try:
            while (msg := self.ws.recv()) is not None:
                if not msg:
                    continue
                ch, data = msg[0], msg[1:]
                if ch == execmod.STDIN:
                    session.stdin(data)
                elif ch == execmod.RESIZE:
                    if size := execmod.parse_size(data):
                        session.resize(*size)
                elif ch == execmod.CLOSE and data[:1] == bytes([execmod.STDIN]):
                    session.stdin_end()
        finally:
            self.closed = True
            self.ws.pipe.close()
