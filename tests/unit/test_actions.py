"""minipod.kubelet.actions, netprobe and incontainer without a container: handler parsing, named ports, the kubelet's messages,
HTTP/TCP against servers on loopback, commands on the host, spawn/finish round trips.
(Exec inside a real container: tests/integration/test_actions.py.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from plans import container_plan

from minipod.kubelet import actions, incontainer, netprobe
from minipod.pod import child
from minipod.kubelet.actions import Action, ActionError, Running, parse

C = container_plan("web", env=["PATH=/usr/bin:/bin"],
                   spec={"ports": [{"name": "http", "containerPort": 8080},
                                   {"name": "metrics", "containerPort": 9100}]})
IP = "10.244.0.5"


def deadline(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


# --- parse: handlers resolved against the container ------------------------------------------

def test_parse_exec():
    assert parse({"exec": {"command": ["cat", "/tmp/healthy"]}}, C, IP) == \
        Action("exec", argv=("cat", "/tmp/healthy"))


@pytest.mark.parametrize("handler, message", [
    ({}, "none of exec, httpGet, tcpSocket, sleep"),
    ({"exec": {"command": []}}, "exec.command: must not be empty"),
    ({"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}},
     "only one action may be set (got exec, tcpSocket)"),
    ({"grpc": {"port": 70000}}, "grpc.port: invalid port number: 70000"),
    ({"sleep": {"seconds": -1}}, "sleep.seconds"),
    ({"httpGet": {"port": "grpc"}},
     'httpGet.port: container "web" has no port named "grpc" '
     '(its named ports: http=8080, metrics=9100)'),
    ({"tcpSocket": {"port": 0}}, "tcpSocket.port: invalid port number: 0"),
    ({"tcpSocket": {"port": 70000}}, "invalid port number: 70000"),
    ({"httpGet": {"port": 80, "scheme": "FTP"}}, "expected HTTP or HTTPS"),
    ({"httpGet": {"port": 80, "httpHeaders": [{"name": "X-A", "value": "a\r\nEvil: 1"}]}},
     "httpHeaders[0]: invalid header"),
    ({"httpGet": {"port": 80, "httpHeaders": [{"name": "Bad Name", "value": "x"}]}},
     "httpHeaders[0]"),
])
def test_parse_rejects_with_a_message_that_names_the_field(handler, message):
    with pytest.raises(ActionError, match=re.escape(message)):
        parse(handler, C, IP)


def test_parse_grpc():
    assert parse({"grpc": {"port": 9000}}, C, IP) == Action("grpc", host=IP, port=9000)
    assert parse({"grpc": {"port": 9000, "service": "db", "mode": "TLS"}}, C, IP) == \
        Action("grpc", host=IP, port=9000, service="db", scheme="https")


def test_parse_http_defaults_are_the_kubelets():
    a = parse({"httpGet": {"port": 80}}, C, IP)
    assert a.url == "http://10.244.0.5:80/"
    assert a.headers == (("Host", "10.244.0.5:80"), ("User-Agent", "kube-probe/1.31"),
                         ("Accept", "*/*"), ("Connection", "close"))


def test_parse_named_and_numeric_string_ports():
    assert parse({"httpGet": {"port": "http"}}, C, IP).port == 8080
    assert parse({"tcpSocket": {"port": "metrics"}}, C, IP).port == 9100
    assert parse({"tcpSocket": {"port": "81"}}, C, IP).port == 81  # the kubelet's last resort


def test_parse_no_named_ports_says_none():
    with pytest.raises(ActionError, match=r"its named ports: none"):
        parse({"tcpSocket": {"port": "http"}}, container_plan("x"), IP)


def test_parse_host_scheme_path_and_query():
    a = parse({"httpGet": {"port": 8443, "host": "127.0.0.1", "scheme": "HTTPS",
                           "path": "healthz?verbose=1#frag"}}, C, IP)
    assert a.url == "https://127.0.0.1:8443/healthz?verbose=1"
    assert parse({"httpGet": {"port": 80, "path": "/a b"}}, C, IP).target == "/a%20b"
    assert parse({"httpGet": {"port": 80, "path": "/x%2Fy"}}, C, IP).target == "/x%2Fy"


def test_parse_ipv6_pod_ip_is_bracketed():
    a = parse({"httpGet": {"port": 80}}, C, "fd00::5")
    assert a.url == "http://[fd00::5]:80/"
    assert a.headers[0] == ("Host", "[fd00::5]:80")
    assert parse({"tcpSocket": {"port": 80}}, C, "fd00::5").describe() == "dial tcp [fd00::5]:80"


def test_parse_needs_a_pod_ip_or_a_host():
    with pytest.raises(ActionError, match="the pod has no IP"):
        parse({"tcpSocket": {"port": 80}}, C, "")


def test_parse_headers_override_the_defaults():
    a = parse({"httpGet": {"port": 80, "httpHeaders": [
        {"name": "Host", "value": "example.test"}, {"name": "user-agent", "value": "me"},
        {"name": "Accept", "value": ""}, {"name": "X-Probe", "value": "1"},
        {"name": "X-Probe", "value": "2"}]}}, C, IP)
    assert a.headers == (("Host", "example.test"), ("user-agent", "me"), ("X-Probe", "1"),
                         ("X-Probe", "2"), ("Connection", "close"))


def test_request_bytes_and_parse_head():
    assert netprobe.request_bytes("/x", [("Host", "h:1"), ("A", "b")]) == \
        b"GET /x HTTP/1.1\r\nHost: h:1\r\nA: b\r\n\r\n"
    code, fields = netprobe.parse_head(b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nX:  y ")
    assert code == 302 and fields == {"location": "/ok", "x": "y"}
    assert netprobe.parse_head(b"HTTP/1.0 200")[0] == 200
    with pytest.raises(netprobe._Failed, match='malformed HTTP response "SSH-2.0-OpenSSH"'):
        netprobe.parse_head(b"SSH-2.0-OpenSSH")


def test_messages():
    assert actions.timeout_message(Action("exec", argv=("sleep", "5"))) == \
        'command "sleep 5" timed out'
    assert actions.timeout_message(Action("tcpSocket", host=IP, port=81)) == \
        "dial tcp 10.244.0.5:81: i/o timeout"
    assert actions.timeout_message(parse({"httpGet": {"port": 80}}, C, IP)) == \
        ('Get "http://10.244.0.5:80/": context deadline exceeded '
         "(Client.Timeout exceeded while awaiting headers)")
    assert child.exec_error("nc", FileNotFoundError(2, "x")) == \
        'exec: "nc": executable file not found in $PATH'
    assert child.exec_error("/bin/nc", FileNotFoundError(2, "x")) == \
        'exec: "/bin/nc": stat /bin/nc: no such file or directory'
    assert child.exec_error("/etc", PermissionError(13, "Permission denied")) == \
        'exec: "/etc": permission denied'


# --- HTTP against a server on loopback -----------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        port = self.server.server_address[1]
        routes = {
            "/ok": (200, {}), "/created": (201, {}), "/missing": (404, {}), "/boom": (500, {}),
            "/redirect": (302, {"Location": "/ok"}),
            "/redirect-abs": (301, {"Location": f"http://127.0.0.1:{port}/ok"}),
            "/redirect-boom": (307, {"Location": "/boom"}),
            "/away": (302, {"Location": f"http://localhost:{port}/ok"}),
            "/loop": (302, {"Location": "/loop"}),
            "/not-modified": (304, {}),
        }
        code, headers = routes.get(self.path.split("?")[0], (404, {}))
        body = f"body of {self.path}".encode()
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        if code != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if code != 304:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.seen = []
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def http(srv, path: str, headers: list | None = None, scheme: str = "HTTP",
         seconds: float = 5.0) -> tuple[bool, str]:
    a = parse({"httpGet": {"port": srv.server_address[1], "host": "127.0.0.1", "path": path,
                           "scheme": scheme, "httpHeaders": headers or []}}, C, IP)
    return netprobe.run_http(a, deadline(seconds))


def test_http_success_and_what_the_server_sees(server):
    assert http(server, "/ok", [{"name": "X-Probe", "value": "yes"}]) == (True, "")
    assert http(server, "/created") == (True, "")
    path, headers = server.seen[0]
    port = server.server_address[1]
    assert path == "/ok"
    assert headers["user-agent"] == "kube-probe/1.31"
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["accept"] == "*/*"
    assert headers["x-probe"] == "yes"


def test_http_failure_status(server):
    assert http(server, "/missing") == (False, "HTTP probe failed with statuscode: 404")
    assert http(server, "/boom") == (False, "HTTP probe failed with statuscode: 500")


def test_http_follows_same_host_redirects(server):
    assert http(server, "/redirect") == (True, "")
    assert http(server, "/redirect-abs") == (True, "")
    assert [p for p, _ in server.seen] == ["/redirect", "/ok", "/redirect-abs", "/ok"]
    assert http(server, "/redirect-boom") == (False, "HTTP probe failed with statuscode: 500")


def test_http_custom_host_is_kept_through_a_relative_redirect(server):
    assert http(server, "/redirect", [{"name": "Host", "value": "app.test"}]) == (True, "")
    assert [h["host"] for _, h in server.seen] == ["app.test", "app.test"]


def test_http_redirect_to_another_host_is_a_success_with_a_warning(server):
    ok, msg = http(server, "/away")
    assert ok
    assert msg == "Probe terminated redirects, Response body: body of /away"
    assert [p for p, _ in server.seen] == ["/away"]  # not followed


def test_http_3xx_without_location_is_a_success(server):
    assert http(server, "/not-modified")[0]


def test_http_redirect_loop_stops_after_ten(server):
    port = server.server_address[1]
    assert http(server, "/loop") == \
        (False, f'Get "http://127.0.0.1:{port}/loop": stopped after 10 redirects')
    assert len(server.seen) == 11


def test_http_connection_refused():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = parse({"httpGet": {"port": port, "host": "127.0.0.1", "path": "/healthz"}}, C, IP)
    assert netprobe.run_http(a, deadline()) == (
        False, f'Get "http://127.0.0.1:{port}/healthz": dial tcp 127.0.0.1:{port}: connect: '
               "connection refused")


def test_http_timeout_when_the_server_never_answers():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        port = s.getsockname()[1]
        a = parse({"httpGet": {"port": port, "host": "127.0.0.1"}}, C, IP)
        assert netprobe.run_http(a, deadline(0.3)) == (False, actions.timeout_message(a))


def test_http_not_http():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]

        def answer():
            conn, _ = s.accept()
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            conn.close()

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        a = parse({"httpGet": {"port": port, "host": "127.0.0.1"}}, C, IP)
        ok, msg = netprobe.run_http(a, deadline())
        t.join()
    assert not ok
    assert msg.endswith('malformed HTTP response "SSH-2.0-OpenSSH_9.2"')


@pytest.fixture
def tls_server(server, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=not-this-host"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    return server


def test_https_without_certificate_verification(tls_server):
    # A self-signed certificate for another name: the kubelet does not verify it either.
    assert http(tls_server, "/ok", scheme="HTTPS") == (True, "")
    assert http(tls_server, "/boom", scheme="HTTPS") == \
        (False, "HTTP probe failed with statuscode: 500")


# --- TCP ----------------------------------------------------------------------------------

def test_tcp_success_and_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        a = Action("tcpSocket", host="127.0.0.1", port=port)
        assert netprobe.run_tcp(a, deadline()) == (True, "")
    assert netprobe.run_tcp(a, deadline()) == \
        (False, f"dial tcp 127.0.0.1:{port}: connect: connection refused")


def test_tcp_timeout_when_the_backlog_is_full():
    # listen(0) queues one connection; once it is taken the kernel drops further SYNs.
    with socket.socket() as s, socket.socket() as first:
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        port = s.getsockname()[1]
        first.connect(("127.0.0.1", port))
        a = Action("tcpSocket", host="127.0.0.1", port=port)
        assert netprobe.run_tcp(a, deadline(0.3)) == \
            (False, f"dial tcp 127.0.0.1:{port}: i/o timeout")


# --- commands (on the host: the container part is in the integration tests) -----------------

@pytest.fixture
def proc_fd():
    fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


ENV = {"PATH": "/usr/bin:/bin"}


def command(argv, proc_fd, timeout=5.0, env=None) -> tuple[bool, str]:
    return incontainer.run_command(argv, lambda keep: dict(env or ENV), timeout, proc_fd)


def test_command_success_and_failure_with_combined_output(proc_fd):
    assert command(["true"], proc_fd) == (True, "")
    assert command(["sh", "-c", "echo out; echo err >&2; exit 3"], proc_fd) == \
        (False, "command 'sh -c echo out; echo err >&2; exit 3' exited with 3: out\nerr")


def test_command_gets_the_environment_and_no_stdin(proc_fd):
    ok, msg = command(["sh", "-c", 'echo "$GREETING"; cat; exit 1'], proc_fd,
                      env={**ENV, "GREETING": "hi there"})
    assert msg == "command 'sh -c echo \"$GREETING\"; cat; exit 1' exited with 1: hi there"


def test_command_output_is_truncated(proc_fd):
    ok, msg = command(["sh", "-c", "head -c 50000 /dev/zero | tr '\\0' x; exit 1"], proc_fd)
    assert not ok
    assert msg.endswith("x" * incontainer.OUTPUT_LIMIT)
    assert len(msg) < incontainer.OUTPUT_LIMIT + 100


def test_command_killed_by_a_signal_reports_128_plus_n(proc_fd):
    assert command(["sh", "-c", "kill -9 $$"], proc_fd) == \
        (False, "command 'sh -c kill -9 $$' exited with 137:")


def test_command_not_found_and_prepare_failure(proc_fd):
    assert command(["no-such-command"], proc_fd) == (
        False, 'unable to start container process: exec: "no-such-command": '
               "executable file not found in $PATH")

    def prepare(keep):
        raise OSError(2, 'resolve user app: user "app" not found in the image\'s /etc/passwd')

    ok, msg = incontainer.run_command(["true"], prepare, 5.0, proc_fd)
    assert (ok, msg) == (False, "unable to start container process: resolve user app: "
                                "user \"app\" not found in the image's /etc/passwd")


def _alive(pid: int) -> bool:
    """Running (a zombie left for its new parent to reap counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_command_timeout_kills_the_command_and_everything_it_started(proc_fd, tmp_path):
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}; sh -c 'sleep 60 & wait' & echo $! >> {pids}; sleep 60"
    assert command(["sh", "-c", script], proc_fd, timeout=0.5) == \
        (False, f'command "sh -c {script}" timed out')
    started = [int(p) for p in pids.read_text().split()]
    try:
        assert len(started) == 2
        for pid in started:
            assert not _alive(pid), f"pid {pid} survived the timeout"
    finally:
        for pid in started:  # if the test failed: leave nothing behind
            for kid in incontainer.descendants(pid, proc_fd) | {pid}:
                if _alive(kid):
                    os.kill(kid, signal.SIGKILL)


