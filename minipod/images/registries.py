"""Where to pull from and with which credentials: registries.toml and the docker auth file.

registries.toml (config key `registries`, default /etc/minipod/registries.toml) names, per
registry, mirrors to try first and how to talk to it -- containerd's hosts.toml and docker's
`registry-mirrors`/`insecure-registries` in one small file:

    # Pull docker.io images from a local mirror first, then from Docker Hub itself.
    [registry."docker.io"]
    mirrors = ["http://127.0.0.1:5000", "https://mirror.gcr.io"]
    # mirrors_only = true     # never contact Docker Hub (air-gapped, CI)

    # A registry without TLS: plain HTTP.
    [registry."build-box.lan:5000"]
    insecure = true

    # HTTPS with a self-signed certificate: no verification.
    [registry."registry.lab"]
    skip_verify = true

A mirror is a URL (`http://` = plain HTTP) or a bare `host[:port]`, which is HTTPS unless that
host has its own table with `insecure = true`; a path (`https://mirror/prefix`) is kept, so
`/prefix/v2/...` is asked. Loopback registries (localhost, 127.0.0.0/8, ::1) are plain HTTP
unless their table says `insecure = false`, as docker treats them as insecure.

Credentials come from a docker-style config.json/auth.json: `auths` (base64 `auth` or
`username`/`password`, `identitytoken`, `registrytoken`), `credHelpers` and `credsStore`
(docker-credential-<helper> programs). A key may be `host`, `https://host/v1/` or `host/namespace`
(the longest match wins, as in podman). Credentials go only to the host they are for: a
mirror never receives Docker Hub's.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field

from minipod.errors import MinipodError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
_KEYS = {"mirrors", "mirrors_only", "insecure", "skip_verify", "server"}


class RegistriesError(MinipodError):
    """registries.toml or the auth file is malformed (the message names the file and key)."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # base URL without a trailing slash: "https://registry-1.docker.io", "http://h:5000/p"
    host: str  # host[:port]: what credentials are looked up by
    verify: bool = True  # verify the TLS certificate (meaningless for http://)
    mirror: bool = False

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""  # OAuth2 refresh token (docker login with an identity provider)
    registry_token: str = ""  # a bearer token to send as is


