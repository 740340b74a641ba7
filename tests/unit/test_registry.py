"""The registry client against an in-process fake registry on 127.0.0.1 (tests/fixtures/registry):
auth flows, redirects, retries, resume, verification, errors; and registries.toml / auth files."""

from __future__ import annotations

import base64
import json
import os
import random
import stat
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))

from registry import images, server  # noqa: E402

from minipod.images import registries, registry  # noqa: E402
from minipod.images.registries import Credentials, Endpoint  # noqa: E402

REPO = "library/busybox"


@pytest.fixture
def img():
    return images.image([images.tar([("etc/hello", "file", "hi\n")]),
                         images.tar([("etc/second", "file", random.Random(0).randbytes(300_000))])])


def make_client(reg, repo=REPO, creds=None, **kw):
    kw.setdefault("backoff", 0)
    return registry.Client(Endpoint(reg.url, reg.host), repo, (lambda host: creds), **kw)


def serve(img, **kw):
    reg = server.FakeRegistry(**kw)
    reg.store.add(REPO, "latest", img)
    return reg


# -- manifests and formats ---------------------------------------------------------------------


def test_get_manifest_by_tag_and_digest_verifies(img):
    with serve(img) as reg:
        c = make_client(reg)
        m = c.get_manifest("latest")
        assert (m.digest, m.media_type) == (img.digest, images.OCI_MANIFEST)
        assert c.get_manifest(img.digest).data == img.manifest
        assert c.head_manifest("latest") == img.digest
        reg.tamper.add(img.digest)
        with pytest.raises(registry.BadContent, match="hashes to"):
            c.get_manifest(img.digest)
        with pytest.raises(registry.BadContent, match="registry says"):
            c.get_manifest("latest")


def test_media_type_detection_and_schema1_refused():
    assert registry.media_type(b'{"schemaVersion":2,"manifests":[]}') == registry.MEDIA_OCI_INDEX
    assert registry.media_type(b'{"schemaVersion":2,"config":{},"layers":[]}') == registry.MEDIA_OCI_MANIFEST
    docker = b'{"schemaVersion":2,"config":{},"layers":[]}'
    assert registry.media_type(docker, registry.MEDIA_DOCKER_MANIFEST + "; charset=utf-8") == registry.MEDIA_DOCKER_MANIFEST
    with pytest.raises(registry.BadContent, match="schema 1 is deprecated"):
        registry.media_type(b'{"schemaVersion":1,"fsLayers":[]}', "application/vnd.docker.distribution.manifest.v1+prettyjws")
    with pytest.raises(registry.BadContent, match="unsupported manifest media type"):
        registry.media_type(b'{"mediaType":"application/vnd.cncf.helm.chart.v1"}')
    with pytest.raises(registry.BadContent, match="not JSON"):
        registry.media_type(b"<html>")


