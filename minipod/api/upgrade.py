"""Connection upgrades for the streaming subresources (exec, attach, portforward), and the
upgraded connection itself.

After a 101 the connection is a byte pipe used by several threads at once: one reads, the
relays write. An ssl.SSLSocket must not be used that way -- a read and a write from two
threads at once on the same SSL object corrupt its state, seen as spurious EOFs and "bad
record mac" -- so TlsPipe puts one lock around every call into the SSL object, with the
socket non-blocking so that nobody holds the lock while waiting: a thread waits in select()
outside it, then retries.

Three upgrades:
- spdy(): `Upgrade: SPDY/3.1`, with the sub-protocol chosen from the client's
  X-Stream-Protocol-Version headers in the client's order (apimachinery's
  httpstream.Handshake); kubectl before 1.30 (exec, attach) or 1.31 (portforward).
- websocket(): RFC 6455 with a Sec-WebSocket-Protocol of ours; wsproto frames it.
- a WebSocket whose binary messages carry SPDY bytes (the sub-protocol
  `SPDY/3.1+portforward.k8s.io`, kubectl >= 1.31's port-forward): WebSocketBytes.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading

from minipod.api.status import ApiError
from minipod.errors import MinipodError

SPDY = "SPDY/3.1"
TUNNEL_PREFIX = "SPDY/3.1+"  # a WebSocket sub-protocol that tunnels SPDY
WRITE_TIMEOUT = 60.0  # seconds a peer may not read before it counts as gone


class Abandoned(MinipodError, ConnectionError):
    """An upgraded connection given up before it served anything (its client never opened
    the streams it must): there is no HTTP answer left to give."""


class TlsPipe:
    """An upgraded connection's socket (TLS, or plain in unit tests), safe to read from one
    thread while others write. recv() -> b"" and sendall() -> OSError once closed."""

    def __init__(self, sock: socket.socket, pending: bytes = b""):
        self.sock = sock
        self._lock = threading.Lock()
        # One sendall at a time, whole: after SSL_ERROR_WANT_WRITE, OpenSSL needs the same
        # bytes again on the retry -- another thread's bytes there would be sent as ours.
        self._send_lock = threading.Lock()
        self._pending = pending  # read past the request by the HTTP parser
        self.closed = False
        sock.setblocking(False)

    def recv(self, n: int = 65536) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        while True:
            with self._lock:
                if self.closed:
                    return b""
                try:
                    return self.sock.recv(n)
                except ssl.SSLWantReadError:
                    want = "r"
                except ssl.SSLWantWriteError:
                    want = "w"
                except BlockingIOError:
                    want = "r"
                except (ssl.SSLError, OSError):
                    return b""  # reset, or a TLS alert: the peer is gone either way
            try:
                select.select([self.sock] if want == "r" else [],
                              [self.sock] if want == "w" else [], [], 1.0)
            except (OSError, ValueError):
                return b""

    def sendall(self, data: bytes) -> None:
        with self._send_lock:
            self._sendall(data)

    def _sendall(self, data: bytes) -> None:
        view = memoryview(data)
        waited = 0.0
        while view:
            with self._lock:
                if self.closed:
                    raise BrokenPipeError("the connection is closed")
                try:
                    n = self.sock.send(view[:16384])
                    want = ""
                except ssl.SSLWantWriteError:
                    n, want = 0, "w"
                except ssl.SSLWantReadError:
                    n, want = 0, "r"
                except BlockingIOError:
                    n, want = 0, "w"
            if n:
                view, waited = view[n:], 0.0
                continue
            try:
                r, w, _ = select.select([self.sock] if want == "r" else [],
                                        [self.sock] if want == "w" else [], [], 1.0)
            except (OSError, ValueError):  # closed under us
                raise BrokenPipeError("the connection is closed") from None
            if not r and not w:
                waited += 1.0
                if waited >= WRITE_TIMEOUT:
                    self.close()
                    raise TimeoutError(f"the peer read nothing for {WRITE_TIMEOUT:.0f}s")

    def close(self) -> None:
        """End both directions; a recv() waiting in another thread returns b"". The socket
        itself is closed by the HTTP server when the request's handler returns."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # not SSLSocket's: no unwrap
            except OSError:
                pass


def _pending(h) -> bytes:
    """Bytes the request's buffered reader already holds beyond the headers (a client may
    send its first frames without waiting for the 101)."""
    h.connection.setblocking(False)
    try:
        return h.rfile.read1(65536) or b""
    except (ssl.SSLWantReadError, BlockingIOError, OSError):
        return b""