@dataclass
class Registries:
    path: str = ""
    hosts: dict[str, dict] = field(default_factory=dict)  # registry name -> its table

    def _table(self, name: str) -> dict:
        return self.hosts.get(name) or {}

    def _scheme(self, host: str) -> str:
        table = self._table(host)
        if "insecure" in table:
            return "http" if table["insecure"] else "https"
        return "http" if is_loopback(host) else "https"

    def endpoints(self, registry: str) -> list[Endpoint]:
        """Where to ask for `registry`'s content, in order: its mirrors, then itself."""
        table = self._table(registry)
        out = []
        for m in table.get("mirrors", []):
            out.append(self._mirror(m))
        if not table.get("mirrors_only"):
            server = table.get("server") or ""
            if server:
                out.append(self._endpoint(server, mirror=False, skip_verify=table.get("skip_verify", False)))
            else:
                host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
                out.append(Endpoint(f"{self._scheme(registry)}://{host}", host,
                                    verify=not table.get("skip_verify", False)))
        return out

    def _mirror(self, spec: str) -> Endpoint:
        return self._endpoint(spec, mirror=True, skip_verify=False)

    def _endpoint(self, spec: str, mirror: bool, skip_verify: bool) -> Endpoint:
        if "://" in spec:
            scheme, _, rest = spec.partition("://")
        else:
            scheme, rest = "", spec
        host, _, path = rest.partition("/")
        path = ("/" + path.strip("/")) if path.strip("/") else ""
        if path.endswith("/v2"):
            path = path[:-3]  # "https://mirror/v2" means the API root itself
        scheme = scheme or self._scheme(host)
        own = self._table(host)
        verify = not (skip_verify or own.get("skip_verify", False))
        return Endpoint(f"{scheme}://{host}{path}", host, verify=verify, mirror=mirror)


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load(path: str) -> Registries:
    """Read registries.toml; a missing file means no mirrors and defaults for everything."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return Registries(path=path)
    except OSError as e:
        raise RegistriesError(f"{path}: {e.strerror}") from None
    import tomllib

    with f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise RegistriesError(f"{path}: {e}") from None
    unknown = sorted(set(data) - {"registry"})
    if unknown:
        raise RegistriesError(f"{path}: unknown setting(s) {', '.join(unknown)} (expected [registry.\"<host>\"] tables)")
    hosts = data.get("registry", {})
    if not isinstance(hosts, dict):
        raise RegistriesError(f'{path}: "registry" must be a table of [registry."<host>"] tables')
    out: dict[str, dict] = {}
    for name, table in hosts.items():
        where = f'{path}: [registry."{name}"]'
        if not isinstance(table, dict):
            raise RegistriesError(f"{where} must be a table")
        bad = sorted(set(table) - _KEYS)
        if bad:
            raise RegistriesError(f"{where}: unknown key(s) {', '.join(bad)} (known: {', '.join(sorted(_KEYS))})")
        mirrors = table.get("mirrors", [])
        if not isinstance(mirrors, list) or not all(isinstance(m, str) and m for m in mirrors):
            raise RegistriesError(f"{where}: mirrors must be a list of URLs or host[:port], got {mirrors!r}")
        for key in ("mirrors_only", "insecure", "skip_verify"):
            if key in table and not isinstance(table[key], bool):
                raise RegistriesError(f"{where}: {key} must be true or false, got {table[key]!r}")
        if table.get("mirrors_only") and not mirrors:
            raise RegistriesError(f"{where}: mirrors_only = true but no mirrors are listed")
        out[_canonical_registry(name)] = table
    return Registries(path=path, hosts=out)


def _canonical_registry(name: str) -> str:
    return DOCKER_HUB if name in _HUB_ALIASES else name


# -- credentials ----------------------------------------------------------------------------


def auth_file_path(configured: str = "", env: dict | None = None) -> str:
    """The auth file to read: the configured one, $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json,
    ~/.docker/config.json (the first that is set; the last that exists is not searched for)."""
    env = os.environ if env is None else env
    if configured:
        return configured
    if env.get("REGISTRY_AUTH_FILE"):
        return env["REGISTRY_AUTH_FILE"]
    if env.get("DOCKER_CONFIG"):
        return os.path.join(env["DOCKER_CONFIG"], "config.json")
    return os.path.join(os.path.expanduser("~"), ".docker", "config.json")


def _key_host_path(key: str) -> tuple[str, str]:
    """'https://index.docker.io/v1/' -> ('docker.io', ''); 'quay.io/team' -> ('quay.io', 'team')."""
    rest = key.split("://", 1)[1] if "://" in key else key
    host, _, path = rest.partition("/")
    path = path.strip("/")
    if path in ("v1", "v2"):
        path = ""
    return _canonical_registry(host), path


class AuthFile:
    """A docker-style auth file, read once; `lookup()` answers per host and repository."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict = {}
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise RegistriesError(f"auth file {path}: {getattr(e, 'strerror', None) or e}") from None
        if not isinstance(data, dict):
            raise RegistriesError(f"auth file {path}: expected a JSON object")
        self.data = data

    def lookup(self, host: str, repository: str = "") -> Credentials | None:
        """Credentials for `host` (a registry name or an endpoint host), best match first."""
        host = _canonical_registry(host)
        best: tuple[int, str, dict] | None = None
        for key, entry in (self.data.get("auths") or {}).items():
            khost, kpath = _key_host_path(key)
            if khost != host or not isinstance(entry, dict):
                continue
            if kpath and not (repository == kpath or repository.startswith(kpath + "/")):
                continue
            if best is None or len(kpath) > best[0]:
                best = (len(kpath), key, entry)
        if best is not None:
            creds = self._from_entry(best[1], best[2])
            if creds:
                return creds
        helper = None
        for key, name in (self.data.get("credHelpers") or {}).items():
            if _key_host_path(key)[0] == host:
                helper = name
        helper = helper or self.data.get("credsStore")
        if helper:
            return self._from_helper(helper, host)
        return None

    def _from_entry(self, key: str, entry: dict) -> Credentials | None:
        user, password = entry.get("username") or "", entry.get("password") or ""
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"], validate=False).decode()
            except (ValueError, UnicodeDecodeError):
                raise RegistriesError(f'auth file {self.path}: auths["{key}"].auth is not base64 of "user:password"') from None
            user, sep, password = decoded.partition(":")
            if not sep:
                raise RegistriesError(f'auth file {self.path}: auths["{key}"].auth is not base64 of "user:password"')
        creds = Credentials(user, password, entry.get("identitytoken") or "", entry.get("registrytoken") or "")
        return creds if any((creds.username, creds.identity_token, creds.registry_token)) else None

    def _from_helper(self, helper: str, host: str) -> Credentials | None:
        import subprocess

        prog = f"docker-credential-{helper}"
        server = "https://index.docker.io/v1/" if host == DOCKER_HUB else host
        try:
            p = subprocess.run([prog, "get"], input=server, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            raise RegistriesError(f"auth file {self.path} names the credential helper {prog!r}, which is not installed") from None
        except subprocess.TimeoutExpired:
            raise RegistriesError(f"credential helper {prog} get {server}: no answer in 30s") from None
        if p.returncode != 0:
            if "credentials not found" in (p.stdout + p.stderr).lower():
                return None
            raise RegistriesError(f"credential helper {prog} get {server}: {(p.stderr or p.stdout).strip()[:200]}")
        try:
            out = json.loads(p.stdout)
        except ValueError:
            raise RegistriesError(f"credential helper {prog} get {server}: not JSON") from None
        user, secret = out.get("Username") or "", out.get("Secret") or ""
        if user == "<token>":
            return Credentials(identity_token=secret)
        return Credentials(user, secret) if user else None
