"""The grpc probe against a real HTTP/2 gRPC health server on loopback (written with h2 here, so
that the test does not share the client's code paths above the framing)."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest
from grpc_health import HealthServer

from minipod.kubelet import grpcprobe


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
