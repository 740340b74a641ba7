"""A client for the pull side of the Registry HTTP API v2 (the OCI distribution spec).

One `Client` talks to one endpoint (a registry or a mirror, see registries.py) about one
repository: HEAD/GET a manifest, GET a small blob into memory, download a layer blob into a
file -- resuming a partial one with a Range request -- while hashing every byte.

Auth: a request is sent without credentials first; a 401 carries `WWW-Authenticate`:
  - `Bearer realm=...,service=...,scope=...`: GET the realm for a token (anonymously, or with
    Basic credentials, or POST a refresh token when the auth file holds an identity token) and
    retry with `Authorization: Bearer <token>`; the token is reused for the rest of the pull;
  - `Basic realm=...`: retry with Basic credentials.
Redirects are followed here, not by urllib3, so that Authorization is sent only to the
endpoint's own scheme://host:port: Docker Hub redirects blob GETs to a CDN with a signed URL,
and the CDN rejects (or would log) a forwarded registry token.

Retries: connection resets, timeouts, 500/502/503/504 and a 429 that asks for a short wait are
retried (with back-off); a refused connection or an unknown host name fails at once (retrying
those only makes the error slower). Errors are RegistryError subclasses with a one-line reason;
pull.py puts the image and the endpoint in front.

urllib3 (no dependencies of its own, ~40 ms to import) is imported only by this module, and this
module only when something must be fetched, so `minipod run` of a present image never pays it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Callable

import urllib3
from urllib3.exceptions import HTTPError as _HTTPError

from minipod.errors import MinipodError
from minipod.images.registries import Credentials, Endpoint

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEXES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
MANIFESTS = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
ACCEPT = ", ".join((MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST))
MANIFEST_MAX = 4 << 20  # distribution refuses manifests above 4 MiB too
USER_AGENT = "minipod/0.1"
_CHUNK = 1 << 20  # reading back a partial file
_STREAM_CHUNK = 256 << 10
_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT = (500, 502, 503, 504)


class RegistryError(MinipodError):
    """A registry request failed; the message is one line without the image or endpoint."""


class Unreachable(RegistryError):
    """No connection, no answer, TLS failure: the endpoint is not there (try the next one)."""


class NotFoundError(RegistryError):
    """404: the repository, tag or blob does not exist there."""


class AuthError(RegistryError):
    """401/403: credentials are missing, wrong, or do not grant pull access."""


class RateLimited(RegistryError):
    """429 Too Many Requests (Docker Hub's anonymous pull limit)."""


class BadContent(RegistryError):
    """What the registry sent is not what was asked for (digest, size, format)."""


@dataclass(frozen=True)
class Manifest:
    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict:
        return json.loads(self.data)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hasher(digest: str):
    algo = digest.partition(":")[0]
    if algo not in ("sha256", "sha384", "sha512"):
        raise BadContent(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algo)


def media_type(data: bytes, content_type: str = "") -> str:
    """A manifest's media type: its `mediaType` field, else Content-Type, else by shape.

    OCI manifests may omit `mediaType`, and some registries send `application/json`.
    """
    try:
        obj = json.loads(data)
    except ValueError:
        raise BadContent("manifest is not JSON") from None
    if not isinstance(obj, dict):
        raise BadContent("manifest is not a JSON object")
    kind = obj.get("mediaType") or ""
    ct = content_type.split(";")[0].strip()
    if not kind and ct not in ("", "application/json", "text/plain", "application/octet-stream"):
        kind = ct
    if not kind:
        if obj.get("schemaVersion") == 1:
            kind = MEDIA_SCHEMA1[0]
        elif "manifests" in obj:
            kind = MEDIA_OCI_INDEX
        elif "layers" in obj and "config" in obj:
            kind = MEDIA_OCI_MANIFEST
    if kind in MEDIA_SCHEMA1 or obj.get("schemaVersion") == 1:
        raise BadContent(
            "the registry only has a Docker schema 1 manifest for it; schema 1 is deprecated "
            "and not supported (re-push the image with a current docker/buildah/skopeo)"
        )
    if kind not in INDEXES + MANIFESTS:
        raise BadContent(f"unsupported manifest media type {kind or '(none)'!r}")
    return kind


def host_platform() -> tuple[str, str]:
    """(architecture, variant) of this machine as OCI names it: ("amd64", ""), ("arm", "v7")."""
    from minipod.images.store import host_arch

    arch = host_arch()
    machine = os.uname().machine
    variant = ""
    if arch == "arm":
        variant = "v" + machine[4] if machine.startswith("armv") and len(machine) > 4 else "v7"
    elif arch == "arm64":
        variant = "v8"
    return arch, variant


def pick_platform(index: dict, arch: str, variant: str = "") -> dict | None:
    """The descriptor for linux/<arch>[/<variant>] in an index, or None.

    An exact variant match wins; an entry without a variant comes next (arm64 images rarely
    say v8). Attestation entries (platform unknown/unknown) never match.
    """
    best, best_rank = None, 0
    for entry in index.get("manifests") or []:
        p = entry.get("platform") or {}
        if p.get("os") != "linux" or p.get("architecture") != arch:
            continue
        v = p.get("variant") or ""
        rank = 3 if v == variant else 2 if not v else 1 if not variant else 0
        if rank > best_rank:
            best, best_rank = entry, rank
    return best


def platforms(index: dict) -> str:
    names = []
    for entry in index.get("manifests") or []:
        p = entry.get("platform") or {}
        if p.get("os") and p.get("os") != "unknown":
            names.append("/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x))
    return ", ".join(names) or "none"


# -- the client -----------------------------------------------------------------------------


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="https://auth",service="x",scope="a:b:pull"' -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)\s*=\s*"([^"]*)"', rest)}
    for k, v in re.findall(r'(\w+)\s*=\s*([^",\s]+)', rest):
        params.setdefault(k.lower(), v)
    return scheme.lower(), params


