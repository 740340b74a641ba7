"""`pods/{name}/portforward`: kubectl port-forward's streams, to the pod's ports.

The connection is SPDY/3.1, either upgraded directly (`Upgrade: SPDY/3.1`, protocol
portforward.k8s.io: kubectl before 1.31, and later ones as their fallback) or tunnelled in a
WebSocket (sub-protocol SPDY/3.1+portforward.k8s.io, kubectl >= 1.31). Each connection
kubectl accepts locally becomes two streams with the same `requestID` and `port` headers:
- `error`: the client only reads it; we write why the forwarding failed (nothing if it did
  not) and FIN it once the pod's side of the connection is done;
- `data`: the bytes, both ways; FIN is a half-close, passed on to the pod's socket.
kubectl reads the error stream only after the data stream's end from our side, and it does
not close its local connection until then -- so the error stream's FIN must follow the pod's
EOF, not the client's. kubectl >= 1.26 resets the data stream after that, and closes the
whole connection (and exits) when the error stream had something to say.

The sockets are made in the pod's network namespace by one exec'd helper per connection
(net/nssocket.py: this server is threaded, so it cannot fork a Python child), and dial
localhost:PORT there, as containerd does: no hostPort, and the pod IP does not matter.
Everything a connection starts -- relay threads, sockets, the helper -- ends with it; and the
connection ends when the pod's sandbox goes (a watchdog), since the helper, a process in the
pod's network namespace, would otherwise keep that namespace (and its veth) alive.
"""

from __future__ import annotations

import logging
import socket
import threading

from minipod.api import upgrade
from minipod.api.spdy.session import Session, Stream
from minipod.api.status import ApiError

log = logging.getLogger("minipod.api")
PROTOCOL = "portforward.k8s.io"
BUFFER = 1 << 16


def handle(api, req, ns: str, name: str):
    from minipod import state
    from minipod.api import pods
    from minipod.cli.portforward import pod_netns, sandbox_alive
    from minipod.errors import Conflict, MinipodError
    from minipod.net.nssocket import NetnsSockets

    obj, _ = pods._find(api, ns, name)
    rec = state.PodRecord(api.cfg.root, name)
    try:
        nspath = pod_netns(rec)
        alive = sandbox_alive(rec)
    except Conflict as e:
        raise ApiError(400, str(e)) from None
    except OSError:  # the pin went away in between
        raise ApiError(400, "unable to forward port because pod is not running") from None
    if not (upgrade.is_websocket(req) or upgrade.is_spdy(req)):
        raise ApiError(400, "port-forward needs an upgrade to SPDY/3.1 (or a WebSocket with "
                            f"the sub-protocol {upgrade.TUNNEL_PREFIX}{PROTOCOL})")
    try:  # before the upgrade: a failure is still an HTTP answer
        sockets = NetnsSockets.spawn(nspath, f'pod "{name}"')
    except (MinipodError, OSError) as e:
        raise ApiError(500, f"unable to enter the network namespace of pod {name}: {e}") \
            from None
    try:
        if upgrade.is_websocket(req):
            ws, _ = upgrade.websocket(req, (upgrade.TUNNEL_PREFIX + PROTOCOL,))
            transport = upgrade.WebSocketBytes(ws)
        else:
            transport, _ = upgrade.spdy(req, (PROTOCOL,))
        Forwarder(name, obj["metadata"].get("uid", ""), sockets, transport, alive).run()
    finally:
        sockets.close()
    return None


class Forwarder:
    """One kubectl port-forward connection: pairs streams by requestID, relays each pair."""

    def __init__(self, pod: str, uid: str, sockets, transport, alive=lambda: True):
        self.pod, self.uid, self.sockets = pod, uid, sockets
        self.transport, self.alive = transport, alive
        self.pending: dict[str, dict[str, Stream]] = {}
        self.relays: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self.session = Session(transport, self._on_stream)

    def run(self) -> None:
        ended = threading.Event()
        watch = threading.Thread(target=self._watch, args=(ended,), daemon=True)
        watch.start()
        try:
            self.session.run()  # until kubectl hangs up; every stream then reads as ended
        finally:
            ended.set()
            self.transport.close()
            for t in list(self.relays):
                t.join(10)
            watch.join(5)

    def _watch(self, ended: threading.Event) -> None:
        """The pod gone, the connection goes (kubectl: "lost connection to pod"): the helper
        in its network namespace must not keep that namespace, and its veth, alive."""
        while not ended.wait(1.0):
            if not self.alive():
                log.info("port-forward: pod %s is gone, closing the connection", self.pod)
                self.session.close()
                return

    def _on_stream(self, s: Stream) -> None:  # in the session's reader: must not block
        s.reply()
        if s.type not in ("data", "error"):
            s.cancel()
            return
        rid = s.headers.get("requestid") or s.headers.get("port", "")
        pair = self.pending.setdefault(rid, {})
        if s.type in pair:  # a second stream of the same kind: kubelet refuses it too
            s.cancel()
            return
        pair[s.type] = s
        if len(pair) == 2:
            del self.pending[rid]
            t = threading.Thread(target=self._forward, args=(pair["data"], pair["error"]),
                                 daemon=True, name=f"portforward {self.pod} #{rid}")
            with self._lock:
                self.relays.add(t)
            t.start()

    def _forward(self, data: Stream, error: Stream) -> None:
        from minipod.cli.portforward import dial
        from minipod.errors import MinipodError

        remote = None
        try:
            try:
                port = int(data.headers.get("port", ""))
                if not 0 < port < 65536:
                    raise ValueError
            except ValueError:
                self._fail(data, error, f'invalid port header: "{data.headers.get("port")}"')
                return
            try:
                remote, problems = dial(self.sockets, port)
            except MinipodError as e:
                problems = [str(e)]
            if remote is None:
                self._fail(data, error, f"error forwarding port {port} to pod {self.pod}, uid "
                                        f"{self.uid}: failed to connect to localhost:{port} "
                                        f"inside the pod's network namespace: "
                                        f"{'; '.join(problems)}")
                return
            upstream = threading.Thread(target=self._to_pod, args=(data, remote), daemon=True)
            upstream.start()
            while True:  # pod -> client, until the pod's EOF
                try:
                    chunk = remote.recv(BUFFER)
                except OSError:
                    chunk = b""
                if not chunk or not data.write(chunk):
                    break
            data.close()
            error.close()  # nothing went wrong
            upstream.join()  # ends with the client's FIN or RST, or the connection's end
        finally:
            if remote is not None:
                remote.close()
            with self._lock:
                self.relays.discard(threading.current_thread())

    def _to_pod(self, data: Stream, remote: socket.socket) -> None:
        while chunk := data.read():
            try:
                remote.sendall(chunk)
            except OSError:
                break
        try:
            # A FIN is a half-close; a reset (or the connection's end) stops both ways, which
            # also wakes the other direction's recv().
            remote.shutdown(socket.SHUT_WR if not data.reset and not self.session.done
                            else socket.SHUT_RDWR)
        except OSError:
            pass

    def _fail(self, data: Stream, error: Stream, message: str) -> None:
        log.info("port-forward to pod %s: %s", self.pod, message)
        error.write(message.encode())
        error.close()
        data.close()
