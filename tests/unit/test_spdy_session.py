"""The SPDY server session over a socketpair, driven by a client written with the frames
module: replies, data and half-closes, resets, pings, no flow-control stall, the end."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from minipod.api.spdy import frames as f
from minipod.api.spdy.session import Session
from minipod.api.upgrade import TlsPipe


class Client:
    def __init__(self, sock: socket.socket):
        self.sock, self.enc, self.dec, self.got = sock, f.Encoder(), f.Decoder(), []

    def send(self, *frames) -> None:
        self.sock.sendall(b"".join(self.enc.encode(x) for x in frames))

    def expect(self, pred, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, x in enumerate(self.got):
                if pred(x):
                    return self.got.pop(i)
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"no such frame; got {self.got}") from None
            assert data, "EOF"
            self.got += self.dec.feed(data)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    streams, arrived = [], threading.Event()

    def on_stream(s):
        s.reply()
        streams.append(s)
        arrived.set()

    pipe = TlsPipe(a)
    session = Session(pipe, on_stream)
    t = threading.Thread(target=session.run, daemon=True)
    t.start()
    yield session, Client(b), streams, t
    session.close()
    t.join(5)
    a.close()
    b.close()
    assert not t.is_alive()


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_streams_are_replied_to_and_carry_data_both_ways(pair):
    session, c, streams, _ = pair
    c.send(f.SynStream(1, {"streamtype": "data", "port": "80"}))
    assert c.expect(lambda x: isinstance(x, f.SynReply)).stream_id == 1
    _wait(lambda: streams)
    s = streams[0]
    assert (s.type, s.headers["port"]) == ("data", "80")
    c.send(f.Data(1, b"hello "), f.Data(1, b"world", fin=True))
    assert s.read() + s.read() == b"hello world" and s.read() == b""
    # More than the initial 64 KiB window, with no WINDOW_UPDATE from the client.
    # (written from another thread: the socketpair holds less than that, and we read here)
    ok = []
    w = threading.Thread(target=lambda: (ok.append(s.write(b"y" * 300_000)), s.close()))
    w.start()
    got = b""
    while True:
        d = c.expect(lambda x: isinstance(x, f.Data))
        assert len(d.data) <= 32 * 1024
        got += d.data
        if d.fin:
            break
    w.join(5)
    assert got == b"y" * 300_000 and ok == [True]
    _wait(lambda: 1 not in session.streams)  # both halves closed: forgotten


def test_ping_is_echoed_and_reset_ends_a_stream(pair):
    session, c, streams, _ = pair
    c.send(f.Ping(7))
    assert c.expect(lambda x: isinstance(x, f.Ping)) == f.Ping(7)
    c.send(f.SynStream(1, {"streamtype": "error"}), f.SynStream(3, {"streamtype": "data"}))
    _wait(lambda: len(streams) == 2)
    c.send(f.RstStream(3, f.CANCEL))
    assert streams[1].read() == b"" and streams[1].reset
    assert not streams[1].write(b"late")  # nothing may follow a reset
    assert not streams[0].remote_done


def test_bad_stream_ids_and_streams_after_goaway_are_refused(pair):
    session, c, streams, _ = pair
    c.send(f.SynStream(2, {}))  # even: a server's id
    assert c.expect(lambda x: isinstance(x, f.RstStream)) == f.RstStream(2, f.PROTOCOL_ERROR)
    c.send(f.SynStream(5, {}), f.SynStream(3, {}))  # ids must grow
    assert c.expect(lambda x: isinstance(x, f.RstStream)) == f.RstStream(3, f.PROTOCOL_ERROR)
    c.send(f.GoAway(0), f.SynStream(7, {}))
    assert c.expect(lambda x: isinstance(x, f.RstStream)) == f.RstStream(7, f.REFUSED_STREAM)
    assert [s.id for s in streams] == [5]


def test_the_transports_end_ends_every_stream(pair):
    session, c, streams, t = pair
    c.send(f.SynStream(1, {"streamtype": "stdin"}))
    _wait(lambda: streams)
    reader = threading.Thread(target=streams[0].read)
    reader.start()
    c.sock.close()
    t.join(5)
    reader.join(5)
    assert not t.is_alive() and not reader.is_alive()
    assert session.done and streams[0].remote_done and not streams[0].write(b"x")


def test_garbage_ends_the_session_with_goaway(pair):
    session, c, streams, t = pair
    c.sock.sendall(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")  # SPDY/2
    assert c.expect(lambda x: isinstance(x, f.GoAway)).status == 1
    t.join(5)
    assert not t.is_alive() and session.done