def _origin(url: str) -> tuple[str, str]:
    u = urllib3.util.parse_url(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return (u.scheme or "", f"{(u.host or '').lower()}:{port}")


def _error_detail(resp) -> str:
    """'MANIFEST_UNKNOWN: manifest unknown' from a registry's JSON error body, if any."""
    try:
        body = json.loads(resp.data[:65536] or b"{}")
        errs = body.get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errs if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)[:300]
    except (ValueError, AttributeError, TypeError):
        pass
    return ""


def _connection_reason(e: BaseException, timeout: float) -> tuple[str, bool]:
    """(one-line reason, worth retrying) for a urllib3/socket exception."""
    from urllib3.exceptions import (
        ConnectTimeoutError,
        NameResolutionError,
        NewConnectionError,
        ProtocolError,
        ReadTimeoutError,
        SSLError,
    )

    if isinstance(e, NameResolutionError):
        return "cannot resolve the host name (no network or no DNS?)", False
    # NewConnectionError is a subclass of ConnectTimeoutError in urllib3 2: test it first.
    if isinstance(e, NewConnectionError):
        cause = e.__cause__ or e.__context__
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(e):
            return "connection refused (is the registry running?)", False
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot connect: {cause.strerror}", False
        return f"cannot connect: {e}", False
    if isinstance(e, ConnectTimeoutError):
        return f"no connection within {timeout:g}s", True
    if isinstance(e, ReadTimeoutError):
        return f"no answer within {timeout:g}s", True
    if isinstance(e, SSLError):
        msg = str(e.args[0] if e.args else e)
        hint = ""
        if "WRONG_VERSION_NUMBER" in msg.upper() or "wrong version number" in msg:
            hint = " (a plain-HTTP registry? set insecure = true for it in registries.toml)"
        elif "CERTIFICATE_VERIFY_FAILED" in msg.upper():
            hint = " (a self-signed certificate? set skip_verify = true for it in registries.toml)"
        return f"TLS error: {msg[:200]}{hint}", False
    if isinstance(e, ProtocolError):
        return f"connection broken: {e.args[0] if e.args else e}", True
    return f"{type(e).__name__}: {e}", True


