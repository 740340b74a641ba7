"""The node agent's wire format: length-prefixed JSON frames over a unix stream socket.

    frame = 4-byte big-endian length, then that many bytes of UTF-8 JSON (one object)

A frame may carry file descriptors (SCM_RIGHTS): the client's request carries its stdin,
stdout and stderr, so the agent's worker writes to the client's own terminal or pipes and a
command's output, its interleaving and `isatty()` are what they are in-process.

Client -> agent: {"argv": [...], "env": {...}, "cwd": "...", "umask": 18, "code": "..."}
                 + fds 0, 1, 2; or {"op": "status"} / {"op": "stop"}
Agent -> client: {"pid": N} (the worker took it: Ctrl-C is forwarded there), then
                 {"exit": N}; or {"status": {...}}, {"stopped": PID}; or {"refused": "why"}.
"""

from __future__ import annotations

import json
import socket
import struct

from minipod.errors import MinipodError

MAX_FRAME = 1 << 20  # an environment and an argv: far below this
MAX_FDS = 3
_HEADER = struct.Struct(">I")


class ProtocolError(MinipodError):
    """The peer closed early or sent something that is not a frame."""


def send(sock: socket.socket, msg: dict, fds: list[int] | tuple = ()) -> None:
    data = json.dumps(msg).encode()
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} bytes is over the limit of {MAX_FRAME}")
    frame = _HEADER.pack(len(data)) + data
    if fds:
        # The descriptors ride on the first byte; the rest is plain data.
        sent = socket.send_fds(sock, [frame], list(fds))
        frame = frame[sent:]
    if frame:
        sock.sendall(frame)


def recv(sock: socket.socket) -> tuple[dict, list[int]]:
    """One frame and the descriptors that came with it (the caller owns and closes them)."""
    head, fds = _recv_exact(sock, _HEADER.size, want_fds=True)
    try:
        (size,) = _HEADER.unpack(head)
        if size > MAX_FRAME:
            raise ProtocolError(f"frame of {size} bytes is over the limit of {MAX_FRAME}")
        body, _ = _recv_exact(sock, size)
        try:
            msg = json.loads(body)
        except ValueError as e:
            raise ProtocolError(f"not JSON: {e}") from None
        if not isinstance(msg, dict):
            raise ProtocolError(f"expected a JSON object, got {type(msg).__name__}")
        return msg, fds
    except BaseException:
        for fd in fds:
            _close(fd)
        raise


def _recv_exact(sock: socket.socket, n: int, want_fds: bool = False) -> tuple[bytes, list[int]]:
    buf, fds = b"", []
    while len(buf) < n:
        if want_fds and not buf:
            chunk, got, _, _ = socket.recv_fds(sock, n, MAX_FDS)
            fds += got
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