def test_pick_platform_prefers_exact_variant_and_skips_attestations():
    idx = {"manifests": [
        {"digest": "att", "platform": {"os": "unknown", "architecture": "unknown"}},
        {"digest": "arm6", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "arm7", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "a64", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "win", "platform": {"os": "windows", "architecture": "amd64"}},
        {"digest": "amd", "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    assert registry.pick_platform(idx, "amd64")["digest"] == "amd"
    assert registry.pick_platform(idx, "arm", "v7")["digest"] == "arm7"
    assert registry.pick_platform(idx, "arm64", "v8")["digest"] == "a64"
    assert registry.pick_platform(idx, "s390x") is None
    assert "linux/arm/v7" in registry.platforms(idx) and "unknown" not in registry.platforms(idx)


# -- auth ----------------------------------------------------------------------------------------


def test_anonymous_bearer_token_flow(img):
    with serve(img, auth="bearer") as reg:
        c = make_client(reg)
        assert c.get_manifest("latest").digest == img.digest
        token_reqs = [(p, h) for m, p, h in reg.log if p.startswith("/token")]
        assert len(token_reqs) == 1 and "Authorization" not in token_reqs[0][1]
        assert "scope=repository%3Alibrary%2Fbusybox%3Apull" in token_reqs[0][0]
        # The token is reused: a second request does not ask for another.
        c.get_manifest("latest")
        assert sum(p.startswith("/token") for _, p, _ in reg.log) == 1


def test_bearer_with_credentials_sends_basic_to_the_token_server(img):
    creds = Credentials("alice", "s3cret")
    with serve(img, auth="bearer", users={"alice": "s3cret"}, anonymous=False) as reg:
        assert make_client(reg, creds=creds).get_manifest("latest").digest == img.digest
        (h,) = [h for _, p, h in reg.log if p.startswith("/token")]
        assert h["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
        with pytest.raises(registry.AuthError, match="refused a token anonymously"):
            make_client(reg).get_manifest("latest")
        with pytest.raises(registry.AuthError, match="as 'alice'"):
            make_client(reg, creds=Credentials("alice", "wrong")).get_manifest("latest")


def test_basic_auth(img):
    with serve(img, auth="basic", users={"bob": "pw"}) as reg:
        assert make_client(reg, creds=Credentials("bob", "pw")).get_manifest("latest").digest == img.digest
        with pytest.raises(registry.AuthError, match="no credentials are configured"):
            make_client(reg).get_manifest("latest")
        with pytest.raises(registry.AuthError, match="denied with the configured credentials"):
            make_client(reg, creds=Credentials("bob", "nope")).get_manifest("latest")


def test_blob_redirect_to_cdn_does_not_forward_authorization(img, tmp_path):
    layer = json.loads(img.manifest)["layers"][1]
    with serve(img, auth="bearer", cdn=True) as reg:
        c = make_client(reg)
        c.download(layer["digest"], str(tmp_path / "blob"), layer["size"])
        assert (tmp_path / "blob").read_bytes() == img.blobs[layer["digest"]]
        assert reg.cdn_log and all("Authorization" not in h for _, _, h in reg.cdn_log)
        # The registry itself did get the token.
        blob_reqs = [h for _, p, h in reg.log if "/blobs/" in p]
        assert blob_reqs and blob_reqs[-1]["Authorization"].startswith("Bearer ")


# -- errors and retries --------------------------------------------------------------------------


def test_transient_errors_are_retried(img):
    with serve(img) as reg:
        reg.faults = [503, 502]
        assert make_client(reg).get_manifest("latest").digest == img.digest
        reg.faults = [503] * 5
        with pytest.raises(registry.RegistryError, match="503"):
            make_client(reg, retries=2).get_manifest("latest")


def test_not_found_rate_limit_and_unreachable_messages(img):
    with serve(img) as reg:
        with pytest.raises(registry.NotFoundError, match=r"library/busybox:nope not found \(404 MANIFEST_UNKNOWN"):
            make_client(reg).get_manifest("nope")
        with pytest.raises(registry.NotFoundError, match="BLOB_UNKNOWN"):
            make_client(reg).get_blob("sha256:" + "0" * 64)
        reg.rate_limited = True
        with pytest.raises(registry.RateLimited, match="rate limit reached .*429 TOOMANYREQUESTS"):
            make_client(reg).get_manifest("latest")
        url, host = reg.url, reg.host
    # The server is gone: nothing listens on that port any more.
    c = registry.Client(Endpoint(url, host), REPO, backoff=0)
    with pytest.raises(registry.Unreachable, match="connection refused"):
        c.get_manifest("latest")
    c = registry.Client(Endpoint("https://no-such-host.invalid", "no-such-host.invalid"), REPO, backoff=0)
    with pytest.raises(registry.Unreachable, match="cannot resolve"):
        c.get_manifest("latest")


def test_download_resumes_after_a_broken_connection(img, tmp_path):
    layer = json.loads(img.manifest)["layers"][1]
    digest, data = layer["digest"], img.blobs[layer["digest"]]
    with serve(img) as reg:
        reg.cut_blob[digest] = len(data) // 3
        seen = []
        make_client(reg).download(digest, str(tmp_path / "p"), layer["size"], seen.append)
        assert (tmp_path / "p").read_bytes() == data
        ranges = [h.get("Range") for _, p, h in reg.log if digest in p]
        assert ranges == [None, f"bytes={len(data) // 3}-"]
        assert sum(seen) == len(data)


def test_download_continues_a_partial_file_from_an_earlier_run(img, tmp_path):
    layer = json.loads(img.manifest)["layers"][1]
    digest, data = layer["digest"], img.blobs[layer["digest"]]
    partial = tmp_path / "p"
    partial.write_bytes(data[:1000])
    with serve(img) as reg:
        make_client(reg).download(digest, str(partial), layer["size"])
        assert partial.read_bytes() == data
        assert [h.get("Range") for _, p, h in reg.log if digest in p] == ["bytes=1000-"]


def test_tampered_blob_is_rejected_and_the_partial_emptied(img, tmp_path):
    layer = json.loads(img.manifest)["layers"][0]
    with serve(img) as reg:
        reg.tamper.add(layer["digest"])
        with pytest.raises(registry.BadContent, match="corrupt or tampered"):
            make_client(reg).download(layer["digest"], str(tmp_path / "p"), layer["size"])
        assert (tmp_path / "p").stat().st_size == 0
        with pytest.raises(registry.BadContent, match="corrupt or tampered"):
            make_client(reg).get_blob(layer["digest"])


def test_a_blob_larger_than_its_descriptor_is_refused(img, tmp_path):
    layer = json.loads(img.manifest)["layers"][1]
    with serve(img) as reg:
        with pytest.raises(registry.BadContent, match="more than the 10 bytes"):
            make_client(reg).download(layer["digest"], str(tmp_path / "p"), 10)


# -- registries.toml -----------------------------------------------------------------------------


def test_registries_mirrors_insecure_and_defaults(tmp_path):
    p = tmp_path / "registries.toml"
    p.write_text("""
[registry."docker.io"]
mirrors = ["http://127.0.0.1:5000", "mirror.example.com/hub", "lan-box:5000"]

[registry."lan-box:5000"]
insecure = true

[registry."self-signed.example"]
skip_verify = true

[registry."quay.io"]
mirrors = ["https://q-mirror.example/v2"]
mirrors_only = true
""")
    regs = registries.load(str(p))
    eps = regs.endpoints("docker.io")
    assert [e.url for e in eps] == ["http://127.0.0.1:5000", "https://mirror.example.com/hub",
                                    "http://lan-box:5000", "https://registry-1.docker.io"]
    assert [e.mirror for e in eps] == [True, True, True, False]
    assert eps[-1].host == "registry-1.docker.io"
    assert regs.endpoints("lan-box:5000") == [Endpoint("http://lan-box:5000", "lan-box:5000")]
    assert regs.endpoints("self-signed.example")[0].verify is False
    assert [e.url for e in regs.endpoints("quay.io")] == ["https://q-mirror.example"]
    assert regs.endpoints("localhost:5000")[0].url == "http://localhost:5000"  # loopback: plain HTTP
    assert regs.endpoints("127.0.0.1:5000")[0].url == "http://127.0.0.1:5000"
    assert regs.endpoints("ghcr.io")[0].url == "https://ghcr.io"
    assert registries.load(str(tmp_path / "missing.toml")).endpoints("docker.io")[0].url == "https://registry-1.docker.io"


@pytest.mark.parametrize("text, match", [
    ('[registry."docker.io"]\nmirror = ["x"]\n', "unknown key.*mirror"),
    ('[registry."docker.io"]\nmirrors = "x"\n', "mirrors must be a list"),
    ('[registry."x"]\ninsecure = "yes"\n', "insecure must be true or false"),
    ('[registry."x"]\nmirrors_only = true\n', "no mirrors are listed"),
    ('insecure = ["x"]\n', "unknown setting"),
    ('[registry\n', "registries.toml"),
])
def test_registries_errors_name_the_file_and_key(tmp_path, text, match):
    p = tmp_path / "registries.toml"
    p.write_text(text)
    with pytest.raises(registries.RegistriesError, match=match):
        registries.load(str(p))


# -- auth file -----------------------------------------------------------------------------------


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_auth_file_lookup(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": _b64("hubuser:hubpw")},
        "quay.io": {"username": "q", "password": "qp"},
        "quay.io/team": {"auth": _b64("teamuser:teampw")},
        "ghcr.io": {"identitytoken": "refresh-me"},
        "http://127.0.0.1:5000": {"auth": _b64("local:pw:with:colons")},
    }}))
    a = registries.AuthFile(str(p))
    assert a.lookup("docker.io") == Credentials("hubuser", "hubpw")
    assert a.lookup("registry-1.docker.io") == Credentials("hubuser", "hubpw")
    assert a.lookup("quay.io", "other/app") == Credentials("q", "qp")
    assert a.lookup("quay.io", "team/app") == Credentials("teamuser", "teampw")
    assert a.lookup("ghcr.io").identity_token == "refresh-me"
    assert a.lookup("127.0.0.1:5000") == Credentials("local", "pw:with:colons")
    assert a.lookup("mirror.example") is None
    assert registries.AuthFile(str(tmp_path / "none.json")).lookup("docker.io") is None


def test_auth_file_path_order(tmp_path):
    assert registries.auth_file_path("/x.json", {"REGISTRY_AUTH_FILE": "/y"}) == "/x.json"
    assert registries.auth_file_path("", {"REGISTRY_AUTH_FILE": "/y", "DOCKER_CONFIG": "/d"}) == "/y"
    assert registries.auth_file_path("", {"DOCKER_CONFIG": "/d"}) == "/d/config.json"
    assert registries.auth_file_path("", {}).endswith("/.docker/config.json")


def test_credential_helper(tmp_path, monkeypatch):
    helper = tmp_path / "docker-credential-fake"
    helper.write_text('#!/bin/sh\nread server\n[ "$server" = "https://index.docker.io/v1/" ] || '
                      '{ echo "credentials not found in native keychain"; exit 1; }\n'
                      'echo \'{"ServerURL":"x","Username":"helped","Secret":"pw"}\'\n')
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"credsStore": "fake", "credHelpers": {"gcr.io": "missing-helper"}}))
    a = registries.AuthFile(str(p))
    assert a.lookup("docker.io") == Credentials("helped", "pw")
    assert a.lookup("quay.io") is None
    with pytest.raises(registries.RegistriesError, match="docker-credential-missing-helper.*not installed"):
        a.lookup("gcr.io")


def test_malformed_auth_file(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(registries.RegistriesError, match=f"auth file {p}"):
        registries.AuthFile(str(p))
    p.write_text(json.dumps({"auths": {"x.io": {"auth": _b64("nocolon")}}}))
    with pytest.raises(registries.RegistriesError, match='auths\\["x.io"\\].auth'):
        registries.AuthFile(str(p)).lookup("x.io")
