"""The attach protocol: how a client reaches a running container's stdio through the pod's
supervisor, which holds it (the pty's master, the stdin pipe, the output pipes). One module
says all of it, so that another holder (a C shim) can speak it too.

The socket: `<run_dir>/attach/<container>`, AF_UNIX, SOCK_SEQPACKET (one packet = one message,
in order, reliable: no length prefix), mode 0600 in a 0700 directory: root's alone. It exists
from the container's first start until the pod ends; the instance behind it changes with each
restart. A path longer than sun_path's 108 bytes is reached through /proc/self/fd/<dir fd>/
(conmon does the same).

Every packet is a kind byte, then a payload. The data kinds are the channels of Kubernetes'
remotecommand protocol (0 stdin, 1 stdout, 2 stderr, 4 resize, 255 close), so that a relay to
kubectl only re-frames them:

    client -> supervisor
      HELLO   0x10  version (1 byte, VERSION), flags (1 byte): WANT_STDIN | WANT_STDOUT |
                    WANT_STDERR. First, once.
      STDIN   0     bytes for the container's stdin (ignored unless WANT_STDIN and it has one)
      RESIZE  4     width, height: two big-endian u16 (the terminal's columns and rows)
      CLOSE   255   one byte, the channel: 0 = the client's stdin has ended
      DETACH  0x12  the session ends (as does closing the socket)
    supervisor -> client
      HELLO   0x10  version, flags: TTY | STDIN_OPEN (the container has stdin, not closed yet)
      ERROR   0x11  one line, why there is no session (the container is not running); EOF follows
      STDOUT  1     output; with a tty all of it (a terminal has one stream)
      STDERR  2     output (without a tty)
      EXIT    3     the container's exit code, in decimal ASCII: its instance ended; EOF follows

What a session sees is what containerd's attach gives (internal/cri/io/container_io.go): the
output from the moment it attached (the log file has the rest), the same bytes for every
session, each session's stdin data written to the container's stdin in the order it arrives.
When a session's stdin ends (CLOSE 0, DETACH or EOF of a session with WANT_STDIN): if the
container is `stdinOnce` and has no tty, its stdin is closed -- the container reads EOF -- and
the session (if still there) goes on receiving output until the container exits; otherwise the
session ends. A tty's stdin is never closed (a hung-up terminal would end the shell), as in
containerd and Docker.
"""

from __future__ import annotations

import os
import socket
import struct

from minipod.errors import MinipodError

VERSION = 1
STDIN, STDOUT, STDERR, EXIT, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
HELLO, ERROR, DETACH = 0x10, 0x11, 0x12
WANT_STDIN, WANT_STDOUT, WANT_STDERR = 1, 2, 4
TTY, STDIN_OPEN = 1, 2
CHUNK = 32 * 1024  # the largest payload a sender puts in one packet
MAX_PACKET = CHUNK + 1
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes, NUL included


def socket_path(run_dir: str, container: str) -> str:
    return os.path.join(run_dir, "attach", container)


def pack(kind: int, payload: bytes = b"") -> bytes:
    return bytes([kind]) + payload


def unpack(packet: bytes) -> tuple[int, bytes]:
    """(kind, payload); ValueError for an empty packet."""
    if not packet:
        raise ValueError("an empty attach packet")
    return packet[0], packet[1:]


def chunks(kind: int, data: bytes) -> list[bytes]:
    """`data` as packets of at most CHUNK bytes of payload."""
    return [pack(kind, data[i:i + CHUNK]) for i in range(0, len(data), CHUNK)]


def hello(flags: int) -> bytes:
    return pack(HELLO, bytes([VERSION, flags]))


def parse_hello(payload: bytes) -> int:
    """The flags of a HELLO; ValueError if it is not one of our version."""
    if len(payload) != 2 or payload[0] != VERSION:
        raise ValueError(f"attach: unsupported HELLO {payload!r} (version {VERSION} expected)")
    return payload[1]


