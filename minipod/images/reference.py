"""Image references, normalised the way docker and the kubelet do it.

    busybox                    -> docker.io/library/busybox:latest
    nginx:alpine               -> docker.io/library/nginx:alpine
    myuser/app                 -> docker.io/myuser/app:latest
    localhost:5000/team/app:v1 -> localhost:5000/team/app:v1
    busybox@sha256:<64 hex>    -> docker.io/library/busybox@sha256:<64 hex>  (no default tag)

The grammar is distribution/reference's (regexp.go, normalize.go): lowercase path components
separated by `.`, `_`, `__` or dashes; the first component is a registry only if it contains
`.` or `:`, is `localhost`, or has an uppercase letter; `library/` is added only to
single-component docker.io names; `index.docker.io` is docker.io.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from minipod.errors import MinipodError

DEFAULT_REGISTRY = "docker.io"
LEGACY_REGISTRY = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[a-fA-F0-9:]+\])"
_REGISTRY_RE = re.compile(rf"{_HOST}(?::[0-9]+)?")
_PATH_RE = re.compile(_PATH)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_HEX_ID_RE = re.compile(r"[a-f0-9]{64}")
# Hex lengths of the digest algorithms distribution accepts.
_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidReference(MinipodError, ValueError):
    """A malformed image reference (a ValueError, and a MinipodError so the CLI prints it)."""


@dataclass(frozen=True)
class Reference:
    registry: str  # "docker.io", "localhost:5000", "ghcr.io"
    repository: str  # "library/busybox", "team/app"
    tag: str = ""  # "" only when a digest is given without a tag
    digest: str = ""  # "sha256:<hex>" or ""

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def familiar_name(self) -> str:
        """The repository as users write it: docker.io/library/busybox -> busybox."""
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        repo = self.repository
        rest = repo[len(OFFICIAL_PREFIX):]
        if repo.startswith(OFFICIAL_PREFIX) and "/" not in rest:
            return rest
        return repo

    def familiar(self) -> str:
        """Short form: `busybox:latest`, `myuser/app:v1`, `localhost:5000/app@sha256:...`."""
        return self.familiar_name() + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def _invalid(ref: str, why: str) -> InvalidReference:
    return InvalidReference(f"invalid image reference {ref!r}: {why}")


def _split_registry(name: str) -> tuple[str, str]:
    """Split 'host:5000/repo' into ('host:5000', 'repo'); 'busybox' into ('docker.io', 'busybox')."""
    first, slash, rest = name.partition("/")
    if not slash or (
        "." not in first and ":" not in first and first != "localhost" and first.lower() == first
    ):
        registry, repo = DEFAULT_REGISTRY, name
    else:
        registry, repo = first, rest
    if registry == LEGACY_REGISTRY:
        registry = DEFAULT_REGISTRY
    return registry, repo


def parse(ref: str) -> Reference:
    """Parse and normalise `ref` (see the module docstring). Raises InvalidReference (a ValueError)."""
    if not isinstance(ref, str) or not ref:
        raise _invalid(ref, "empty")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise _invalid(ref, "contains whitespace")
    if _HEX_ID_RE.fullmatch(ref):
        raise _invalid(ref, "a 64-character hex string is an image ID, not a repository name")

    rest, at, digest = ref.partition("@")
    if at:
        if not _DIGEST_RE.fullmatch(digest):
            raise _invalid(ref, f"digest {digest!r} is not <algorithm>:<hex>")
        algo, _, hex_ = digest.partition(":")
        want = _DIGEST_HEX_LEN.get(algo)
        if want is None:
            raise _invalid(ref, f"unsupported digest algorithm {algo!r} (sha256, sha384, sha512)")
        if len(hex_) != want or hex_ != hex_.lower():
            raise _invalid(ref, f"{algo} digest must be {want} lowercase hex characters")

    # The tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    tag = ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise _invalid(ref, f"tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'")

    registry, repo = _split_registry(rest)
    if not repo:
        raise _invalid(ref, "repository name must have at least one component")
    if not _REGISTRY_RE.fullmatch(registry):
        raise _invalid(ref, f"registry {registry!r} is not a host name or host:port")
    if repo.lower() != repo:
        raise _invalid(ref, f"repository name {repo!r} must be lowercase")
    if not _PATH_RE.fullmatch(repo):
        raise _invalid(
            ref,
            f"repository {repo!r}: each '/'-separated part must be lowercase letters and digits, "
            "joined by '.', '_', '__' or '-'",
        )
    if registry == DEFAULT_REGISTRY and "/" not in repo:
        repo = OFFICIAL_PREFIX + repo
    if len(registry) + 1 + len(repo) > NAME_MAX:
        raise _invalid(ref, f"repository name must not be more than {NAME_MAX} characters")
    if not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=repo, tag=tag, digest=digest)


def normalize(ref: str) -> str:
    """`busybox` -> `docker.io/library/busybox:latest`. Raises InvalidReference (a ValueError)."""
    return str(parse(ref))


def familiar(ref: str) -> str:
    """`docker.io/library/busybox:latest` -> `busybox:latest`. Raises InvalidReference (a ValueError)."""
    return parse(ref).familiar()
