"""The grpc probe against a real HTTP/2 gRPC health server on loopback (written with h2 here, so
that the test does not share the client's code paths above the framing)."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import h2.config
import h2.connection
import h2.events
import pytest

from minipod.kubelet import grpcprobe


def _message(status: int | None) -> bytes:
    body = b"" if status is None else b"\x08" + bytes([status])
    return b"\x00" + len(body).to_bytes(4, "big") + body


class HealthServer:
    """Answers grpc.health.v1.Health/Check from `statuses` {service: ServingStatus}; an unknown
    service gets NOT_FOUND, another path UNIMPLEMENTED; `hang` never answers."""

    def __init__(self, statuses: dict[str, int], hang: bool = False) -> None:
        self.statuses, self.hang = statuses, hang
        self.requests: list[dict] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
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
        if path != grpcprobe.PATH:
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


@pytest.fixture
def server():
    made = []

    def make(statuses, hang=False):
        made.append(HealthServer(statuses, hang))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _probe(port: int, service: str = "", timeout: float = 2):
    action = SimpleNamespace(host="127.0.0.1", port=port, service=service, scheme="http",
                             netloc=f"127.0.0.1:{port}")
    return grpcprobe.run_grpc(action, time.monotonic() + timeout, timeout)


def test_serving_is_success_and_the_request_is_grpc(server):
    s = server({"": 1, "db": 2})
    assert _probe(s.port) == (True, "")
    [req] = s.requests
    h = req["headers"]
    assert (h[":method"], h[":path"], h["content-type"], h["te"]) == (
        "POST", "/grpc.health.v1.Health/Check", "application/grpc", "trailers")
    assert req["body"] == b"\x00\x00\x00\x00\x00"  # an empty HealthCheckRequest


def test_not_serving_is_the_kubelets_failure(server):
    s = server({"db": 2, "x": 3})
    assert _probe(s.port, "db") == (False, 'service unhealthy (responded with "NOT_SERVING")')
    assert _probe(s.port, "x") == (False, 'service unhealthy (responded with "SERVICE_UNKNOWN")')
    assert s.requests[0]["body"] == b"\x00\x00\x00\x00\x04\x0a\x02db"


def test_an_empty_response_is_unknown(server):
    s = server({"": None})
    assert _probe(s.port) == (False, 'service unhealthy (responded with "UNKNOWN")')


def test_an_rpc_error_is_reported_with_its_code(server):
    s = server({})
    ok, msg = _probe(s.port, "nope")
    assert not ok
    assert msg == ("error: health rpc probe failed: rpc error: code = NotFound desc = unknown"
                   " service")


def test_no_listener_is_a_connect_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        ok, msg = _probe(port)
    assert not ok
    assert msg == (f'error: failed to connect service at "127.0.0.1:{port}": dial tcp'
                   f" 127.0.0.1:{port}: connect: connection refused")


def test_a_silent_server_times_out(server):
    s = server({"": 1}, hang=True)
    t = time.monotonic()
    assert _probe(s.port, timeout=0.5) == (False,
                                           "timeout: health rpc did not complete within 500ms")
    assert time.monotonic() - t < 2


def test_the_message_codec():
    assert grpcprobe.request_message("a" * 200)[:7] == b"\x00\x00\x00\x00\xcb\x0a\xc8"
    # unknown fields (a string 2, a fixed32 3) are skipped
    body = b"\x12\x01z\x1d\x00\x00\x00\x00\x08\x01"
    assert grpcprobe.response_status(b"\x00" + len(body).to_bytes(4, "big") + body) == 1
