"""Image reference normalisation: the cases distribution/reference (docker) tests, and ours."""

from __future__ import annotations

import pytest

from minipod.errors import MinipodError
from minipod.images.reference import InvalidReference, Reference, familiar, normalize, parse

D = "sha256:" + "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"


@pytest.mark.parametrize(
    "ref, full, short",
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("nginx:alpine", "docker.io/library/nginx:alpine", "nginx:alpine"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/debian", "docker.io/library/debian:latest", "debian:latest"),
        ("dmcgowan/myapp", "docker.io/dmcgowan/myapp:latest", "dmcgowan/myapp:latest"),
        ("docker.io/fooo/bar", "docker.io/fooo/bar:latest", "fooo/bar:latest"),
        ("other/library", "docker.io/other/library:latest", "other/library:latest"),
        # library/ is stripped only from single-component names
        ("docker.io/library/foo/bar", "docker.io/library/foo/bar:latest", "library/foo/bar:latest"),
        ("store/foo/bar", "docker.io/store/foo/bar:latest", "store/foo/bar:latest"),
        ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base:latest", "ubuntu-12.04-base:latest"),
        # registries: a '.' or ':' in the first component, localhost, or an uppercase letter
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/team/app:v1", "localhost:5000/team/app:v1", "localhost:5000/team/app:v1"),
        ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest", "127.0.0.1:5000/busybox:latest"),
        ("127.0.0.1:5000/library/debian", "127.0.0.1:5000/library/debian:latest", "127.0.0.1:5000/library/debian:latest"),
        ("example.com/privatebase", "example.com/privatebase:latest", "example.com/privatebase:latest"),
        ("example.com:8000/private/moonbase", "example.com:8000/private/moonbase:latest",
         "example.com:8000/private/moonbase:latest"),
        ("test-com:8080/foo", "test-com:8080/foo:latest", "test-com:8080/foo:latest"),
        ("xn--n3h.com/foo", "xn--n3h.com/foo:latest", "xn--n3h.com/foo:latest"),
        ("quay.io/coreos/etcd:v3.5.0", "quay.io/coreos/etcd:v3.5.0", "quay.io/coreos/etcd:v3.5.0"),
        ("[fc00::1]:5000/docker", "[fc00::1]:5000/docker:latest", "[fc00::1]:5000/docker:latest"),
        ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest"),
        ("DOCKER/docker", "DOCKER/docker:latest", "DOCKER/docker:latest"),
        ("test_com/foo", "docker.io/test_com/foo:latest", "test_com/foo:latest"),
        # a first component without '.' or ':' is a namespace, not a registry
        ("docker/migrator", "docker.io/docker/migrator:latest", "docker/migrator:latest"),
        # a single element is a name even when it looks like an IP (docker's rule)
        ("192.168.0.1", "docker.io/library/192.168.0.1:latest", "192.168.0.1:latest"),
        ("192.168.0.1:80", "docker.io/library/192.168.0.1:80", "192.168.0.1:80"),
        # separators
        ("docker---rules/docker", "docker.io/docker---rules/docker:latest", "docker---rules/docker:latest"),
        ("dock__er/docker", "docker.io/dock__er/docker:latest", "dock__er/docker:latest"),
        ("d/docker", "docker.io/d/docker:latest", "d/docker:latest"),
        ("a" * 63 + "g", "docker.io/library/" + "a" * 63 + "g:latest", "a" * 63 + "g:latest"),
        ("docker.io/" + "a" * 64, "docker.io/library/" + "a" * 64 + ":latest", "a" * 64 + ":latest"),
        # tags
        ("busybox:Latest_1.0-rc", "docker.io/library/busybox:Latest_1.0-rc", "busybox:Latest_1.0-rc"),
        ("busybox:" + "t" * 128, "docker.io/library/busybox:" + "t" * 128, "busybox:" + "t" * 128),
        # digests: no default tag; tag and digest together are both kept
        (f"redis@{D}", f"docker.io/library/redis@{D}", f"redis@{D}"),
        (f"docker.io/dmcgowan/myapp@{D}", f"docker.io/dmcgowan/myapp@{D}", f"dmcgowan/myapp@{D}"),
        (f"busybox:latest@{D}", f"docker.io/library/busybox:latest@{D}", f"busybox:latest@{D}"),
        (f"localhost:5000/app:v1@{D}", f"localhost:5000/app:v1@{D}", f"localhost:5000/app:v1@{D}"),
    ],
)
def test_normalize_and_familiar(ref, full, short):
    assert normalize(ref) == full
    assert familiar(ref) == short
    assert normalize(full) == full  # normalising is idempotent
    assert normalize(short) == full  # and the short form means the same image


def test_parse_fields():
    assert parse("busybox") == Reference("docker.io", "library/busybox", "latest", "")
    assert parse("localhost:5000/team/app:v1") == Reference("localhost:5000", "team/app", "v1", "")
    assert parse(f"redis@{D}") == Reference("docker.io", "library/redis", "", D)
    r = parse(f"busybox:1@{D}")
    assert (r.tag, r.digest, r.name) == ("1", D, "docker.io/library/busybox")
    assert str(r) == f"docker.io/library/busybox:1@{D}"
    assert parse("nginx:alpine").familiar() == "nginx:alpine"


@pytest.mark.parametrize(
    "ref, why",
    [
        ("", "empty"),
        ("Busybox", "must be lowercase"),
        ("docker/Docker", "must be lowercase"),
        ("docker.io/docker/Docker", "must be lowercase"),
        ("localhost:5000/App", "must be lowercase"),
        ("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", "image ID"),
        ("busybox:", "tag"),
        ("busybox:-x", "tag"),
        ("busybox:.x", "tag"),
        ("busybox:" + "t" * 129, "tag"),
        ("busybox:a:b", "repository"),
        ("busybox@sha256:abc", "digest"),
        ("busybox@sha256:" + "A" * 64, "lowercase hex"),
        ("busybox@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("busybox@", "digest"),
        ("-docker", "repository"),
        ("-docker/docker", "repository"),
        ("docker-/docker", "repository"),
        ("-docker-/docker", "repository"),
        ("-docker.io/docker/docker", "registry"),
        ("docker///docker", "repository"),
        ("docker.io/docker///docker", "repository"),
        ("____/____", "repository"),
        ("_docker/_docker", "repository"),
        ("dock..er/docker", "registry"),  # a '.' in the first part makes it a registry name
        ("dock_.er/docker", "registry"),
        ("dock-.er/docker", "registry"),
        ("docker/", "repository"),
        ("localhost:5000/", "at least one component"),
        ("https://github.com/docker/docker", "registry"),
        ("[fc00::1]", "tag"),
        ("[fc00::1]:5000", "repository"),
        ("fc00::1:5000/debian", "registry"),
        ("[fe80::1%eth0]:5000/debian", "registry"),
        ("[2001:db8:3:4::192.0.2.33]:5000/debian", "registry"),
        ("host:port/app", "registry"),
        ("busy box", "whitespace"),
        (" busybox", "whitespace"),
        ("x" * 200 + "/" + "y" * 60, "255"),
    ],
)
def test_invalid(ref, why):
    with pytest.raises(InvalidReference) as exc:
        normalize(ref)
    msg = str(exc.value)
    assert msg.startswith(f"invalid image reference {ref!r}: ")
    assert why in msg
    # Both a ValueError (for library users) and a MinipodError (printed by the CLI, no traceback).
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, MinipodError)


def test_non_string_is_invalid():
    with pytest.raises(ValueError):
        parse(None)  # type: ignore[arg-type]
