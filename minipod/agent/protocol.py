"""The node agent's wire format: length-prefixed frames over a unix stream socket.

    frame = 4-byte big-endian length, then that many bytes of marshal data (one dict of
            str, int, list and dict values)

A frame may carry file descriptors (SCM_RIGHTS): the client's request carries its stdin,
stdout and stderr, so the agent's worker writes to the client's own terminal or pipes and a
command's output, its interleaving and `isatty()` are what they are in-process.

Client -> agent: {"argv": [...], "env": {...}, "cwd": "...", "umask": 18, "code": "..."}
                 + fds 0, 1, 2; or {"op": "status"} / {"op": "stop"}
Agent -> client: {"pid": N} (the worker took it: Ctrl-C is forwarded there), then
                 {"exit": N}; or {"status": {...}}, {"stopped": PID}; or {"refused": "why"}.

Every `minipod` command imports this module (client.py), so it uses only what the interpreter
has built in: marshal, not json, and _socket, not socket. `import json` pulls in re, enum,
functools and collections, and `socket` and `signal` build their enums: ~14 ms of a ~30 ms
`minipod ps` through the agent, spent before the request was sent. marshal is not meant for
data from strangers; here both ends are root: the socket is 0600 in a root-only directory,
the agent checks the peer's SO_PEERCRED before its worker reads a byte, and the client only
connects to that socket. Both ends are the same minipod (the request names its code) and
Python (marshal's format 4 has not changed since 3.4). A frame that does not load, or is not
a dict, is a ProtocolError.
"""

from __future__ import annotations

import _socket
import marshal
import struct

from minipod.errors import MinipodError

MAX_FRAME = 1 << 20  # an environment and an argv: far below this
MAX_FDS = 3
_HEADER = struct.Struct(">I")
_FD = struct.Struct("i")


class ProtocolError(MinipodError):
    """The peer closed early or sent something that is not a frame."""


def send(sock: _socket.socket, msg: dict, fds: list[int] | tuple = ()) -> None:
    data = marshal.dumps(msg)
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} bytes is over the limit of {MAX_FRAME}")
    frame = _HEADER.pack(len(data)) + data
    if fds:
        # The descriptors ride on the first byte; the rest is plain data.
        rights = b"".join(_FD.pack(fd) for fd in fds)
        sent = sock.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        frame = frame[sent:]
    if frame:
        sock.sendall(frame)


def recv(sock: _socket.socket) -> tuple[dict, list[int]]:
    """One frame and the descriptors that came with it (the caller owns and closes them)."""
    head, fds = _recv_exact(sock, _HEADER.size, want_fds=True)
    try:
        (size,) = _HEADER.unpack(head)
        if size > MAX_FRAME:
            raise ProtocolError(f"frame of {size} bytes is over the limit of {MAX_FRAME}")
        body, _ = _recv_exact(sock, size)
        try:
            msg = marshal.loads(body)
        except (ValueError, EOFError, TypeError) as e:
            raise ProtocolError(f"not a frame of the agent's protocol: {e}") from None
        if not isinstance(msg, dict):
            raise ProtocolError(f"expected a dict, got {type(msg).__name__}")
        return msg, fds
    except BaseException:
        for fd in fds:
            _close(fd)
        raise


def _recv_exact(sock: _socket.socket, n: int, want_fds: bool = False) -> tuple[bytes, list[int]]:
    buf, fds = b"", []
    while len(buf) < n:
        if want_fds and not buf:
            chunk, anc, _, _ = sock.recvmsg(n, _socket.CMSG_SPACE(MAX_FDS * _FD.size),
                                            _socket.MSG_CMSG_CLOEXEC)
            for level, kind, data in anc:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    fds += [_FD.unpack_from(data, i)[0]
                            for i in range(0, len(data) - len(data) % _FD.size, _FD.size)]
        else:
            chunk = sock.recv(n - len(buf))
        if not chunk:
            for fd in fds:
                _close(fd)
            raise ProtocolError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf, fds


def _close(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass
