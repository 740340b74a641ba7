"""The attach protocol (kubelet/attachproto.py), the supervisor's endpoint (kubelet/attach.py)
driven by a real selector over real sockets, pipes and a pty, and the CLI's detach keys.
(The same with real containers: tests/integration/test_attach.py.)"""

from __future__ import annotations

import fcntl
import os
import selectors
import socket
import struct
import termios

import pytest

from minipod.cli.attach import split_detach
from minipod.kubelet import attach
from minipod.kubelet import attachproto as ap


# --- framing ---------------------------------------------------------------------------------

def test_packets_are_a_kind_byte_and_a_payload():
    assert ap.pack(ap.STDOUT, b"hi") == b"\x01hi"
    assert ap.unpack(b"\x01hi") == (ap.STDOUT, b"hi")
    assert ap.unpack(b"\x12") == (ap.DETACH, b"")
    with pytest.raises(ValueError):
        ap.unpack(b"")


def test_the_channels_are_kubernetes_remotecommand_ones():
    # A relay to kubectl re-frames them as they are (minipod/api/exec.py's channels).
    from minipod.api import exec as api_exec

    assert (ap.STDIN, ap.STDOUT, ap.STDERR, ap.RESIZE, ap.CLOSE) == \
        (api_exec.STDIN, api_exec.STDOUT, api_exec.STDERR, api_exec.RESIZE, api_exec.CLOSE)


def test_large_data_is_cut_into_chunks():
    data = bytes(range(256)) * 300  # 76800 bytes
    packets = ap.chunks(ap.STDIN, data)
    assert [len(p) for p in packets] == [ap.CHUNK + 1, ap.CHUNK + 1, 76800 - 2 * ap.CHUNK + 1]
    assert b"".join(ap.unpack(p)[1] for p in packets) == data
    assert ap.chunks(ap.STDIN, b"") == []


def test_hello_resize_and_exit_round_trip():
    kind, payload = ap.unpack(ap.hello(ap.WANT_STDIN | ap.WANT_STDOUT))
    assert kind == ap.HELLO and ap.parse_hello(payload) == ap.WANT_STDIN | ap.WANT_STDOUT
    with pytest.raises(ValueError, match="version"):
        ap.parse_hello(bytes([ap.VERSION + 1, 0]))
    kind, payload = ap.unpack(ap.resize(132, 50))
    assert kind == ap.RESIZE and payload == b"\x00\x84\x00\x32"
    assert ap.parse_resize(payload) == (132, 50)
    assert ap.parse_resize(ap.unpack(ap.resize(-1, 70000))[1]) == (0, 65535)  # clamped
    with pytest.raises(ValueError):
        ap.parse_resize(b"\x00")
    assert ap.parse_exit(ap.unpack(ap.exit_packet(137))[1]) == 137


@pytest.mark.parametrize("held,data,want", [
    (b"", b"ls\r", (b"ls\r", b"", False)),
    (b"", b"ab\x10\x11cd", (b"ab", b"", True)),
    (b"", b"ab\x10", (b"ab", b"\x10", False)),     # may be the start of the keys: held
    (b"\x10", b"\x11", (b"", b"", True)),            # ... and it was
    (b"\x10", b"x", (b"\x10x", b"", False)),        # ... it was not: sent with what follows
    (b"", b"\x10\x10\x11", (b"\x10", b"", True)),
])
def test_detach_keys(held, data, want):
    assert split_detach(held, data) == want


# --- the endpoint -----------------------------------------------------------------------------

class Loop:
    """The supervisor's loop, one turn at a time."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()

    def turn(self, n: int = 5) -> None:
        for _ in range(n):
            for key, _ in self.sel.select(0):
                key.data(key.fileobj)

    def close(self) -> None:
        self.sel.close()


@pytest.fixture
def loop():
    lp = Loop()
    yield lp
    lp.close()


def endpoint(loop, tmp_path, **kw) -> attach.Endpoint:
    opts = {"tty": False, "stdin": True, "stdin_once": False, **kw}
    return attach.Endpoint(loop.sel, str(tmp_path / "attach" / "c"), "c", **opts)


def client(loop, ep, flags=ap.WANT_STDOUT | ap.WANT_STDERR) -> socket.socket:
    s = ap.connect(ep.path)
    s.sendall(ap.hello(flags))
    s.settimeout(2)
    loop.turn()
    return s


def recv(loop, s) -> tuple[int, bytes] | None:
    loop.turn()
    data = s.recv(ap.MAX_PACKET)
    return ap.unpack(data) if data else None


def test_the_socket_is_roots_alone_and_goes_with_the_pod(loop, tmp_path):
    ep = endpoint(loop, tmp_path)
    assert os.stat(ep.path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(ep.path)).st_mode & 0o777 == 0o700
    ep.close()
    assert not os.path.exists(ep.path)


def test_a_long_path_is_reached_through_its_directory(loop, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    ep = attach.Endpoint(loop.sel, str(deep / "attach" / "ctr"), "ctr", tty=False,
                         stdin=False, stdin_once=False)
    assert len(ep.path) > ap.SUN_PATH_MAX
    s = client(loop, ep)
    assert recv(loop, s) == (ap.ERROR, b"container ctr is not running")
    s.close()
    ep.close()


def test_no_session_while_the_container_is_not_running(loop, tmp_path):
    ep = endpoint(loop, tmp_path)
    s = client(loop, ep)
    assert recv(loop, s) == (ap.ERROR, b"container c is not running")
    assert recv(loop, s) is None
    s.close()
    ep.close()


def test_sessions_share_output_and_write_stdin(loop, tmp_path):
    ep = endpoint(loop, tmp_path)
    r, w = os.pipe()
    ep.started(w)
    a = client(loop, ep, ap.WANT_STDIN | ap.WANT_STDOUT | ap.WANT_STDERR)
    b = client(loop, ep, ap.WANT_STDOUT)
    assert recv(loop, a) == (ap.HELLO, bytes([ap.VERSION, ap.STDIN_OPEN]))
    assert recv(loop, b) == (ap.HELLO, bytes([ap.VERSION, ap.STDIN_OPEN]))
    ep.output("stdout", b"out")
    ep.output("stderr", b"err")
    assert recv(loop, a) == (ap.STDOUT, b"out")
    assert recv(loop, a) == (ap.STDERR, b"err")
    assert recv(loop, b) == (ap.STDOUT, b"out")  # and no stderr: it did not ask
    a.sendall(ap.pack(ap.STDIN, b"typed\n"))
    b.sendall(ap.pack(ap.STDIN, b"ignored\n"))  # b did not ask for stdin
    loop.turn()
    assert os.read(r, 100) == b"typed\n"
    # The instance exits and its output ends: EXIT, then the end of the session.
    ep.exited(2)
    ep.output_done()
    for s in (a, b):
        assert recv(loop, s) == (ap.EXIT, b"2")
        assert recv(loop, s) is None
        s.close()
    assert os.read(r, 100) == b""  # the stdin pipe was closed with the instance
    os.close(r)
    ep.close()


def test_stdin_once_closes_stdin_when_the_first_session_detaches(loop, tmp_path):
    ep = endpoint(loop, tmp_path, stdin_once=True)
    r, w = os.pipe()
    ep.started(w)
    a = client(loop, ep, ap.WANT_STDIN | ap.WANT_STDOUT)
    assert recv(loop, a)[0] == ap.HELLO
    a.sendall(ap.pack(ap.STDIN, b"x"))
    a.sendall(ap.pack(ap.CLOSE, bytes([ap.STDIN])))
    loop.turn()
    assert os.read(r, 10) == b"x" and os.read(r, 10) == b""  # EOF for the container
    ep.output("stdout", b"after")  # ... and the session still shows output
    assert recv(loop, a) == (ap.STDOUT, b"after")
    b = client(loop, ep, ap.WANT_STDIN)
    assert recv(loop, b) == (ap.HELLO, bytes([ap.VERSION, 0]))  # stdin is closed now
    for s in (a, b):
        s.close()
    os.close(r)
    ep.close()


def test_without_stdin_once_a_sessions_end_of_stdin_ends_only_the_session(loop, tmp_path):
    ep = endpoint(loop, tmp_path)
    r, w = os.pipe()
    ep.started(w)
    a = client(loop, ep, ap.WANT_STDIN | ap.WANT_STDOUT)
    assert recv(loop, a)[0] == ap.HELLO
    a.sendall(ap.pack(ap.CLOSE, bytes([ap.STDIN])))
    assert recv(loop, a) is None
    a.close()
    b = client(loop, ep, ap.WANT_STDIN)
    assert recv(loop, b) == (ap.HELLO, bytes([ap.VERSION, ap.STDIN_OPEN]))
    b.sendall(ap.pack(ap.DETACH))
    assert recv(loop, b) is None
    ep.write_stdin(b"still open")
    assert os.read(r, 100) == b"still open"
    b.close()
    os.close(r)
    ep.close()


def test_a_tty_has_one_stream_takes_resizes_and_its_stdin_outlives_stdin_once(loop, tmp_path):
    ep = endpoint(loop, tmp_path, tty=True, stdin_once=True)
    master, slave = os.openpty()
    ep.started(os.dup(master))
    a = client(loop, ep, ap.WANT_STDIN | ap.WANT_STDOUT)
    assert recv(loop, a) == (ap.HELLO, bytes([ap.VERSION, ap.TTY | ap.STDIN_OPEN]))
    ep.output("stderr", b"x")
    assert recv(loop, a) == (ap.STDOUT, b"x")
    a.sendall(ap.resize(100, 30))
    loop.turn()
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))
    assert (rows, cols) == (30, 100)
    a.close()  # a detach: a tty's stdin is not closed (it would hang up the terminal)
    loop.turn()
    assert ep.stdin_open
    ep.write_stdin(b"ok\n")
    assert os.read(slave, 100) == b"ok\n"
    ep.close()
    for fd in (master, slave):
        os.close(fd)


def test_a_slow_session_is_dropped_not_waited_for(loop, tmp_path, monkeypatch):
    monkeypatch.setattr(attach, "OUT_LIMIT", 1 << 20)
    ep = endpoint(loop, tmp_path, stdin=False)
    ep.started(-1)
    slow = client(loop, ep)
    fast = client(loop, ep)
    assert recv(loop, slow)[0] == recv(loop, fast)[0] == ap.HELLO
    chunk = b"y" * ap.CHUNK
    fast.setblocking(False)
    got = 0
    for _ in range(64):  # 2 MiB: more than the socket buffers and the limit together
        ep.output("stdout", chunk)
        loop.turn(1)
        while True:
            try:
                got += len(fast.recv(ap.MAX_PACKET)) - 1
            except BlockingIOError:
                break
    assert got == 64 * ap.CHUNK
    assert len(ep.sessions) == 1  # the one that did not read is gone
    slow.settimeout(2)
    data = b""
    while chunk := slow.recv(ap.MAX_PACKET):  # what it had been sent, then EOF
        data += chunk
    for s in (slow, fast):
        s.close()
    ep.close()


def test_a_container_that_does_not_read_pauses_the_senders(loop, tmp_path, monkeypatch):
    monkeypatch.setattr(attach, "STDIN_LIMIT", 64 << 10)
    ep = endpoint(loop, tmp_path)
    r, w = os.pipe()
    os.set_blocking(r, False)
    ep.started(w)
    a = client(loop, ep, ap.WANT_STDIN | ap.WANT_STDOUT)
    assert recv(loop, a)[0] == ap.HELLO
    a.setblocking(False)
    sent = 0
    try:
        for _ in range(200):  # 6 MiB would fill the pipe, our queue and the socket
            a.send(ap.pack(ap.STDIN, b"z" * ap.CHUNK))
            sent += ap.CHUNK
            loop.turn(1)
    except BlockingIOError:
        pass
    [s] = ep.sessions
    assert ep.stdin_full and not s.events & selectors.EVENT_READ  # not read any more
    got = 0
    while got < sent:  # the container reads: everything arrives, in order
        loop.turn(1)
        try:
            got += len(os.read(r, 1 << 20))
        except BlockingIOError:
            pass
    assert got == sent
    a.close()
    os.close(r)
    ep.close()
