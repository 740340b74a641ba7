"""The supervisor's side of attach (the wire: attachproto.py): per container, a listening
socket, its sessions, and where the running instance's stdin goes.

Everything here is non-blocking and driven by the supervisor's selector, whose loop also runs
probes, restarts and the stop deadlines: nothing may wait on a client or on a container. So
  - output is queued per session and sent as the socket takes it; a session that falls
    OUT_LIMIT behind is dropped (its client may attach again; the log has every byte);
  - stdin is queued and written as the container reads it; past STDIN_LIMIT the sessions that
    send stdin are not read until the container has caught up (back-pressure to the client,
    which a relay passes on to kubectl);
  - a callback registered for both directions just tries both (a read that would block says
    so), since the loop calls `callback(fileobj)` without the event mask.
"""

from __future__ import annotations

import collections
import fcntl
import os
import selectors
import socket
import struct
import termios

from minipod.kubelet import attachproto as ap

OUT_LIMIT = 4 << 20      # bytes queued for one session before it is dropped
STDIN_LIMIT = 256 << 10  # bytes queued for the container's stdin before sessions pause
MAX_SESSIONS = 32
READS_PER_TURN = 64      # packets read from one session per wake-up: others get their turn


class Endpoint:
    """One container's attach socket, from its first start to the pod's end."""

    def __init__(self, sel: selectors.BaseSelector, path: str, name: str, *, tty: bool,
                 stdin: bool, stdin_once: bool):
        self.sel = sel
        self.path = path
        self.name = name
        self.tty = tty
        self.has_stdin = stdin
        self.stdin_once = stdin_once
        self.listener = ap.listen(path)
        sel.register(self.listener, selectors.EVENT_READ, self._accept)
        self.sessions: set[Session] = set()
        self.running = False
        # The running instance's: its stdin pipe, or (tty) a dup of its pty's master, which
        # takes stdin and resizes (the master itself is the supervisor's output fd).
        self.fd = -1
        self.pending = bytearray()   # stdin not yet taken by the container
        self.closing = False         # close the stdin pipe once `pending` is written
        self.registered = False
        self.exit_code: int | None = None
        self.output_over = False

    # --- the instance's life (the supervisor calls these) --------------------------------------

    def started(self, fd: int) -> None:
        """A new instance runs; `fd` (ours to close) takes its stdin and resizes, or -1."""
        self._drop_fd()
        self.running = True
        self.fd = fd
        self.closing = False
        self.exit_code = None
        self.output_over = False
        if fd >= 0:
            os.set_blocking(fd, False)

    def output(self, stream: str, data: bytes) -> None:
        kind = ap.STDOUT if self.tty or stream == "stdout" else ap.STDERR
        want = ap.WANT_STDOUT if kind == ap.STDOUT else ap.WANT_STDERR
        packets = ap.chunks(kind, data)
        for s in list(self.sessions):
            if s.ready and not s.ending and s.flags & want:
                s.queue(packets)

    def output_done(self) -> None:
        self.output_over = True
        self._maybe_over()

    def exited(self, code: int) -> None:
        self.exit_code = code
        self._drop_fd()  # nobody reads it any more
        self._maybe_over()

    def _maybe_over(self) -> None:
        """Sessions end once the instance has exited *and* its output is all sent: an exit
        is reaped before the last output is read, more often than not."""
        if self.running and self.output_over and self.exit_code is not None:
            self.running = False
            for s in list(self.sessions):
                s.finish(ap.exit_packet(self.exit_code))

    def close(self) -> None:
        """The pod is over: no more sessions, no socket."""
        for s in list(self.sessions):
            s.close()
        self._drop_fd()
        try:
            self.sel.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    # --- stdin ---------------------------------------------------------------------------------

    @property
    def stdin_open(self) -> bool:
        return self.has_stdin and self.fd >= 0 and not self.closing

    @property
    def stdin_full(self) -> bool:
        return len(self.pending) >= STDIN_LIMIT

    def write_stdin(self, data: bytes) -> None:
        if self.stdin_open and data:
            self.pending += data
            self._flush_stdin()

    def stdin_ended(self) -> None:
        """A session's stdin ended: with stdinOnce and no tty, the container's stdin is closed
        (once what was sent is written), as containerd does; see attachproto."""
        if self.stdin_once and not self.tty and self.stdin_open:
            self.closing = True
            self._flush_stdin()

    def resize(self, width: int, height: int) -> None:
        if self.tty and self.fd >= 0 and width and height:
            try:  # the kernel signals SIGWINCH to the terminal's foreground process group
                fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
            except OSError:
                pass

    def _flush_stdin(self, _fileobj=None) -> None:
        was_full = self.stdin_full
        while self.pending and self.fd >= 0:
            try:
                n = os.write(self.fd, self.pending[:65536])
            except BlockingIOError:
                break
            except OSError:  # EPIPE: the container closed its stdin (or exited)
                self.pending.clear()
                self._drop_fd()
                break
            del self.pending[:n]
        if not self.pending and self.closing:
            self._drop_fd()
        self._register_stdin()
        if was_full and not self.stdin_full:
            for s in list(self.sessions):
                s.update()

    def _register_stdin(self) -> None:
        want = bool(self.pending) and self.fd >= 0
        if want and not self.registered:
            self.sel.register(self.fd, selectors.EVENT_WRITE, self._flush_stdin)
        elif not want and self.registered:
            self.sel.unregister(self.fd)
        self.registered = want

    def _drop_fd(self) -> None:
        if self.registered:
            self.sel.unregister(self.fd)
            self.registered = False
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
        self.pending.clear()
        self.closing = False

    # --- sessions ------------------------------------------------------------------------------

    def _accept(self, _fileobj) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:
                return  # ECONNABORTED and the like: that client is gone
            if len(self.sessions) >= MAX_SESSIONS:
                _refuse(conn, f"container {self.name} has {MAX_SESSIONS} attach sessions")
                continue
            conn.setblocking(False)
            s = Session(self, conn)
            self.sessions.add(s)
            s.update()