class Client:
    def __init__(
        self,
        endpoint: Endpoint,
        repository: str,
        credentials: Callable[[str], Credentials | None] | None = None,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.repository = repository
        self._credentials = credentials or (lambda host: None)
        self.retries = retries
        self.backoff = backoff
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._read_timeout = read_timeout
        if pool is None:
            kw = {} if endpoint.verify else {"cert_reqs": "CERT_NONE", "assert_hostname": False}
            if not endpoint.verify:
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            pool = urllib3.PoolManager(num_pools=4, maxsize=8, retries=False, **kw)
        self._pool = pool
        self._origin = _origin(endpoint.url)
        self._auth: str = ""  # the Authorization header value once we have one
        self._auth_failed = False

    # -- plumbing ------------------------------------------------------------------------

    def _name(self, ref: str) -> str:
        """How errors name a manifest: "library/busybox:latest", "team/app@sha256:..."."""
        return f"{self.repository}{'@' if ':' in ref else ':'}{ref}"

    def _url(self, kind: str, ref: str) -> str:
        return f"{self.endpoint.url}/v2/{self.repository}/{kind}/{ref}"

    def _follow(self, method: str, url: str, headers: dict, stream: bool, auth: str):
        """One request, following redirects; Authorization only to our own origin."""
        for _ in range(10):
            h = {"User-Agent": USER_AGENT, **headers}
            if auth and _origin(url) == self._origin:
                h["Authorization"] = auth
            resp = self._pool.request(method, url, headers=h, redirect=False, retries=False,
                                      preload_content=not stream, timeout=self.timeout)
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            _drain(resp)
            url = urllib3.util.parse_url(location).url if "://" in location else _join(url, location)
            if resp.status == 303:
                method = "GET"
        raise RegistryError(f"{method} {url}: too many redirects")

    def _send(self, method: str, url: str, headers: dict | None = None, stream: bool = False):
        """A request with auth, retries and redirects; returns the final response (any status
        except 401 after a successful auth round, transient ones after the retries)."""
        headers = headers or {}
        attempt = 0
        authed = False
        while True:
            try:
                resp = self._follow(method, url, headers, stream, self._auth)
            except _HTTPError as e:
                reason, transient = _connection_reason(e, self._read_timeout)
                if transient and attempt < self.retries:
                    attempt += 1
                    self._sleep(attempt, None)
                    continue
                raise Unreachable(reason) from None
            if resp.status == 401 and not authed:
                challenge = resp.headers.get("WWW-Authenticate", "")
                _drain(resp)
                self._authenticate(challenge)
                authed = True
                continue
            retry_after = _retry_after(resp)
            if (resp.status in _TRANSIENT or (resp.status == 429 and retry_after is not None and retry_after <= 10)) \
                    and attempt < self.retries:
                _drain(resp)
                attempt += 1
                self._sleep(attempt, retry_after)
                continue
            return resp

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        time.sleep(retry_after if retry_after is not None else self.backoff * (2 ** (attempt - 1)))

    def _authenticate(self, challenge: str) -> None:
        scheme, params = _parse_challenge(challenge)
        creds = self._credentials(self.endpoint.host)
        if creds and creds.registry_token:
            self._auth = f"Bearer {creds.registry_token}"
            return
        if scheme == "basic":
            if not creds or not creds.username:
                raise AuthError("authentication required (Basic) and no credentials are configured for "
                                f"{self.endpoint.host}")
            self._auth = "Basic " + _b64(f"{creds.username}:{creds.password}")
            return
        if scheme != "bearer" or not params.get("realm"):
            raise AuthError(f"401 Unauthorized with an unsupported challenge {challenge[:100]!r}")
        self._auth = "Bearer " + self._token(params, creds)

    def _token(self, params: dict[str, str], creds: Credentials | None) -> str:
        from urllib.parse import urlencode

        realm = params["realm"]
        scope = params.get("scope") or f"repository:{self.repository}:pull"
        fields = {"scope": scope}
        if params.get("service"):
            fields["service"] = params["service"]
        token_url = realm + ("&" if "?" in realm else "?") + urlencode(fields)
        try:
            if creds and creds.identity_token:
                resp = self._pool.request(
                    "POST", realm, fields={**fields, "grant_type": "refresh_token",
                                           "refresh_token": creds.identity_token, "client_id": "minipod"},
                    encode_multipart=False, headers={"User-Agent": USER_AGENT}, timeout=self.timeout,
                    retries=False)
            else:
                headers = {"User-Agent": USER_AGENT}
                if creds and creds.username:
                    headers["Authorization"] = "Basic " + _b64(f"{creds.username}:{creds.password}")
                resp = self._pool.request("GET", token_url, headers=headers,
                                          timeout=self.timeout, retries=urllib3.Retry(total=self.retries,
                                          backoff_factor=self.backoff, status_forcelist=_TRANSIENT,
                                          redirect=5, remove_headers_on_redirect=["Authorization"]))
        except _HTTPError as e:
            raise Unreachable(f"token server {realm}: {_connection_reason(e, self._read_timeout)[0]}") from None
        if resp.status in (401, 403):
            who = f"as {creds.username!r}" if creds and creds.username else "anonymously"
            raise AuthError(f"token server {realm} refused a token {who} for {scope} "
                            f"({resp.status}{': ' + _error_detail(resp) if _error_detail(resp) else ''})")
        if resp.status != 200:
            raise AuthError(f"token server {realm}: {resp.status} {resp.reason}")
        try:
            body = json.loads(resp.data)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise AuthError(f"token server {realm} answered without a token")
        return token

    def _fail(self, resp, what: str) -> RegistryError:
        """The error for a final non-success response (the body is read for its detail)."""
        detail = _error_detail(resp)
        status = f"{resp.status}{' ' + detail if detail else ''}"
        _drain(resp)
        if resp.status == 404:
            return NotFoundError(f"{what} not found ({status})")
        if resp.status in (401, 403):
            creds = self._credentials(self.endpoint.host)
            if creds and (creds.username or creds.identity_token or creds.registry_token):
                return AuthError(f"access to {what} denied with the configured credentials ({status})")
            return AuthError(f"access to {what} denied ({status}): the repository does not exist, "
                             f"or needs credentials for {self.endpoint.host} in the auth file")
        if resp.status == 429:
            return RateLimited(f"rate limit reached ({status}): wait, or pull with credentials "
                               "(a logged-in user has a higher limit), or use a mirror")
        return RegistryError(f"{what}: {resp.status} {resp.reason}{': ' + detail if detail else ''}")

    # -- API -----------------------------------------------------------------------------

    def head_manifest(self, ref: str) -> str | None:
        """The digest `ref` (tag or digest) points at, or None when the registry does not say
        (no Docker-Content-Digest header). Costs no Docker Hub pull quota."""
        resp = self._send("HEAD", self._url("manifests", ref), {"Accept": ACCEPT})
        _drain(resp)
        if resp.status != 200:
            raise self._fail(resp, self._name(ref))
        digest = resp.headers.get("Docker-Content-Digest", "")
        return digest if digest.startswith("sha256:") else None

    def get_manifest(self, ref: str) -> Manifest:
        """The manifest or index `ref` names, verified: its sha256 must equal the digest asked
        for (or the registry's Docker-Content-Digest header when asking by tag)."""
        resp = self._send("GET", self._url("manifests", ref), {"Accept": ACCEPT}, stream=True)
        if resp.status != 200:
            raise self._fail(resp, self._name(ref))
        data = _read_limited(resp, MANIFEST_MAX, f"manifest {ref}")
        if ":" in ref:
            h = _hasher(ref)
            h.update(data)
            got = f"{ref.partition(':')[0]}:{h.hexdigest()}"
            if got != ref:
                raise BadContent(f"manifest {ref}: the registry sent content that hashes to {got}")
        digest = sha256(data)
        header = resp.headers.get("Docker-Content-Digest", "")
        if header.startswith("sha256:") and header != digest and ":" not in ref:
            raise BadContent(f"manifest {ref}: content hashes to {digest} but the registry says {header}")
        # Parsed only once verified: nothing of an unverified manifest is believed.
        return Manifest(data, media_type(data, resp.headers.get("Content-Type", "")), digest)

    def get_blob(self, digest: str, limit: int = 16 << 20) -> bytes:
        """A small blob (an image config) into memory, verified."""
        resp = self._send("GET", self._url("blobs", digest), stream=True)
        if resp.status != 200:
            raise self._fail(resp, f"blob {digest}")
        data = _read_limited(resp, limit, f"blob {digest}")
        h = _hasher(digest)
        h.update(data)
        got = f"{digest.partition(':')[0]}:{h.hexdigest()}"
        if got != digest:
            raise BadContent(f"blob {digest}: content hashes to {got} (corrupt or tampered); not stored")
        return data

    def download(self, digest: str, path: str, size: int | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        """Fetch blob `digest` into the file `path`, resuming from what `path` already holds.

        The bytes already in `path` are hashed first, then the rest is asked for with a
        Range request (a 200 instead of 206 restarts from zero). A broken connection resumes
        the same way, up to `retries` times. On a digest mismatch the file is truncated to
        zero (so the next try starts clean) and BadContent is raised.
        """
        h = _hasher(digest)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "r+b") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
            offset = f.tell()
            if size is not None and offset > size:
                f.seek(0)
                f.truncate()
                h, offset = _hasher(digest), 0
            if progress and offset:
                progress(offset)
            attempt = 0
            while size is None or offset < size:
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                resp = self._send("GET", self._url("blobs", digest), headers, stream=True)
                complete = False  # the body was read to its end: the connection can be reused
                try:
                    if resp.status == 416 and offset:
                        _drain(resp)
                        f.seek(0)
                        f.truncate()
                        h, offset = _hasher(digest), 0
                        continue
                    if resp.status not in (200, 206):
                        raise self._fail(resp, f"blob {digest}")
                    if resp.status == 200 and offset:
                        # The server ignored the Range header: start over.
                        if progress:
                            progress(-offset)
                        f.seek(0)
                        f.truncate()
                        h, offset = _hasher(digest), 0
                    while chunk := resp.read1(_STREAM_CHUNK):  # what has arrived, so a break loses nothing
                        if size is not None and offset + len(chunk) > size:
                            raise BadContent(f"blob {digest}: the registry sent more than the {size} bytes "
                                             "the manifest promises")
                        f.write(chunk)
                        h.update(chunk)
                        offset += len(chunk)
                        if progress:
                            progress(len(chunk))
                    complete = True
                    if size is None:
                        break
                    if offset < size:
                        raise urllib3.exceptions.ProtocolError(f"body ended after {offset} of {size} bytes")
                except _HTTPError as e:
                    reason, _ = _connection_reason(e, self._read_timeout)
                    f.flush()
                    attempt += 1
                    if attempt > self.retries:
                        raise Unreachable(f"blob {digest}: {reason} (after {attempt} tries; "
                                          f"{offset} bytes kept to resume)") from None
                    self._sleep(attempt, None)
                finally:
                    if complete:
                        resp.release_conn()
                    else:
                        resp.close()  # unread body: never hand this connection out again
            got = f"{digest.partition(':')[0]}:{h.hexdigest()}"
            if got != digest:
                f.seek(0)
                f.truncate()
                raise BadContent(f"blob {digest}: content hashes to {got} (corrupt or tampered); not stored")
            f.flush()


def _b64(s: str) -> str:
    import base64

    return base64.b64encode(s.encode()).decode()


def _join(base: str, location: str) -> str:
    from urllib.parse import urljoin

    return urljoin(base, location)


def _drain(resp) -> None:
    try:
        resp.drain_conn()
    except _HTTPError:
        pass
    resp.release_conn()


def _retry_after(resp) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: treat as "long"


def _read_limited(resp, limit: int, what: str) -> bytes:
    out = bytearray()
    try:
        for chunk in resp.stream(65536):
            out += chunk
            if len(out) > limit:
                resp.close()
                raise BadContent(f"{what}: larger than {limit} bytes; refusing")
    except _HTTPError as e:
        resp.close()
        raise Unreachable(f"{what}: {_connection_reason(e, 0)[0]}") from None
    resp.release_conn()
    return bytes(out)
