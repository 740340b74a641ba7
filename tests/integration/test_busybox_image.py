"""busybox:latest built offline from the host's busybox-static: a shell runs in its layer."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from minipod.images import busybox
from minipod.images.store import ImageStore, host_arch

BUSYBOX = "/bin/busybox"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chroot, owners in the layer)"),
    pytest.mark.skipif(not os.access(BUSYBOX, os.X_OK), reason="needs busybox-static (apt-get install busybox-static)"),
]


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(str(tmp_path / "images"))


def chroot(layer: str, script: str, *opts: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["chroot", *opts, layer, "/bin/sh", "-c", script],
        capture_output=True, text=True, timeout=60, env={"PATH": "/bin:/usr/bin:/sbin:/usr/sbin"},
    )


def test_provision_builds_a_runnable_oci_image(store):
    image = busybox.provision(store, BUSYBOX)
    assert image.ref == "docker.io/library/busybox:latest"
    assert image.config == {"Cmd": ["sh"], "Env": [busybox.PATH_ENV]}
    assert len(image.layers) == 1
    layer = image.layers[0]

    bin_applets = [a for a in busybox.applets(BUSYBOX) if a.startswith("bin/") and a.count("/") == 1]
    expected_bin = len(set(bin_applets) | {"bin/busybox"})
    r = chroot(layer, "echo ok; ls /bin | wc -l")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", str(expected_bin)]

    # A non-root user from /etc/passwd, a writable /tmp, httpd's docroot, PATH applets.
    r = chroot(layer, "id -un; touch /tmp/x && echo tmp-ok; rm /tmp/x; which httpd wget", "--userspec=65534:65534")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["nobody", "tmp-ok", "/usr/sbin/httpd", "/usr/bin/wget"]
    assert stat.S_IMODE(os.stat(Path(layer, "tmp")).st_mode) == 0o1777
    assert os.path.isdir(Path(layer, "var/www"))
    for d in ("proc", "sys", "dev", "etc", "root"):
        assert os.path.isdir(Path(layer, d))

    # The blobs are a real OCI image: manifest -> config -> layer, all verified by digest.
    manifest = json.loads(store.read_blob(image.digest))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    config = json.loads(store.read_blob(manifest["config"]["digest"]))
    assert (config["architecture"], config["os"]) == (host_arch(), "linux")
    assert store.has_blob(manifest["layers"][0]["digest"])
    assert [s.ref for s in store.images()] == [image.ref]


def test_provision_is_idempotent_and_deterministic(store, tmp_path):
    first = busybox.provision(store, BUSYBOX)
    repos = Path(store.root, "repositories.json")
    before = repos.stat().st_mtime_ns
    marker = Path(first.layers[0], "marker")
    marker.write_text("not unpacked again")
    again = busybox.provision(store, BUSYBOX)
    assert again == first
    assert repos.stat().st_mtime_ns == before and marker.exists()

    # Same binary, fresh store: the same digest (sorted names, mtime 0, owner 0:0).
    other = busybox.provision(ImageStore(str(tmp_path / "other")), BUSYBOX)
    assert other.digest == first.digest


def test_module_entry_point(tmp_path):
    root = tmp_path / "cli-images"
    r = subprocess.run(
        [sys.executable, "-m", "minipod.images.busybox", "--image-root", str(root)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    ref, digest = r.stdout.split()
    assert ref == "docker.io/library/busybox:latest" and digest.startswith("sha256:")
    assert ImageStore(str(root)).resolve("busybox").digest == digest


def test_dynamic_busybox_is_refused(store, tmp_path):
    dynamic = shutil.which("ls")  # any dynamically linked executable
    with pytest.raises(busybox.BusyboxError, match="dynamically linked"):
        busybox.provision(store, dynamic)
    with pytest.raises(busybox.BusyboxError, match="busybox-static"):
        busybox.provision(store, str(tmp_path / "no-such-busybox"))