def _refuse(conn: socket.socket, message: str) -> None:
    try:
        conn.send(ap.pack(ap.ERROR, message.encode()), socket.MSG_DONTWAIT)
    except OSError:
        pass
    conn.close()


class Session:
    """One client: its HELLO flags, its queued output."""

    def __init__(self, ep: Endpoint, sock: socket.socket):
        self.ep = ep
        self.sock: socket.socket | None = sock
        self.flags = 0
        self.ready = False        # HELLO received and answered
        self.stdin_done = False   # its stdin has ended (CLOSE, DETACH, EOF)
        self.ending = False       # the instance is over: close once the queue is sent
        self.out: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.events = 0

    @property
    def sends_stdin(self) -> bool:
        return self.ready and bool(self.flags & ap.WANT_STDIN) and not self.stdin_done

    def update(self) -> None:
        """Register for what we wait on: input unless paused or ending, output if queued."""
        if self.sock is None:
            return
        paused = self.ending or (self.sends_stdin and self.ep.stdin_full)
        events = (0 if paused else selectors.EVENT_READ) | \
            (selectors.EVENT_WRITE if self.out else 0)
        if events == self.events:
            return
        if not self.events:
            self.ep.sel.register(self.sock, events, self._ready)
        elif not events:
            self.ep.sel.unregister(self.sock)
        else:
            self.ep.sel.modify(self.sock, events, self._ready)
        self.events = events

    def _ready(self, _fileobj) -> None:
        self._flush()
        if self.sock is not None and self.events & selectors.EVENT_READ:
            self._read()
        self.update()

    def _read(self) -> None:
        for _ in range(READS_PER_TURN):
            if self.sock is None or (self.sends_stdin and self.ep.stdin_full):
                return
            try:
                packet = self.sock.recv(ap.MAX_PACKET)
            except BlockingIOError:
                return
            except OSError:
                packet = b""
            if not packet:
                self.close()  # the client has gone: a detach
                return
            self._handle(*ap.unpack(packet))

    def _handle(self, kind: int, payload: bytes) -> None:
        ep = self.ep
        if not self.ready:
            try:
                if kind != ap.HELLO:
                    raise ValueError("attach: a session starts with HELLO")
                self.flags = ap.parse_hello(payload)
            except ValueError as e:
                return self._error(str(e))
            if not ep.running:
                return self._error(f"container {ep.name} is not running")
            self.ready = True
            self.queue([ap.hello((ap.TTY if ep.tty else 0) |
                                 (ap.STDIN_OPEN if ep.stdin_open else 0))])
        elif kind == ap.STDIN:
            if self.sends_stdin:
                ep.write_stdin(payload)
        elif kind == ap.RESIZE:
            try:
                ep.resize(*ap.parse_resize(payload))
            except ValueError:
                pass
        elif kind == ap.CLOSE and payload[:1] == bytes([ap.STDIN]):
            if self.sends_stdin:
                self.stdin_done = True
                ep.stdin_ended()
                if not (ep.stdin_once and not ep.tty):
                    self.close()  # containerd: the attach returns once its stdin has ended
        elif kind == ap.DETACH:
            self.close()

    def _error(self, message: str) -> None:
        self.queue([ap.pack(ap.ERROR, message.encode())])
        self.ending = True
        self._flush()

    def queue(self, packets: list[bytes]) -> None:
        if self.sock is None:
            return
        size = sum(len(p) for p in packets)
        if self.queued + size > OUT_LIMIT:
            self.close()  # too slow to follow: dropped rather than let memory grow
            return
        self.out.extend(packets)
        self.queued += size
        self._flush()
        self.update()

    def finish(self, packet: bytes) -> None:
        """The instance is over: send `packet` (EXIT) after the output, then close."""
        self.queue([packet])
        self.ending = True
        self._flush()
        self.update()

    def _flush(self) -> None:
        while self.out and self.sock is not None:
            try:
                self.sock.send(self.out[0])
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            self.queued -= len(self.out.popleft())
        if self.ending and not self.out:
            self.close()

    def close(self) -> None:
        if self.sock is None:
            return
        if self.events:
            self.ep.sel.unregister(self.sock)
            self.events = 0
        self.sock.close()
        self.sock = None
        self.out.clear()
        self.ep.sessions.discard(self)
        if self.sends_stdin:  # a detach (or a dropped client) ends its stdin too
            self.stdin_done = True
            self.ep.stdin_ended()