def test_command_leaving_a_background_process_does_not_hang(proc_fd, tmp_path):
    # The background sleep holds the output pipe; the result comes when the command exits.
    pidfile = tmp_path / "pid"
    ok, msg = command(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo bye; exit 2"],
                      proc_fd, timeout=30)
    try:
        assert (ok, msg) == (False, f"command 'sh -c sleep 60 & echo $! > {pidfile}; echo bye; "
                                    "exit 2' exited with 2: bye")
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_descendants(proc_fd):
    p = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    try:
        deadline_ = time.monotonic() + 10
        while len(found := incontainer.descendants(p.pid, proc_fd)) < 2 and \
                time.monotonic() < deadline_:
            time.sleep(0.01)
        assert len(found) == 2
        assert incontainer.descendants(os.getpid(), proc_fd) >= found | {p.pid}
    finally:
        incontainer.kill_tree(p.pid, proc_fd)
        p.wait()
    assert p.returncode == -signal.SIGKILL


# --- spawn + waitpid + finish, as the supervisor does it -----------------------------------

def spawn(handler, timeout=5.0, pid=0) -> tuple[bool, str]:
    r = actions.spawn(handler, C, pid, "127.0.0.1", None, timeout)
    assert r.pid > 0 and r.fd >= 0
    _, status = os.waitpid(r.pid, 0)
    result = r.finish(status)
    assert r.fd == -1
    return result


