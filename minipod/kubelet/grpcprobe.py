"""The grpc probe handler: one grpc.health.v1.Health/Check call, as the kubelet makes it
(pkg/probe/grpc/grpc.go), from the host's network namespace to the pod IP, with its words.

gRPC is a POST over HTTP/2 with a 5-byte length prefix before each protobuf message and the
outcome in the `grpc-status` trailer. The HTTP/2 framing and HPACK come from the `h2` library
(python-hyper: pure Python, small, well kept; grpcio would be tens of MB of C++ for one call);
the two protobuf messages are one field each, encoded here:
    HealthCheckRequest  { string service = 1; }
    HealthCheckResponse { ServingStatus status = 1; }  UNKNOWN 0, SERVING 1, NOT_SERVING 2,
                                                       SERVICE_UNKNOWN 3
Imported only in the forked child that runs the probe.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import unquote

from minipod.errors import MinipodError
from minipod.kubelet.netprobe import _dial, _Failed, _Timeout, gostr, hostport

PATH = "/grpc.health.v1.Health/Check"
STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
# google.golang.org/grpc/codes, as String() names them.
CODES = ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
         "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
         "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
         "Unauthenticated"]
UNIMPLEMENTED, DEADLINE_EXCEEDED = 12, 4


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def request_message(service: str) -> bytes:
    """A length-prefixed HealthCheckRequest (an empty service is the server's overall health)."""
    body = b"" if not service else b"\x0a" + _varint(len(service.encode())) + service.encode()
    return b"\x00" + len(body).to_bytes(4, "big") + body


def response_status(data: bytes) -> int:
    """The status field of a length-prefixed HealthCheckResponse (unknown fields skipped)."""
    if len(data) < 5:
        raise ValueError("response message: shorter than its 5-byte prefix")
    if data[0] != 0:
        raise ValueError("response message: compressed, and no compression was offered")
    body = data[5:5 + int.from_bytes(data[1:5], "big")]
    status, i = 0, 0
    while i < len(body):
        key, i = _read_varint(body, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(body, i)
            if field == 1:
                status = value
        elif wire == 2:
            n, i = _read_varint(body, i)
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"response message: wire type {wire}")
    return status


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(b):
            raise ValueError("response message: truncated")
        n |= (b[i] & 0x7F) << shift
        i += 1
        if not b[i - 1] & 0x80:
            return n, i
        shift += 7


def seconds(timeout: float) -> str:
    """Go's time.Duration %v for whole or fractional seconds."""
    return f"{timeout:g}s" if timeout >= 1 else f"{timeout * 1000:g}ms"


class RPCError(MinipodError):
    """A gRPC status other than OK (internal to the probe child: it becomes a message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"rpc error: code = {CODES[code] if code < len(CODES) else code}"
                         f" desc = {message}")
        self.code, self.message = code, message


def check(host: str, port: int, service: str, deadline: float, tls: bool = False) -> int:
    """One Health/Check call: the ServingStatus, or RPCError / _Failed / _Timeout."""
    import h2.config
    import h2.connection
    import h2.events

    sock = _dial(host, port, deadline)
    try:
        if tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock = ctx.wrap_socket(sock)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        left_ms = max(int((deadline - time.monotonic()) * 1000), 1)
        conn.send_headers(sid, [
            (":method", "POST"), (":scheme", "https" if tls else "http"), (":path", PATH),
            (":authority", hostport(host, port)), ("content-type", "application/grpc"),
            ("te", "trailers"), ("user-agent", "kube-probe/minipod"),
            ("grpc-timeout", f"{left_ms}m")])
        conn.send_data(sid, request_message(service), end_stream=True)
        headers: dict[str, str] = {}
        body = b""
        ended = False
        while not ended:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            if out := conn.data_to_send():
                sock.sendall(out)
            try:
                data = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                raise _Timeout() from None
            if not data:
                raise RPCError(14, "connection closed before the server answered")
            for ev in conn.receive_data(data):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    headers.update(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    raise RPCError(13, f"stream terminated by RST_STREAM with error code:"
                                       f" {ev.error_code}")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise RPCError(14, "the server closed the connection (GOAWAY)")
        if headers.get(":status") != "200":
            raise RPCError(2, f"unexpected HTTP status code received from server:"
                              f" {headers.get(':status')}")
        code = int(headers.get("grpc-status", "2") or 2)
        if code != 0:
            raise RPCError(code, unquote(headers.get("grpc-message", "")))
        try:
            return response_status(body)
        except ValueError as e:
            raise RPCError(13, str(e)) from None
    except OSError as e:
        raise _Failed(f"read tcp {hostport(host, port)}: {e.strerror or e}") from None
    finally:
        sock.close()


def run_grpc(action, deadline: float | None, timeout: float | None) -> tuple[bool, str]:
    """(ok, message) of a grpc probe, with the kubelet's messages."""
    try:
        import h2  # noqa: F401
    except ImportError:
        return False, "grpc probe: the h2 library is not installed (scripts/setup.sh install)"
    timeout = timeout or 1
    deadline = deadline if deadline is not None else time.monotonic() + timeout
    addr = action.netloc
    try:
        status = check(action.host, action.port, action.service, deadline,
                       tls=action.scheme == "https")
    except _Timeout:
        return False, f"timeout: health rpc did not complete within {seconds(timeout)}"
    except _Failed as e:
        if str(e).startswith("dial"):
            return False, f"error: failed to connect service at {gostr(addr)}: {e}"
        return False, f"error: health rpc probe failed: {e}"
    except RPCError as e:
        if e.code == UNIMPLEMENTED:
            return False, ("error: this server does not implement the grpc health protocol"
                           f" (grpc.health.v1.Health): {e.message}")
        if e.code == DEADLINE_EXCEEDED:
            return False, f"timeout: health rpc did not complete within {seconds(timeout)}"
        return False, f"error: health rpc probe failed: {e}"
    if status != 1:
        name = STATUSES.get(status, str(status))
        return False, f"service unhealthy (responded with {gostr(name)})"
    return True, ""
