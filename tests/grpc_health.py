"""A gRPC health server (grpc.health.v1.Health/Check) written with h2, for the probe tests;
`python grpc_health.py HOST PORT` serves SERVING for the empty service until killed."""

from __future__ import annotations

import socket
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events

PATH = "/grpc.health.v1.Health/Check"


def _message(status: int | None) -> bytes:
    body = b"" if status is None else b"\x08" + bytes([status])
    return b"\x00" + len(body).to_bytes(4, "big") + body


class HealthServer:
    """Answers grpc.health.v1.Health/Check from `statuses` {service: ServingStatus}; an unknown
    service gets NOT_FOUND, another path UNIMPLEMENTED; `hang` never answers."""

    def __init__(self, statuses: dict[str, int], hang: bool = False, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.statuses, self.hang = statuses, hang
        self.requests: list[dict] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        h2c.initiate_connection()
        conn.sendall(h2c.data_to_send())
        headers, body = {}, b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for ev in h2c.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    headers = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                elif isinstance(ev, h2.events.StreamEnded):
                    self.requests.append({"headers": headers, "body": body})
                    if self.hang:
                        time.sleep(3)
                        return
                    self._answer(h2c, ev.stream_id, headers[":path"], body)
            conn.sendall(h2c.data_to_send())

    def _answer(self, h2c, sid: int, path: str, body: bytes) -> None:
        service = body[7:].decode() if len(body) > 5 else ""
        if path != PATH:
            h2c.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                   ("grpc-status", "12"),
                                   ("grpc-message", "unknown service")], end_stream=True)
            return
        if service not in self.statuses:
            h2c.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                   ("grpc-status", "5"),
                                   ("grpc-message", "unknown%20service")], end_stream=True)
            return
        h2c.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        h2c.send_data(sid, _message(self.statuses[service]))
        h2c.send_headers(sid, [("grpc-status", "0")], end_stream=True)

    def close(self) -> None:
        self.sock.close()


if __name__ == "__main__":
    server = HealthServer({"": 1}, host=sys.argv[1], port=int(sys.argv[2]))
    print("listening", flush=True)
    server.thread.join()