def resize(width: int, height: int) -> bytes:
    return pack(RESIZE, struct.pack("!HH", _u16(width), _u16(height)))


def parse_resize(payload: bytes) -> tuple[int, int]:
    """(width, height); ValueError if malformed."""
    if len(payload) != 4:
        raise ValueError(f"attach: a RESIZE of {len(payload)} bytes, not 4")
    w, h = struct.unpack("!HH", payload)
    return w, h


def exit_packet(code: int) -> bytes:
    return pack(EXIT, str(code).encode())


def parse_exit(payload: bytes) -> int:
    return int(payload.decode("ascii"))


def _u16(v: int) -> int:
    return max(0, min(int(v), 0xFFFF))


def _address(path: str) -> tuple[str, int]:
    """An address for `path` that fits sun_path: itself, or /proc/self/fd/<fd of its
    directory>/<name> (the fd is the caller's to close; -1 when none was opened)."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        return path, -1
    d = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{d}/{os.path.basename(path)}", d


def listen(path: str) -> socket.socket:
    """The supervisor's listening socket at `path` (non-blocking), root's alone: the
    directory is made 0700 first, so the socket is never reachable with a wider mode."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.chmod(os.path.dirname(path), 0o700)
    try:
        os.unlink(path)  # a previous supervisor's (the pod's sandbox was re-created)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
    addr, d = _address(path)
    try:
        sock.bind(addr)
        os.chmod(path, 0o600)
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    finally:
        if d >= 0:
            os.close(d)
    return sock


def connect(path: str) -> socket.socket:
    """A blocking client socket connected to `path` (FileNotFoundError, ConnectionRefusedError
    when nothing listens there)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    addr, d = _address(path)
    try:
        sock.connect(addr)
    except BaseException:
        sock.close()
        raise
    finally:
        if d >= 0:
            os.close(d)
    return sock


class Refused(MinipodError):
    """The supervisor answered ERROR (the container is not running)."""


class Client:
    """A client's end of one session (blocking): `minipod attach` and the API's relay."""

    def __init__(self, path: str, stdin: bool, stdout: bool = True, stderr: bool = True):
        self.sock = connect(path)
        try:
            flags = (WANT_STDIN if stdin else 0) | (WANT_STDOUT if stdout else 0) | \
                (WANT_STDERR if stderr else 0)
            self.sock.sendall(hello(flags))
            kind, payload = self._recv_one()
            if kind == ERROR:
                raise Refused(payload.decode(errors="replace"))
            if kind != HELLO:
                raise ValueError(f"attach: the supervisor answered kind {kind}, not HELLO")
            got = parse_hello(payload)
        except BaseException:
            self.sock.close()
            raise
        self.tty = bool(got & TTY)
        self.stdin_open = bool(got & STDIN_OPEN)

    def _recv_one(self) -> tuple[int, bytes]:
        data = self.sock.recv(MAX_PACKET)
        if not data:
            raise EOFError("attach: the supervisor closed the session")
        return unpack(data)

    def recv(self) -> tuple[int, bytes] | None:
        """The next (kind, payload) from the supervisor, None at the session's end."""
        try:
            data = self.sock.recv(MAX_PACKET)
        except (ConnectionResetError, OSError):
            return None
        return unpack(data) if data else None

    def fileno(self) -> int:
        return self.sock.fileno()

    def _send(self, packet: bytes) -> None:
        try:
            self.sock.sendall(packet)
        except OSError:
            pass  # the session has ended: recv() says so

    def send_stdin(self, data: bytes) -> None:
        for p in chunks(STDIN, data):
            self._send(p)

    def close_stdin(self) -> None:
        self._send(pack(CLOSE, bytes([STDIN])))

    def resize(self, width: int, height: int) -> None:
        self._send(resize(width, height))

    def detach(self) -> None:
        self._send(pack(DETACH))

    def close(self) -> None:
        self.sock.close()
