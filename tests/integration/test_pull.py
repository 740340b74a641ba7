"""Pulling from a real registry (Debian's docker-registry on 127.0.0.1), as a user would:
`minipod pull/images/rmi/image import` and `minipod run` of specs whose images are only in the
registry. docker.io is pointed at the local registry with a mirror (mirrors_only: no test
ever reaches the internet), so specs name `busybox`, `alpine:3.19`, `nginx:alpine` unchanged.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tarfile
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))

from conftest import SUFFIX, Env, reap_orphans  # noqa: E402
from registry import distribution, images, server  # noqa: E402

from minipod.images.store import ImageStore, host_arch  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (layers keep owners and device nodes)"),
    pytest.mark.skipif(not os.access(distribution.BINARY, os.X_OK),
                       reason="needs docker-registry (apt-get install docker-registry)"),
    pytest.mark.skipif(not os.access("/bin/busybox", os.X_OK), reason="needs busybox-static"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """docker-registry with every image the labs name, pushed under docker.io's short names."""
    reg = distribution.start_lab(str(tmp_path_factory.mktemp("registry")))
    try:
        yield reg
    finally:
        reg.remove()
    assert reg.proc is None


@pytest.fixture
def env(tmp_path, lab):
    """An isolated minipod (own root, bridge, subnet, cgroups) with an EMPTY image store and
    docker.io mirrored to the lab registry; fails the test if anything leaked."""
    e = Env(str(tmp_path / "mp"), str(tmp_path / "images"), tag=SUFFIX + "%02x" % random.randrange(256))
    e.registries = distribution.mirror_config(os.path.join(e.base, "registries.toml"), lab.url)
    e.write_config(registries=e.registries, auth_file=os.path.join(e.base, "auth.json"))
    e.store = ImageStore(e.images)
    before = e.host_state()
    yield e
    pods = os.path.join(e.root, "pods")
    for name in sorted(os.listdir(pods)) if os.path.isdir(pods) else []:
        e.minipod("rm", "-f", name, check=False)
    e.stop_agent()
    assert e.host_state() == before, "the host changed: something leaked"


def files_in(store: ImageStore) -> list[str]:
    out = []
    for d, dirs, files in os.walk(store.root):
        out += [os.path.relpath(os.path.join(d, n), store.root) for n in files]
    return sorted(out)


def test_pull_alpine_picks_this_machines_architecture(env):
    p = env.minipod("pull", "alpine:3.19")
    assert p.stdout.splitlines()[-1] == "docker.io/library/alpine:3.19"
    assert p.stderr == ""  # not a TTY: no progress output
    img = env.store.resolve("alpine:3.19")
    with open(os.path.join(img.layers[-1], "etc/alpine-release")) as f:
        assert f.read() == "3.19.1\n"  # the other architecture's says "(arm64)"
    rows = [ln.split() for ln in env.minipod("images").stdout.splitlines()]
    assert rows[0] == ["REPOSITORY", "TAG", "DIGEST", "SIZE"]
    assert rows[1][:3] == ["alpine", "3.19", img.digest[:19]]


