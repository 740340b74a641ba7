"""TlsPipe: one TLS connection read by one thread while others write, as an upgraded
exec/port-forward connection is used. What this checks is that every byte arrives intact and
that concurrent sendall()s do not interleave (without the send lock they did: a retry after
SSL_ERROR_WANT_WRITE sent another thread's bytes). The race of unlocked SSL calls themselves
(spurious EOFs) is too rare here to be provoked on purpose; the kubectl tests load it."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading

from minipod.api import certs
from minipod.api.upgrade import TlsPipe

SIZE = 4 << 20


def _tls_pair(root: str) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    certs.ensure(root)
    a, b = socket.socketpair()
    server = certs.server_context(root).wrap_socket(a, server_side=True,
                                                    do_handshake_on_connect=False)
    cctx = ssl.create_default_context(cafile=os.path.join(certs.api_dir(root), "ca.crt"))
    cctx.check_hostname = False
    client = cctx.wrap_socket(b, do_handshake_on_connect=False)
    t = threading.Thread(target=server.do_handshake)
    t.start()
    client.do_handshake()
    t.join(10)
    return server, client


def test_reads_and_writes_from_several_threads_at_once(tmp_path):
    server, client = _tls_pair(str(tmp_path))
    pipe = TlsPipe(server)
    up = os.urandom(SIZE)
    down = [os.urandom(SIZE // 4) for _ in range(4)]
    got_up, got_down = bytearray(), bytearray()

    def client_send():
        client.sendall(up)

    def client_recv():
        while len(got_down) < SIZE:
            data = client.recv(65536)
            if not data:
                break
            got_down.extend(data)

    def server_recv():
        while len(got_up) < SIZE:
            data = pipe.recv()
            if not data:
                break
            got_up.extend(data)

    # The client takes turns (all its writes, then all its reads: a plain SSLSocket has the
    # hazard TlsPipe removes), while the server side reads and writes at once.
    writers = [threading.Thread(target=pipe.sendall, args=(d,)) for d in down]
    reader = threading.Thread(target=server_recv)
    reader.start()
    for w in writers:
        w.start()
    client_send()
    reader.join(60)
    client_recv()
    for w in writers:
        w.join(60)
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
    # Each sendall arrives whole, in one piece: in some order, never interleaved.
    n = SIZE // 4
    assert sorted(bytes(got_down[i:i + n]) for i in range(0, SIZE, n)) == sorted(down)
    pipe.close()
    assert pipe.recv() == b""
    server.close()
    client.close()
