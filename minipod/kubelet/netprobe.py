"""httpGet and tcpSocket handlers, made by minipod itself from the host's network namespace to
the pod IP (or `host`), so the image needs no curl or nc; with the kubelet's words.

HTTP 200-399 = success; redirects are followed within the same host, as the kubelet's client
does (Go's http.Client). HTTPS skips certificate verification. socket and ssl are imported in
the child that needs them (the supervisor imports this module).
"""

from __future__ import annotations

import json
import time

BODY_LIMIT = 10 * 1024        # the kubelet's maxRespBodyLength
MAX_REDIRECTS = 10            # Go's http.Client default, kept by the kubelet
REDIRECTS = (301, 302, 303, 307, 308)  # the codes Go's client follows


def hostport(host: str, port: int) -> str:
    """Go's net.JoinHostPort: IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gostr(s: str) -> str:
    """Go's %q, near enough for messages."""
    return json.dumps(s, ensure_ascii=False)


class _Timeout(Exception):
    pass


class _Failed(Exception):
    pass


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Timeout()
    return left


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def _dial(host: str, port: int, deadline: float | None):
    """Connect like Go's net.Dial: every address of host in turn; Go's error words."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise _Failed(f"dial tcp: lookup {host}: {_lower_first(e.strerror or str(e))}") \
            from None
    error = f"dial tcp {hostport(host, port)}: no addresses"
    for family, kind, proto, _, addr in infos:
        where = hostport(addr[0], addr[1])
        s = socket.socket(family, kind, proto)
        try:
            s.settimeout(_remaining(deadline))
            s.connect(addr)
            return s
        except (_Timeout, TimeoutError):
            s.close()
            raise _Timeout(f"dial tcp {where}: i/o timeout") from None
        except OSError as e:
            s.close()
            error = f"dial tcp {where}: connect: {_lower_first(e.strerror or str(e))}"
    raise _Failed(error)


def run_tcp(action, deadline: float | None) -> tuple[bool, str]:
    try:
        _dial(action.host, action.port, deadline).close()
    except _Timeout as e:
        return False, str(e) or f"dial tcp {action.netloc}: i/o timeout"
    except _Failed as e:
        return False, str(e)
    return True, ""


def run_http(action, deadline: float | None) -> tuple[bool, str]:
    """GET action.url the way the kubelet's prober does; (ok, message)."""
    from urllib.parse import urljoin, urlsplit

    scheme, host, port, target = action.scheme, action.host, action.port, action.target
    headers = list(action.headers)  # headers[0] is Host (see _headers)
    custom_host = headers[0][1] != action.netloc
    url = action.url
    for hop in range(MAX_REDIRECTS + 1):
        try:
            code, fields, body = http_once(scheme, host, port, target, headers, deadline)
        except _Timeout:
            return False, (f"Get {gostr(url)}: context deadline exceeded "
                           "(Client.Timeout exceeded while awaiting headers)")
        except _Failed as e:
            return False, f"Get {gostr(url)}: {e}"
        location = fields.get("location")
        if code in REDIRECTS and location:
            new = urljoin(url, location)
            parts = urlsplit(new)
            if (parts.hostname or "") != action.host.lower():
                # The kubelet does not follow a redirect to another host: it reports the 3xx as
                # a success with a warning (probe.Warning).
                return True, f"Probe terminated redirects, Response body: {body}"
            if hop == MAX_REDIRECTS:
                return False, f"Get {gostr(new)}: stopped after {MAX_REDIRECTS} redirects"
            try:
                new_port = parts.port
            except ValueError:
                return False, f"Get {gostr(new)}: invalid port in redirect"
            if parts.scheme not in ("http", "https"):
                return False, f'Get {gostr(new)}: unsupported protocol scheme "{parts.scheme}"'
            scheme = parts.scheme
            port = new_port or (443 if scheme == "https" else 80)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            # Go keeps a custom Host header only through a relative redirect.
            if not (custom_host and not urlsplit(location).netloc):
                headers[0] = ("Host", parts.netloc)
            url = new
            continue
        if 200 <= code < 300:
            return True, ""
        if 300 <= code < 400:
            return True, f"Probe terminated redirects, Response body: {body}"
        return False, f"HTTP probe failed with statuscode: {code}"
    return False, f"Get {gostr(url)}: stopped after {MAX_REDIRECTS} redirects"


def request_bytes(target: str, headers: list[tuple[str, str]] | tuple) -> bytes:
    lines = [f"GET {target} HTTP/1.1"] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status code and the (lower-cased) header fields of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if (len(status) < 2 or not status[0].startswith("HTTP/1.") or len(status[1]) != 3
            or not status[1].isdigit()):
        raise _Failed("net/http: HTTP/1.x transport connection broken: "
                      f"malformed HTTP response {gostr(lines[0][:80])}")
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return int(status[1]), fields


def http_once(scheme: str, host: str, port: int, target: str, headers: list[tuple[str, str]],
              deadline: float | None) -> tuple[int, dict[str, str], str]:
    """One GET over a fresh connection: (status code, header fields, start of the body)."""
    import socket

    sock = _dial(host, port, deadline)
    try:
        if scheme == "https":
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the kubelet's InsecureSkipVerify
            sni = None if _is_ip(host) else host
            try:
                sock.settimeout(_remaining(deadline))
                sock = ctx.wrap_socket(sock, server_hostname=sni)
            except ssl.SSLError as e:
                raise _Failed(f"tls: {e.reason or e}") from None
        try:
            sock.settimeout(_remaining(deadline))
            sock.sendall(request_bytes(target, headers))
            data = b""
            while True:
                head, sep, rest = data.partition(b"\r\n\r\n")
                if sep:
                    code, fields = parse_head(head)
                    if 100 <= code < 200 and code != 101:
                        data = rest  # an interim response (100 Continue): the real one follows
                        continue
                    break
                if len(data) > 65536:
                    raise _Failed("net/http: HTTP/1.x transport connection broken: "
                                  "response headers too long")
                sock.settimeout(_remaining(deadline))
                chunk = sock.recv(65536)
                if not chunk:
                    raise _Failed("EOF" if not data else "unexpected EOF")
                data += chunk
            body = rest
            if 300 <= code < 400:  # the body only matters for the redirect warning
                try:
                    while len(body) < BODY_LIMIT:
                        sock.settimeout(_remaining(deadline))
                        chunk = sock.recv(BODY_LIMIT)
                        if not chunk:
                            break
                        body += chunk
                except (_Timeout, OSError):
                    pass
            return code, fields, body[:BODY_LIMIT].decode(errors="replace")
        except (socket.timeout, TimeoutError):
            raise _Timeout() from None
        except OSError as e:
            raise _Failed(f"read tcp {hostport(host, port)}: "
                          f"{_lower_first(e.strerror or str(e))}") from None
    finally:
        sock.close()


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False