def test_whiteouts_and_opaque_dir_through_overlay(env, tmp_path):
    env.minipod("pull", "debian")
    img = env.store.resolve("debian")
    assert len(img.layers) == 3
    merged = tmp_path / "merged"
    merged.mkdir()
    # Read-only overlay of the lower layers only: what a container's rootfs shows.
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    "lowerdir=" + ":".join(reversed(img.layers)), str(merged)], check=True)
    try:
        for path in images.LAYERED_VISIBLE:
            assert (merged / path).exists(), path
        for path in images.LAYERED_HIDDEN:
            assert not os.path.lexists(merged / path), path
        assert sorted(os.listdir(merged / "data" / "a")) == ["three"]
        assert (merged / "bin" / "busybox").exists()
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_images_sharing_a_base_layer_store_it_once(env):
    for ref in ("busybox", "nginx:alpine", "alpine:3.19"):
        env.minipod("pull", ref)
    resolved = [env.store.resolve(r) for r in ("busybox", "nginx:alpine", "alpine:3.19")]
    base = {img.layers[0] for img in resolved}
    assert len(base) == 1
    all_layers = {layer for img in resolved for layer in img.layers}
    assert sorted(os.listdir(env.store.layers)) == sorted(os.path.basename(d) for d in all_layers)
    # The base layer's tarball is one blob too, whichever manifest (Docker or OCI) names it.
    digests = set()
    for img in resolved:
        top = json.loads(env.store.read_blob(img.digest))
        if "manifests" in top:
            entry = next(m for m in top["manifests"] if m["platform"]["architecture"] == host_arch())
            top = json.loads(env.store.read_blob(entry["digest"]))
        digests |= {layer["digest"] for layer in top["layers"]}
    assert len(digests) == len(all_layers)
    assert all(env.store.has_blob(d) for d in digests)


def test_tampered_blob_is_rejected(env, lab):
    repo = f"tamper{SUFFIX}/img"
    img = images.image([images.tar([("etc/data", "file", "original\n")])])
    lab.push(repo, "v1", img)
    layer = json.loads(img.manifest)["layers"][0]["digest"]
    with open(lab.blob_file(layer), "r+b") as f:  # what a compromised mirror would serve
        data = bytearray(f.read())
        data[-1] ^= 0xFF
        f.seek(0)
        f.write(data)
    p = env.minipod("pull", f"{lab.host}/{repo}:v1", check=False)
    assert p.returncode == 1
    (line,) = p.stderr.splitlines()
    assert line.startswith(f"error: pull {lab.host}/{repo}:v1: ") and f"blob {layer}: content hashes to" in line
    assert env.store.tags() == {}
    assert not env.store.has_blob(layer)


