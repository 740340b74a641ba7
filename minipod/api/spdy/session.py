"""A SPDY/3.1 server session: the streams a client opens over one byte transport.

One thread (the caller of run()) reads frames and routes them; every other thread writes
through send(), which encodes and writes under one lock -- the header compression context
is a single zlib stream, so frames must reach the wire in the order they were compressed.

Flow control is not enforced in either direction: spdystream (kubectl's SPDY) neither sends
WINDOW_UPDATE nor looks at ours, so waiting for the peer's window would stall every stream
after 64 KiB. Backpressure is the transport's instead: a stream whose unread data passes
BUFFER makes the reader wait for its consumer, as one TCP connection would.

Streams are opened by the client only (odd ids); the handler given to the session decides
what each one is from its headers and answers it with reply().
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Protocol

from minipod.api.spdy import ProtocolError
from minipod.api.spdy import frames as f

log = logging.getLogger("minipod.api.spdy")
BUFFER = 1 << 20  # unread bytes per stream before the reader waits
CHUNK = 32 * 1024  # the largest DATA frame we send


class Transport(Protocol):
    def recv(self) -> bytes: ...  # b"" once the peer is gone
    def sendall(self, data: bytes) -> None: ...  # raises OSError once it is gone
    def close(self) -> None: ...  # ends both directions; wakes a recv() in another thread


class Stream:
    def __init__(self, session: "Session", sid: int, headers: f.Headers):
        self.session, self.id, self.headers = session, sid, headers
        self._cond = threading.Condition()
        self._data: deque[bytes] = deque()
        self._size = 0
        self.remote_done = False  # the peer sent FIN or RST (or the session ended)
        self.reset = False  # RST_STREAM from the peer
        self.local_done = False  # we sent FIN or RST

    @property
    def type(self) -> str:
        return self.headers.get("streamtype", "")

    def reply(self, headers: f.Headers | None = None) -> None:
        self.session.send(f.SynReply(self.id, headers or {}))

    def read(self) -> bytes:
        """The next bytes from the peer; b"" at its end (FIN, RST, or the session's end)."""
        with self._cond:
            while not self._data and not self.remote_done:
                self._cond.wait()
            if not self._data:
                return b""
            chunk = self._data.popleft()
            self._size -= len(chunk)
            self._cond.notify_all()
            return chunk

    def write(self, data: bytes) -> bool:
        """False once the stream (or the session) is closed for writing."""
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):
            if self.local_done or self.reset:
                return False
            if not self.session.send(f.Data(self.id, bytes(view[i:i + CHUNK]))):
                return False
        return True

    def close(self) -> None:
        """Our half-close (FIN); idempotent, nothing after a reset."""
        with self._cond:
            if self.local_done or self.reset:
                return
            self.local_done = True
        self.session.send(f.Data(self.id, b"", fin=True))
        self.session._forget_if_done(self)

    def cancel(self, status: int = f.CANCEL) -> None:
        with self._cond:
            if self.local_done and self.remote_done:
                return
            self.local_done = True
        self.session.send(f.RstStream(self.id, status))
        self._remote_end(reset=False)

    # -- called by the session's reader --
    def _deliver(self, data: bytes) -> None:
        with self._cond:
            while self._size >= BUFFER and not self.remote_done and not self.session.done:
                self._cond.wait(1.0)
            if self.remote_done:
                return  # data after FIN/RST: dropped
            self._data.append(data)
            self._size += len(data)
            self._cond.notify_all()

    def _remote_end(self, reset: bool) -> None:
        with self._cond:
            self.remote_done = True
            if reset:
                self.reset = True
                self.local_done = True  # nothing may follow a reset
            self._cond.notify_all()
        self.session._forget_if_done(self)


class Session:
    def __init__(self, transport: Transport, on_stream: Callable[[Stream], None]):
        self.transport = transport
        self.on_stream = on_stream
        self._enc, self._dec = f.Encoder(), f.Decoder()
        self._wlock = threading.Lock()
        self._lock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self._last_id = 0
        self.going_away = False  # the peer sent GOAWAY: no new streams
        self.done = False  # the transport is gone

    def send(self, frame: f.Frame) -> bool:
        with self._wlock:
            if self.done:
                return False
            try:
                self.transport.sendall(self._enc.encode(frame))
                return True
            except OSError:
                self.done = True
                return False

    def run(self) -> None:
        """Read and route frames until the transport ends (or sends garbage)."""
        try:
            while True:
                data = self.transport.recv()
                if not data:
                    break
                for frame in self._dec.feed(data):
                    self._route(frame)
        except ProtocolError as e:
            log.info("SPDY session ends: %s", e)
            self.send(f.GoAway(self._last_id, 1))
        except OSError:
            pass
        finally:
            self.done = True
            with self._lock:
                streams = list(self.streams.values())
            for s in streams:
                s._remote_end(reset=False)

    def _route(self, frame: f.Frame) -> None:
        if isinstance(frame, f.Data):
            s = self.streams.get(frame.stream_id)
            if s is None:
                return  # a stream already forgotten (reset, or both halves closed)
            if frame.data:
                s._deliver(frame.data)
            if frame.fin:
                s._remote_end(reset=False)
        elif isinstance(frame, f.SynStream):
            sid = frame.stream_id
            if sid % 2 == 0 or sid <= self._last_id:
                # Even ids are ours to open; ids must grow (spec 2.3.2).
                self.send(f.RstStream(sid, f.PROTOCOL_ERROR))
                return
            self._last_id = sid
            if self.going_away:
                self.send(f.RstStream(sid, f.REFUSED_STREAM))
                return
            s = Stream(self, sid, frame.headers)
            with self._lock:
                self.streams[sid] = s
            if frame.fin or frame.unidirectional:
                s.remote_done = True
            self.on_stream(s)
        elif isinstance(frame, f.RstStream):
            s = self.streams.get(frame.stream_id)
            if s is not None:
                s._remote_end(reset=True)
        elif isinstance(frame, f.HeadersFrame):
            s = self.streams.get(frame.stream_id)
            if s is not None and frame.fin:
                s._remote_end(reset=False)
        elif isinstance(frame, f.Ping):
            self.send(frame)  # we send no pings of our own: every one is the client's
        elif isinstance(frame, f.GoAway):
            self.going_away = True
        # SETTINGS, WINDOW_UPDATE, SYN_REPLY (we open no streams), unknown types: ignored.

    def _forget_if_done(self, s: Stream) -> None:
        if s.local_done and s.remote_done:
            with self._lock:
                self.streams.pop(s.id, None)

    def close(self) -> None:
        """GOAWAY, then the transport's end (which ends run() in its thread)."""
        self.send(f.GoAway(self._last_id, 0))
        with self._wlock:
            self.done = True
        self.transport.close()
