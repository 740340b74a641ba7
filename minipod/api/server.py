"""`minipod serve`: HTTPS on 127.0.0.1, authentication, routing; the resources live in pods.py,
podlog.py, exec.py/attach.py and portforward.py, the connection upgrades in upgrade.py.

Why the standard library's ThreadingHTTPServer: kubectl speaks HTTP/1.1 (with ALPN we never
offer h2) and a node's API sees a handful of clients, so a thread per connection is plenty,
and http.server's request parsing is the maintained one in the standard library; what it does
not do -- bound the body, chunk a stream -- is done here in a few lines each, and the upgrades
(WebSocket with wsproto's framing, SPDY/3.1 with minipod/api/spdy) in upgrade.py. TLS is the
standard library's ssl; the handshake runs in the connection's thread
(do_handshake_on_connect=False at accept), so a client that connects and sends nothing holds
up only its own thread, for at most TIMEOUT seconds.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from minipod.api.status import ApiError, failure
from minipod.errors import MinipodError

log = logging.getLogger("minipod.api")
MAX_BODY = 3 * 1024 * 1024  # the API server's limit for a request body (3 MiB)
TIMEOUT = 30.0  # seconds a connection may stay silent before a request line


class Request:
    """What a resource handler sees: the parsed request, and the means to answer a stream."""

    def __init__(self, h: "Handler", method: str):
        self.h = h
        self.method = method
        u = urlsplit(h.path)
        self.path = u.path
        self.query = parse_qs(u.query, keep_blank_values=True)
        self.headers = h.headers
        self.warnings: list[str] = []
        self.body_read = False  # an answer before the body was read ends the connection

    def arg(self, name: str, default: str | None = None) -> str | None:
        v = self.query.get(name)
        return v[-1] if v else default

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    def int_arg(self, name: str) -> int | None:
        v = self.arg(name)
        if v in (None, ""):
            return None
        try:
            return int(v)
        except ValueError:
            raise ApiError(400, f"invalid value for {name}: {v!r} is not an integer") from None

    def body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise ApiError(411, "a request body needs a Content-Length", reason="BadRequest")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "invalid Content-Length") from None
        if n < 0:
            raise ApiError(400, "invalid Content-Length")
        if n > MAX_BODY:
            # Not read: the connection is closed after the answer (Handler.send_json).
            self.h.close_connection = True
            raise ApiError(413, f"the request body is too large: {n} bytes, the limit is "
                                f"{MAX_BODY}")
        self.body_read = True
        return self.h.rfile.read(n)

    def json_body(self) -> dict:
        raw = self.body()
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            # kubectl sends JSON; YAML bodies (curl --data-binary @pod.yaml) are read as YAML.
            try:
                import yaml

                doc = yaml.safe_load(raw)
            except Exception:
                raise ApiError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return doc

    def stream(self, content_type: str) -> "Chunked":
        self.h.send_response(200)
        self.h.send_header("Content-Type", content_type)
        self.h.send_header("Transfer-Encoding", "chunked")
        self.h.send_header("Cache-Control", "no-cache, private")
        self.h.end_headers()
        self.h.close_connection = True
        return Chunked(self.h)


class Chunked:
    """HTTP/1.1 chunked transfer encoding, for the watch and log streams."""

    def __init__(self, h: BaseHTTPRequestHandler):
        self.h = h

    def write(self, data: bytes) -> None:
        if data:
            self.h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def flush(self) -> None:
        self.h.wfile.flush()

    def close(self) -> None:
        try:
            self.h.wfile.write(b"0\r\n\r\n")
            self.h.wfile.flush()
        except OSError:
            pass

    def client_gone(self) -> bool:
        """A streaming client never sends anything more: readable means closed."""
        import select

        sock = self.h.connection
        try:
            r, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(r)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "minipod"
    api: "Api"  # set on the subclass by serve()

    def setup(self) -> None:
        self.request.settimeout(TIMEOUT)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as e:
            log.info("TLS handshake from %s failed: %s", self.client_address[0], e)
            raise _Drop() from None
        super().setup()

    def log_message(self, fmt, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _authenticated(self) -> bool:
        """A client certificate our CA signed (ssl verified the chain), or the bearer token."""
        if self.request.getpeercert():
            return True
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            return hmac.compare_digest(auth[7:].strip().encode(), self.api.token.encode())
        return False

    def _handle(self, method: str) -> None:
        req = Request(self, method)
        try:
            if not self._authenticated():
                raise ApiError(401, "Unauthorized")
            # TIMEOUT stays on: a body that never comes, or a stream nobody reads, ends the
            # connection (an upgraded one, which may rightly be quiet for long, lifts it:
            # upgrade.TlsPipe).
            self.api.dispatch(req)
        except ApiError as e:
            if not req.body_read and (self.headers.get("Content-Length") or "0") != "0":
                # The unread body would be parsed as the next request on this connection.
                self.close_connection = True
            self.send_json(e.code, e.status(), req.warnings)
        except (ConnectionError, ssl.SSLError, socket.timeout):  # upgrade.Abandoned too
            self.close_connection = True
        except Exception as e:
            log.exception("%s %s", method, self.path)
            try:
                self.send_json(500, failure(500, f"internal error: {type(e).__name__}: {e}"))
            except OSError:
                self.close_connection = True

    def send_json(self, code: int, obj: dict, warnings: list[str] = (),
                  content_type: str = "application/json") -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for w in warnings:  # kubectl prints each as "Warning: ..."
            self.send_header("Warning", '299 - "%s"' % w.replace('"', "'").replace("\n", " "))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_PUT(self):
        self._handle("PUT")


class _Drop(MinipodError):
    """The connection is not worth an answer (a failed TLS handshake)."""


class Server(ThreadingHTTPServer):
    daemon_threads = True  # streams end with the process; pods do not (they are detached)
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler, ctx: ssl.SSLContext):
        self.ctx = ctx
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True,
                                    do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (_Drop, ConnectionError, ssl.SSLError, socket.timeout)):
            return
        log.exception("connection from %s", client_address[0])


class Route:
    def __init__(self, pattern: str, **methods):
        self.rx = re.compile("^" + pattern + "$")
        self.methods = methods


class Api:
    """The routes, the watch hub and the credentials of one server."""

    def __init__(self, cfg, token: str, config_path: str | None = None):
        from minipod.api import discovery, objects, pods, podlog
        from minipod.api.watch import Hub

        self.cfg = cfg
        self.config_path = config_path  # for the `minipod exec` children (exec.py)
        self.token = token
        self.hub = Hub(cfg)
        self.lock = threading.Lock()  # one create at a time: names are claimed on disk
        self.sessions: set = set()  # running exec/attach sessions, ended with the server
        ns = r"/api/v1/namespaces/(?P<ns>[^/]+)"
        pod = ns + r"/pods/(?P<name>[^/]+)"
        self.routes = [
            Route(r"/version/?", GET=discovery.version),
            Route(r"/api/?", GET=discovery.api),
            Route(r"/api/v1/?", GET=discovery.api_v1),
            Route(r"/apis/?", GET=discovery.apis),
            Route(r"/openapi/v2/?|/swagger-2.0.0.pb-v1", GET=discovery.openapi_v2),
            Route(r"/openapi/v3/?", GET=discovery.openapi_v3_root),
            Route(r"/openapi/v3/api/v1/?", GET=discovery.openapi_v3_core),
            Route(r"/healthz|/livez|/readyz", GET=discovery.healthz),
            Route(r"/api/v1/pods", GET=pods.list_pods),
            Route(ns + r"/pods", GET=pods.list_pods, POST=pods.create),
            Route(pod, GET=pods.get, DELETE=pods.delete, PATCH=pods.patch, PUT=pods.put),
            Route(pod + r"/status", GET=pods.get),
            Route(pod + r"/log", GET=podlog.log),
            Route(pod + r"/exec", GET=self._exec, POST=self._exec),
            Route(pod + r"/attach", GET=self._attach, POST=self._attach),
            Route(pod + r"/portforward", GET=self._portforward, POST=self._portforward),
            Route(r"/api/v1/(?P<resource>configmaps|secrets)", GET=objects.list_objects),
            Route(ns + r"/(?P<resource>configmaps|secrets)", GET=objects.list_objects,
                  POST=objects.create),
            Route(ns + r"/(?P<resource>configmaps|secrets)/(?P<name>[^/]+)", GET=objects.get,
                  DELETE=objects.delete, PATCH=objects.patch, PUT=objects.put),
            Route(r"/api/v1/events", GET=pods.list_events),
            Route(ns + r"/events", GET=pods.list_events),
            Route(r"/api/v1/namespaces", GET=pods.list_namespaces),
            Route(ns, GET=pods.get_namespace),
        ]

    def _exec(self, api, req, **kw):
        from minipod.api import exec as execmod

        return execmod.handle(api, req, **kw)

    def _portforward(self, api, req, **kw):
        from minipod.api import portforward

        return portforward.handle(api, req, **kw)

    def _attach(self, api, req, **kw):
        from minipod.api import attach

        return attach.handle(api, req, **kw)

    def dispatch(self, req: Request) -> None:
        for r in self.routes:
            m = r.rx.match(req.path)
            if m:
                fn = r.methods.get(req.method)
                if fn is None:
                    raise ApiError(405, f"the server does not allow this method on the "
                                        f"requested resource ({req.method} {req.path})")
                result = fn(self, req, **m.groupdict())
                if result is not None:  # (code, object); streams answer themselves
                    code, obj = result
                    req.h.send_json(code, obj, req.warnings)
                return
        raise ApiError(404, _not_served(req.path))


def _not_served(path: str) -> str:
    m = re.match(r"^/api/v1/(?:namespaces/[^/]+/)?([^/]+)", path)
    if m:
        return (f'the server could not find the requested resource (minipod serves pods, '
                f'their events, configmaps and secrets; not "{m.group(1)}")')
    return "the server could not find the requested resource"


def serve(cfg, host: str, port: int, ready=None, config_path: str | None = None) -> None:
    """Run until SIGINT/SIGTERM. ready(port) is called once the socket listens."""
    import signal

    from minipod.api import certs

    certs.ensure(cfg.root)
    api = Api(cfg, certs.token(cfg.root), config_path)
    handler = type("BoundHandler", (Handler,), {"api": api})
    srv = Server((host, port), handler, certs.server_context(cfg.root))
    port = srv.server_address[1]
    path = certs.write_kubeconfig(cfg.root, host, port)
    api.hub.start()

    def stop(*_):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if ready:
        ready(port, path)
    try:
        srv.serve_forever(poll_interval=0.5)
    finally:
        api.hub.stop()
        srv.server_close()
        from minipod.api.exec import kill_tree

        for s in list(api.sessions):  # an exec must not outlive the server that relays it
            if s.proc is not None and s.proc.poll() is None:
                kill_tree(s.proc.pid)