def test_spawn_tcp_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert spawn({"tcpSocket": {"port": port}}) == \
        (False, f"dial tcp 127.0.0.1:{port}: connect: connection refused")


def test_spawn_sleep():
    assert spawn({"sleep": {"seconds": 0}}) == (True, "")
    assert spawn({"sleep": {"seconds": 30}}, timeout=0.2) == \
        (False, "container terminated before sleep hook finished")


def test_spawn_never_raises_for_a_bad_handler():
    assert spawn({"httpGet": {"port": "nope"}}) == (False, 'httpGet.port: container "web" '
                                                           'has no port named "nope" (its '
                                                           'named ports: http=8080, '
                                                           'metrics=9100)')
    assert spawn({"exec": {"command": ["true"]}}, pid=0) == \
        (False, 'container "web" is not running')


def test_spawn_does_not_leak_fds():
    before = set(os.listdir("/proc/self/fd"))
    spawn({"sleep": {"seconds": 0}})
    assert set(os.listdir("/proc/self/fd")) == before


def test_cancel():
    r = actions.spawn({"sleep": {"seconds": 60}}, C, 0, IP, None, None)
    r.cancel()
    _, status = os.waitpid(r.pid, 0)
    assert r.finish(status) == (False, "sleep 60s: handler killed by SIGKILL")
    r.cancel()  # gone = done


def _running(message: bytes = b"", **kw) -> Running:
    r, w = os.pipe()
    os.write(w, message)
    os.close(w)
    return Running(pid=0, fd=r, what="GET http://x:80/", **kw)


@pytest.mark.parametrize("status, kw, message, expected", [
    (0, {}, b"", (True, "")),
    (0, {}, b"Probe terminated redirects\n", (True, "Probe terminated redirects")),
    (1 << 8, {}, b"HTTP probe failed with statuscode: 503",
     (False, "HTTP probe failed with statuscode: 503")),
    (2 << 8, {}, b"", (False, "GET http://x:80/: handler exited with status 2")),
    (signal.SIGALRM, {"timeout_message": "timed out!"}, b"", (False, "timed out!")),
    (signal.SIGKILL, {}, b"", (False, "GET http://x:80/: handler killed by SIGKILL")),
    (1 << 8, {"error": "join cgroup x: No such file"}, b"",
     (False, "join cgroup x: No such file")),
])
def test_finish_interprets_the_wait_status(status, kw, message, expected):
    assert _running(message, **kw).finish(status) == expected