def test_layer_cannot_write_outside_the_store(env, lab, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = f"evil{SUFFIX}/img"
    lab.push(repo, "symlink", images.image([images.tar([
        ("etc", "dir"), ("etc/x", "symlink", str(outside)), ("etc/x/pwned", "file", "no")])]))
    lab.push(repo, "dotdot", images.image([images.tar([("../../../../outside/pwned", "file", "no")])]))
    lab.push(repo, "abs", images.image([images.tar([(str(outside / "pwned"), "file", "no")])]))
    for tag in ("symlink", "dotdot", "abs"):
        p = env.minipod("pull", f"{lab.host}/{repo}:{tag}", check=False)
        assert p.returncode == 1 and "refusing" in p.stderr, p.stderr
    assert list(outside.iterdir()) == []
    assert env.store.tags() == {} and os.listdir(env.store.layers) == []


def test_run_nginx_alpine_pulls_it_and_serves_http(env):
    spec = env.write("nginx.yaml", """
apiVersion: v1
kind: Pod
metadata:
  name: ngx
spec:
  containers:
  - name: nginx
    image: nginx:alpine
    ports:
    - containerPort: 80
""")
    assert env.store.tags() == {}
    env.minipod("run", "-d", spec)
    assert "docker.io/library/nginx:alpine" in env.store.tags()
    ip = env.pod("ngx")["status"]["podIP"]

    def get():
        try:
            with urllib.request.urlopen(f"http://{ip}/", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None

    assert env.wait(get, what="nginx:alpine answering on the pod IP") == images.NGINX_HTML
    # rmi is refused while the pod uses the image, and works once it is gone.
    p = env.minipod("rmi", "nginx:alpine", check=False)
    assert p.returncode == 1 and p.stderr.startswith('error: image "nginx:alpine" is in use by pod ngx')
    env.minipod("rm", "-f", "ngx")
    assert env.minipod("rmi", "nginx:alpine").stdout == "Untagged: nginx:alpine\n"
    assert env.store.tags() == {}


@pytest.mark.parametrize("spec", sorted(f for f in os.listdir(os.path.join(REPO_ROOT, "specs"))
                                        if f.endswith(".yaml")))
def test_every_lab_spec_runs_unchanged(env, spec):
    path = os.path.join(REPO_ROOT, "specs", spec)
    env.minipod("run", "-d", path)
    names = sorted(os.listdir(os.path.join(env.root, "pods")))
    assert names
    for name in names:
        env.wait(lambda: env.pod(name)["status"]["phase"] in ("Running", "Succeeded"), what=f"{name} running")


def test_pull_with_the_registry_stopped_fails_in_one_line(env, tmp_path):
    reg = distribution.Distribution(str(tmp_path / "reg"))
    reg.start()
    try:
        reg.push("library/busybox", "latest", images.lab_images()["busybox:latest"])
        reg.stop()
        p = env.minipod("pull", f"{reg.host}/library/busybox", check=False)
    finally:
        reg.remove()
    assert p.returncode == 1
    assert p.stderr == (f"error: pull {reg.host}/library/busybox:latest: http://{reg.host}: "
                        "connection refused (is the registry running?)\n")
    assert files_in(env.store) == [] or set(files_in(env.store)) <= {"content.lock", "repositories.lock"}


def test_two_concurrent_pulls_of_the_same_image(env):
    cmd = [sys.executable, "-m", "minipod", "pull", "debian"]
    procs = [subprocess.Popen(cmd, env=env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    reap_orphans()
    assert [p.returncode for p in procs] == [0, 0], outs
    img = env.store.resolve("debian")
    assert sorted(os.listdir(env.store.layers)) == sorted(os.path.basename(d) for d in img.layers)
    leftovers = [f for f in files_in(env.store) if ".tmp-" in f or f.startswith("ingest/")]
    assert leftovers == []
    # Everything verifies: each blob still hashes to its name.
    for name in os.listdir(os.path.join(env.store.blobs, "sha256")):
        env.store.read_blob("sha256:" + name)


def test_bearer_token_registry_in_front(env, lab):
    with server.FakeRegistry(auth="bearer", upstream=lab.url, users={"ci": "pa55"}, anonymous=False,
                             cdn=True) as front:
        ref = f"{front.host}/library/nginx:alpine"
        p = env.minipod("pull", ref, check=False)
        assert p.returncode == 1
        (line,) = p.stderr.splitlines()
        assert "refused a token anonymously" in line
        with open(os.path.join(env.base, "auth.json"), "w") as f:
            json.dump({"auths": {front.host: {"username": "ci", "password": "pa55"}}}, f)
        env.minipod("pull", ref)
        assert env.store.resolve(ref).config["Cmd"][0] == "httpd"
        assert front.cdn_log and not any("Authorization" in h for _, _, h in front.cdn_log)


def test_import_oci_archive_then_run_with_pull_policy_never(env, tmp_path):
    layout = tmp_path / "layout"
    img = images.image([images.busybox_tar(), images.tar([("etc/imported", "file", "yes\n")])],
                       {"Cmd": ["sh", "-c", "cat /etc/imported"]})
    images.write_oci_layout(str(layout), {"localhost/offline:1": img})
    archive = tmp_path / "offline.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(layout, arcname=".")
    assert env.minipod("image", "import", str(archive)).stdout == "Loaded image: localhost/offline:1\n"
    spec = env.write("offline.yaml", """
apiVersion: v1
kind: Pod
metadata:
  name: offline
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: localhost/offline:1
    imagePullPolicy: Never
  - name: missing
    image: localhost/never-imported:1
    imagePullPolicy: Never
""")
    p = env.minipod("run", spec, check=False)
    assert p.returncode == 1 and "localhost/never-imported:1" in p.stderr and "Never" in p.stderr
    spec2 = env.write("offline2.yaml", open(spec).read().split("  - name: missing")[0])
    p = env.minipod("run", spec2)
    assert env.minipod("logs", "offline").stdout == "yes\n"
