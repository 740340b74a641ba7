"""exec/attach channels over SPDY/3.1 (kubectl before 1.30; apimachinery's remotecommand
protocols v4.channel.k8s.io, v3, v2).

Each channel is a stream the client opens, named by its `streamtype` header: error, stdin,
stdout, stderr, resize (v3+, with a tty). As the kubelet does, the command starts only once
every stream the query asks for exists (the client opens them one after the other, each
waiting for our SYN_REPLY). Output ends with a FIN on its stream; the error stream then
carries the result -- v4: a JSON Status (the exit code as the cause ExitCode); v2/v3: the
failure's message as text, nothing on success -- and its FIN; then GOAWAY. stdin's FIN is
the end of input; the resize stream is a sequence of JSON {"Width", "Height"} objects.
"""

from __future__ import annotations

import json
import threading
import time

from minipod.api import exec as execmod
from minipod.api import upgrade
from minipod.api.spdy.session import Session, Stream

PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io")
STREAM_TIMEOUT = 30.0  # the kubelet's default wait for the client's streams
CLOSE_WAIT = 5.0  # after GOAWAY, how long the client may take to hang up
NAMES = {"error": execmod.ERROR, "stdin": execmod.STDIN, "stdout": execmod.STDOUT,
         "stderr": execmod.STDERR, "resize": execmod.RESIZE}


def accept(req, *, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> "SpdyChannels":
    pipe, proto = upgrade.spdy(req, PROTOCOLS)
    want = {execmod.ERROR}
    want |= {execmod.STDIN} if stdin else set()
    want |= {execmod.STDOUT} if stdout else set()
    want |= {execmod.STDERR} if stderr else set()
    if tty and proto != "v2.channel.k8s.io":
        want.add(execmod.RESIZE)
    ch = SpdyChannels(pipe, proto)
    if not ch.wait_for(want, STREAM_TIMEOUT):
        ch.abort("timed out waiting for client to create streams")
        raise upgrade.Abandoned(f"the client opened {sorted(ch.streams)} of {sorted(want)}")
    return ch


class SpdyChannels:
    def __init__(self, pipe: upgrade.TlsPipe, proto: str):
        self.pipe, self.proto = pipe, proto
        self.streams: dict[int, Stream] = {}
        self._cond = threading.Condition()
        self.session = Session(pipe, self._on_stream)
        self._reader = threading.Thread(target=self.session.run, daemon=True)
        self._reader.start()
        self.closed = False

    def _on_stream(self, s: Stream) -> None:  # in the session's reader: must not block
        s.reply()
        ch = NAMES.get(s.type)
        with self._cond:
            if ch is None or ch in self.streams:
                s.cancel()  # a stream we have no use for
                return
            self.streams[ch] = s
            self._cond.notify_all()

    def wait_for(self, want: set[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not want <= self.streams.keys():
                left = deadline - time.monotonic()
                if left <= 0 or self.session.done:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def send(self, channel: int, data: bytes) -> None:
        s = self.streams.get(channel)
        if s is not None and not s.write(data) and self.session.done:
            self.closed = True

    def end(self, channel: int) -> None:
        if (s := self.streams.get(channel)) is not None:
            s.close()

    def finish(self, status: dict) -> None:
        err = self.streams.get(execmod.ERROR)
        if err is not None:
            if self.proto == "v4.channel.k8s.io":
                err.write(json.dumps(status).encode())
            elif status.get("status") != "Success":
                err.write(status.get("message", "").encode())
            err.close()
        self._hang_up()

    def abort(self, message: str) -> None:
        err = self.streams.get(execmod.ERROR)
        if err is not None:
            err.write(message.encode())
            err.close()
        self._hang_up()

    def _hang_up(self) -> None:
        """GOAWAY, then give the client a moment to read everything and hang up itself (a
        close with its bytes unread could reset the connection under the last frames)."""
        from minipod.api.spdy import frames as f

        self.session.send(f.GoAway(0, 0))
        self._reader.join(CLOSE_WAIT)
        self.closed = True
        self.session.close()
        self._reader.join(5)

    def serve(self, session) -> None:
        pumps = []
        if (s := self.streams.get(execmod.STDIN)) is not None:
            pumps.append(threading.Thread(target=self._stdin, args=(s, session), daemon=True))
        if (s := self.streams.get(execmod.RESIZE)) is not None:
            pumps.append(threading.Thread(target=self._resize, args=(s, session), daemon=True))
        for t in pumps:
            t.start()
        try:
            self._reader.join()
            for t in pumps:
                t.join(5)
        finally:
            self.closed = True
            self.pipe.close()

    def _stdin(self, s: Stream, session) -> None:
        while data := s.read():
            session.stdin(data)
        if not self.session.done and not s.reset:
            session.stdin_end()

    def _resize(self, s: Stream, session) -> None:
        dec, buf = json.JSONDecoder(), ""
        while data := s.read():
            buf += data.decode(errors="replace")
            while buf.strip():
                try:
                    obj, end = dec.raw_decode(buf.lstrip())
                except ValueError:
                    break  # incomplete: wait for more
                buf = buf.lstrip()[end:]
                try:
                    session.resize(int(obj["Width"]), int(obj["Height"]))
                except (KeyError, TypeError, ValueError):
                    pass