def offered(req, header: str) -> list[str]:
    """Every value of a header that may repeat or be comma-separated, in order."""
    out = []
    for v in req.headers.get_all(header) or []:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return out


def is_spdy(req) -> bool:
    return (req.headers.get("Upgrade") or "").strip().lower() == SPDY.lower()


def is_websocket(req) -> bool:
    return (req.headers.get("Upgrade") or "").strip().lower() == "websocket"


def spdy(req, protocols: tuple[str, ...]) -> tuple[TlsPipe, str]:
    """Negotiate and send the 101 for a SPDY/3.1 upgrade; the connection is then a TlsPipe."""
    client = offered(req, "X-Stream-Protocol-Version")
    if not client:
        raise ApiError(400, "unable to upgrade: X-Stream-Protocol-Version is required")
    proto = next((p for p in client if p in protocols), None)
    if proto is None:
        raise ApiError(403, f"unable to upgrade: unable to negotiate protocol: client supports "
                            f"{client}, server accepts {list(protocols)}", reason="Forbidden")
    h = req.h
    h.send_response(101)
    h.send_header("Connection", "Upgrade")
    h.send_header("Upgrade", SPDY)
    h.send_header("X-Stream-Protocol-Version", proto)
    h.end_headers()
    h.wfile.flush()
    h.close_connection = True
    return TlsPipe(h.connection, _pending(h)), proto


def websocket(req, protocols: tuple[str, ...]) -> tuple["WebSocket", str]:
    from wsproto.utilities import generate_accept_token

    client = offered(req, "Sec-WebSocket-Protocol")
    proto = next((p for p in client if p in protocols), None)
    key = req.headers.get("Sec-WebSocket-Key")
    if proto is None or not key:
        raise ApiError(400, f"unable to upgrade: none of the WebSocket sub-protocols {client} "
                            f"is one of {list(protocols)}")
    h = req.h
    h.send_response(101)
    h.send_header("Upgrade", "websocket")
    h.send_header("Connection", "Upgrade")
    h.send_header("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode())
    h.send_header("Sec-WebSocket-Protocol", proto)
    h.end_headers()
    h.wfile.flush()
    h.close_connection = True
    return WebSocket(TlsPipe(h.connection, _pending(h))), proto


class WebSocket:
    """The server side of an accepted WebSocket: whole messages in, binary messages out."""

    def __init__(self, pipe: TlsPipe):
        from wsproto.connection import Connection, ConnectionType

        self.pipe = pipe
        self.ws = Connection(ConnectionType.SERVER)
        self._wlock = threading.Lock()  # wsproto's state: one sender at a time
        self._buf = b""

    def _write(self, event) -> None:
        with self._wlock:
            data = self.ws.send(event)
            self.pipe.sendall(data)

    def send(self, data: bytes) -> None:
        from wsproto.events import BytesMessage

        self._write(BytesMessage(data=data))

    def recv(self) -> bytes | None:
        """The next message (text ones as UTF-8 bytes); None once the peer closed or left."""
        from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

        while True:
            for ev in self.ws.events():
                if isinstance(ev, Ping):
                    try:
                        self._write(ev.response())
                    except OSError:
                        return None
                elif isinstance(ev, CloseConnection):
                    try:
                        self._write(ev.response())
                    except Exception:
                        pass
                    return None
                elif isinstance(ev, (BytesMessage, TextMessage)):
                    self._buf += ev.data if isinstance(ev, BytesMessage) else ev.data.encode()
                    if ev.message_finished:
                        msg, self._buf = self._buf, b""
                        return msg
            data = self.pipe.recv()
            if not data:
                return None
            try:
                self.ws.receive_data(data)
            except Exception:  # a protocol error: the peer is not worth more
                return None

    def close(self, code: int = 1000) -> None:
        from wsproto.events import CloseConnection

        try:
            self._write(CloseConnection(code=code))
        except Exception:
            pass
        self.pipe.close()


class WebSocketBytes:
    """A WebSocket as a byte transport (session.Transport): each binary message is the next
    slice of the stream, as client-go's tunneling connection writes and reads it."""

    def __init__(self, ws: WebSocket):
        self.ws = ws

    def recv(self) -> bytes:
        while True:
            msg = self.ws.recv()
            if msg is None:
                return b""
            if msg:
                return msg

    def sendall(self, data: bytes) -> None:
        self.ws.send(data)

    def close(self) -> None:
        self.ws.close()
