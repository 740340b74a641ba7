"""pull/ensure/gc/import/CLI commands against an in-process fake registry and a tmp_path store.

Unpacking layers preserves owners and makes whiteout devices, so most tests need root.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import types

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))

from registry import images, server  # noqa: E402

from minipod.errors import Conflict  # noqa: E402
from minipod.images import archive, commands, gc, progress, pull  # noqa: E402
from minipod.images.store import ImageStore, host_arch  # noqa: E402

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root (chown, mknod)")
pytestmark = needs_root


def small(text: str = "x") -> images.Image:
    return images.image([images.tar([("etc/base", "file", "base\n")]),
                         images.tar([("etc/top", "file", text)])])


@pytest.fixture
def env(tmp_path):
    """(store, cfg, fake registry mirroring docker.io only)."""
    with server.FakeRegistry() as reg:
        conf = tmp_path / "registries.toml"
        conf.write_text(f'[registry."docker.io"]\nmirrors = ["{reg.url}"]\nmirrors_only = true\n')
        cfg = types.SimpleNamespace(registries=str(conf), auth_file=str(tmp_path / "auth.json"),
                                    root=str(tmp_path / "run"), image_root=str(tmp_path / "images"))
        yield ImageStore(cfg.image_root), cfg, reg


def leftovers(store: ImageStore) -> list[str]:
    out = []
    for d, dirs, files in os.walk(store.root):
        out += [os.path.join(d, n) for n in dirs + files if n.startswith((".tmp-", ".trash-"))]
    if os.path.isdir(store.ingest):
        out += os.listdir(store.ingest)
    return out


def test_pull_stores_and_tags(env):
    store, cfg, reg = env
    img = small()
    reg.store.add("library/app", "v1", img)
    res = pull.pull(store, cfg, "app:v1")
    assert (res.ref, res.digest, res.pulled) == ("docker.io/library/app:v1", img.digest, True)
    got = store.resolve("app:v1")
    assert open(os.path.join(got.layers[1], "etc/top")).read() == "x"
    assert leftovers(store) == []


def test_index_pull_picks_host_platform_and_skips_the_other(env):
    store, cfg, reg = env
    mine, other = small("mine"), small("other")
    idx = images.index({images.other_arch(): other, host_arch(): mine}, omit_media_type=True)
    reg.store.add("library/multi", "1", idx)
    pull.pull(store, cfg, "multi:1")
    layers = store.resolve("multi:1").layers
    assert open(os.path.join(layers[1], "etc/top")).read() == "mine"
    assert not store.has_blob(other.digest)
    lone = images.index({images.other_arch(): other})
    reg.store.add("library/foreign", "1", lone)
    with pytest.raises(pull.PullError, match=f"no linux/{host_arch()} image .*it has: linux/{images.other_arch()}"):
        pull.pull(store, cfg, "foreign:1")
    assert "docker.io/library/foreign:1" not in store.tags()


def test_second_pull_of_an_unchanged_tag_only_asks_head(env):
    store, cfg, reg = env
    reg.store.add("library/app", "latest", small())
    pull.pull(store, cfg, "app")
    reg.log.clear()
    assert pull.pull(store, cfg, "app").pulled is False
    assert [m for m, _, _ in reg.log] == ["HEAD"]
    # A moved tag is pulled; the shared base layer is not downloaded again.
    new = small("new")
    reg.store.add("library/app", "latest", new)
    reg.log.clear()
    assert pull.pull(store, cfg, "app").digest == new.digest
    blob_gets = [p for m, p, _ in reg.log if "/blobs/" in p]
    assert len(blob_gets) == 2  # config + the changed layer, not the base


def test_pinned_digest_needs_no_request_once_present(env):
    store, cfg, reg = env
    img = small()
    reg.store.add("library/app", "v1", img)
    ref = f"app@{img.digest}"
    pull.pull(store, cfg, ref)
    reg.log.clear()
    assert pull.pull(store, cfg, ref).pulled is False
    assert reg.log == []


def test_mirror_falls_back_to_the_next_endpoint(tmp_path):
    with server.FakeRegistry() as empty, server.FakeRegistry() as full:
        img = small()
        full.store.add("library/app", "v1", img)
        conf = tmp_path / "r.toml"
        conf.write_text(f'[registry."docker.io"]\nmirrors = ["http://127.0.0.1:1", "{empty.url}", "{full.url}"]\n'
                        "mirrors_only = true\n")
        cfg = types.SimpleNamespace(registries=str(conf), auth_file="", root=str(tmp_path))
        store = ImageStore(str(tmp_path / "images"))
        assert pull.pull(store, cfg, "app:v1").endpoint == full.url
        with pytest.raises(pull.PullError) as e:
            pull.pull(store, cfg, "app:nope")
        msg = str(e.value)
        assert msg.startswith("pull app:nope: mirror http://127.0.0.1:1: connection refused")
        assert "\n" not in msg and msg.count("not found (404") == 2
        assert e.value.unreachable is False


def test_failed_pull_leaves_no_tag_and_no_partial_blob(env):
    store, cfg, reg = env
    img = small()
    reg.store.add("library/app", "v1", img)
    layer = json.loads(img.manifest)["layers"][1]["digest"]
    reg.tamper.add(layer)
    with pytest.raises(pull.PullError, match="corrupt or tampered"):
        pull.pull(store, cfg, "app:v1")
    assert store.tags() == {} and not store.has_blob(layer)
    # The tampered download was emptied; the other layer's partial may stay, for a resume.
    partial = os.path.join(store.ingest, layer[7:] + ".partial")
    assert not os.path.exists(partial) or os.path.getsize(partial) == 0
    # The registry is fixed: the next pull succeeds (and reuses what was verified).
    reg.tamper.clear()
    pull.pull(store, cfg, "app:v1")
    assert store.resolve("app:v1") and leftovers(store) == []


def test_a_partial_download_left_by_a_killed_pull_is_resumed(env):
    import random

    store, cfg, reg = env
    img = images.image([images.tar([("big", "file", random.Random(1).randbytes(300_000))])])
    reg.store.add("library/big", "1", img)
    layer = json.loads(img.manifest)["layers"][0]["digest"]
    half = len(img.blobs[layer]) // 2
    os.makedirs(store.ingest)
    with open(os.path.join(store.ingest, layer[7:] + ".partial"), "wb") as f:
        f.write(img.blobs[layer][:half])
    pull.pull(store, cfg, "big:1")
    assert [h.get("Range") for _, p, h in reg.log if layer in p] == [f"bytes={half}-"]
    assert store.resolve("big:1") and leftovers(store) == []


def test_unsafe_layer_is_refused_and_writes_nothing_outside(env, tmp_path):
    store, cfg, reg = env
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = images.image([images.tar([
        ("etc", "dir"),
        ("etc/escape", "symlink", str(outside)),
        ("etc/escape/pwned", "file", "gotcha"),
    ])])
    reg.store.add("library/evil", "1", evil)
    with pytest.raises(pull.PullError, match="symlink"):
        pull.pull(store, cfg, "evil:1")
    dotdot = images.image([images.tar([("../../outside/pwned2", "file", "gotcha")])])
    reg.store.add("library/evil", "2", dotdot)
    with pytest.raises(pull.PullError, match=r"'\.\.'"):
        pull.pull(store, cfg, "evil:2")
    assert list(outside.iterdir()) == []
    assert store.tags() == {}


def test_zstd_and_non_image_artifacts_are_refused_before_download(env):
    store, cfg, reg = env
    img = small()
    m = json.loads(img.manifest)
    m["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    img.manifest = json.dumps(m).encode()
    reg.store.add("library/z", "1", img)
    with pytest.raises(pull.PullError, match="zstd"):
        pull.pull(store, cfg, "z:1")
    m["layers"][0]["mediaType"] = images.OCI_LAYER_GZIP
    m["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    img.manifest = json.dumps(m).encode()
    reg.store.add("library/z", "2", img)
    with pytest.raises(pull.PullError, match="not a container image"):
        pull.pull(store, cfg, "z:2")
    fetched = " ".join(p for _, p, _ in reg.log)
    assert not any(layer["digest"] in fetched for layer in m["layers"])


# -- ensure: imagePullPolicy ---------------------------------------------------------------------


@pytest.mark.parametrize("image, policy", [
    ("busybox", "Always"), ("busybox:latest", "Always"), ("nginx:alpine", "IfNotPresent"),
    ("localhost:5000/app", "Always"), ("localhost:5000/app:v2", "IfNotPresent"),
    ("busybox@sha256:" + "a" * 64, "IfNotPresent"), ("busybox:latest@sha256:" + "a" * 64, "IfNotPresent"),
])
def test_default_policy_follows_kubernetes(image, policy):
    assert pull.default_policy(image) == policy


def test_ensure_policies(env):
    store, cfg, reg = env
    reg.store.add("library/app", "v1", small())
    reg.store.add("library/app", "latest", small())
    with pytest.raises(pull.ImageNeverPull, match="imagePullPolicy is Never"):
        pull.ensure(store, cfg, "app:v1", "Never")
    assert reg.log == []
    pull.ensure(store, cfg, "app:v1", None)  # IfNotPresent: pulls
    reg.log.clear()
    pull.ensure(store, cfg, "app:v1", None)  # present: no request
    pull.ensure(store, cfg, "app:v1", "Never")
    assert reg.log == []
    pull.ensure(store, cfg, "app", None)  # Always: pulls
    reg.log.clear()
    pull.ensure(store, cfg, "app", None)  # Always, unchanged: one HEAD
    assert [m for m, _, _ in reg.log] == ["HEAD"]


def test_ensure_always_uses_the_local_image_when_offline(env):
    store, cfg, reg = env
    reg.store.add("library/app", "latest", small())
    pull.ensure(store, cfg, "app", "Always")
    reg.__exit__()  # the registry goes away
    err = io.StringIO()
    pull.ensure(store, cfg, "app", "Always", err=err)
    assert err.getvalue().startswith("warning: pull app:latest: mirror http://127.0.0.1:")
    assert "connection refused" in err.getvalue() and "using the local image" in err.getvalue()
    with pytest.raises(pull.PullError, match="connection refused"):
        pull.ensure(store, cfg, "other", "Always", err=err)


def test_ensure_always_does_not_hide_a_missing_image(env):
    store, cfg, reg = env
    reg.store.add("library/app", "latest", small())
    pull.ensure(store, cfg, "app", "Always")
    del reg.store.tags[("library/app", "latest")]
    with pytest.raises(pull.PullError, match="not found"):
        pull.ensure(store, cfg, "app", "Always")


# -- in use, rmi, gc -----------------------------------------------------------------------------


def write_plan(cfg, pod: str, image, ref: str) -> None:
    d = os.path.join(cfg.root, "pods", pod)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "plan.json"), "w") as f:
        json.dump({"init_containers": [], "containers": [
            {"name": "c", "image_ref": ref, "image_digest": image.digest, "layers": image.layers}]}, f)


def cli(cfg, *argv) -> tuple[int, str]:
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    commands.add_parsers(p.add_subparsers(dest="cmd", required=True))
    args = p.parse_args(list(argv))
    conf = os.path.join(cfg.root, "config.toml")
    os.makedirs(cfg.root, exist_ok=True)
    with open(conf, "w") as f:
        f.write(f'root = "{cfg.root}"\nimage_root = "{cfg.image_root}"\nregistries = "{cfg.registries}"\n')
    args.config = conf
    out = io.StringIO()
    old, sys.stdout = sys.stdout, out
    try:
        code = args.func(args)
    finally:
        sys.stdout = old
    return code, out.getvalue()


def test_cli_pull_images_rmi(env):
    store, cfg, reg = env
    reg.store.add("library/app", "v1", small())
    reg.store.add("team/tool", "2.0", small("tool"))
    code, out = cli(cfg, "pull", "app:v1")
    assert code == 0 and out.splitlines()[-1] == "docker.io/library/app:v1"
    assert "Status: Downloaded newer image for app:v1" in out
    cli(cfg, "pull", "-q", "team/tool:2.0")
    code, out = cli(cfg, "images")
    lines = out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "SIZE"]
    assert [ln.split()[:2] for ln in lines[1:]] == [["app", "v1"], ["team/tool", "2.0"]]
    assert cli(cfg, "images", "-q")[1].split() == ["app:v1", "team/tool:2.0"]
    write_plan(cfg, "web", store.resolve("app:v1"), "docker.io/library/app:v1")
    with pytest.raises(Conflict, match='image "app:v1" is in use by pod web'):
        cli(cfg, "rmi", "app:v1")
    assert cli(cfg, "rmi", "team/tool:2.0") == (0, "Untagged: team/tool:2.0\n")
    assert list(store.tags()) == ["docker.io/library/app:v1"]


def test_rmi_force_keeps_what_a_pod_uses_and_gc_collects_after(env):
    store, cfg, reg = env
    reg.store.add("library/app", "v1", small())
    pull.pull(store, cfg, "app:v1")
    used = store.resolve("app:v1")
    write_plan(cfg, "web", used, "docker.io/library/app:v1")
    assert cli(cfg, "rmi", "-f", "app:v1")[0] == 0
    assert store.tags() == {}
    assert all(os.path.isdir(d) for d in used.layers) and store.has_blob(used.digest)
    res = gc.collect(store, keep=pull.in_use(cfg))
    assert (res.blobs, res.layers) == (0, 0)
    os.remove(os.path.join(cfg.root, "pods", "web", "plan.json"))
    res = gc.collect(store, keep=pull.in_use(cfg))
    assert (res.blobs, res.layers) == (4, 2)  # manifest, config, 2 layer blobs; 2 layer dirs
    assert os.listdir(store.layers) == [] and leftovers(store) == []


def test_gc_keeps_tagged_and_removes_orphans_and_partials(env):
    store, cfg, reg = env
    reg.store.add("library/app", "latest", small("one"))
    pull.pull(store, cfg, "app")
    reg.store.add("library/app", "latest", small("two"))  # the tag moves: "one" is dangling
    pull.pull(store, cfg, "app")
    os.makedirs(store.ingest, exist_ok=True)
    open(os.path.join(store.ingest, "ab" * 32 + ".partial"), "wb").write(b"half")
    dry = gc.collect(store, dry_run=True)
    assert (dry.blobs, dry.layers, dry.partials) == (3, 1, 1)
    res = gc.collect(store)
    assert (res.blobs, res.layers, res.partials) == (3, 1, 1) and res.bytes > 0
    img = store.resolve("app")
    assert open(os.path.join(img.layers[1], "etc/top")).read() == "two"
    assert gc.collect(store).blobs == 0


# -- import ----------------------------------------------------------------------------------------


def test_import_oci_layout_dir_and_tar(env, tmp_path):
    store, cfg, _ = env
    layout = tmp_path / "layout"
    mine = small("mine")
    idx = images.index({host_arch(): mine, images.other_arch(): small("other")})
    images.write_oci_layout(str(layout), {"docker.io/library/multi:1": idx, "3.0": small("bare-tag")})
    with pytest.raises(archive.ImportError_, match="names only the tag '3.0'"):
        archive.import_archive(store, str(layout))
    tarball = tmp_path / "layout.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(layout, arcname=".")
    got = archive.import_archive(store, str(tarball), "team/app")
    assert sorted(got) == ["docker.io/library/multi:1", "docker.io/team/app:3.0"]
    assert open(os.path.join(store.resolve("multi:1").layers[1], "etc/top")).read() == "mine"
    assert open(os.path.join(store.resolve("team/app:3.0").layers[1], "etc/top")).read() == "bare-tag"
    assert leftovers(store) == []


def test_import_docker_save_archive_with_symlinked_layer(env, tmp_path):
    store, cfg, _ = env
    base = images.tar([("etc/base", "file", "base\n")])
    top = images.tar([("etc/top", "file", "docker-save\n")])
    config = {"architecture": host_arch(), "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": [images.sha(base), images.sha(top)]}}
    cfg_bytes = json.dumps(config).encode()
    path = tmp_path / "saved.tar"
    with tarfile.open(path, "w") as tf:
        def add(name, data=None, link=None):
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        add("aaa/layer.tar", base)
        add("bbb/layer.tar", top)
        add("ccc/layer.tar", link="../aaa/layer.tar")  # docker save's shared-layer symlink
        add(images.sha(cfg_bytes)[7:] + ".json", cfg_bytes)
        add("manifest.json", json.dumps([
            {"Config": images.sha(cfg_bytes)[7:] + ".json", "RepoTags": ["saved:1", "example.com/x/saved:1"],
             "Layers": ["ccc/layer.tar", "bbb/layer.tar"]}]).encode())
    code, out = cli(cfg, "image", "import", str(path))
    assert code == 0 and out.splitlines() == ["Loaded image: saved:1", "Loaded image: example.com/x/saved:1"]
    img = store.resolve("saved:1")
    assert open(os.path.join(img.layers[0], "etc/base")).read() == "base\n"
    assert img.config == {"Cmd": ["sh"]} and store.resolve("example.com/x/saved:1").digest == img.digest
    # A layer that does not match its diff_id is refused.
    config["rootfs"]["diff_ids"][1] = images.sha(b"other")
    bad = tmp_path / "bad"
    (bad / "l").mkdir(parents=True)
    (bad / "l" / "layer.tar").write_bytes(base)
    (bad / "c.json").write_text(json.dumps({**config, "rootfs": {"diff_ids": [images.sha(b"x")]}}))
    (bad / "manifest.json").write_text(json.dumps([{"Config": "c.json", "RepoTags": ["bad:1"], "Layers": ["l/layer.tar"]}]))
    with pytest.raises(archive.ImportError_, match="digest mismatch"):
        archive.import_archive(store, str(bad))
    assert "docker.io/library/bad:1" not in store.tags()


def test_import_refuses_paths_outside_the_archive(env, tmp_path):
    store, _, _ = env
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(archive.ImportError_, match="outside the archive"):
        archive.import_archive(store, str(path))
    assert not (tmp_path / "escape").exists() and leftovers(store) == []


# -- progress --------------------------------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_tty():
    assert isinstance(progress.for_stream(io.StringIO()), progress.Quiet)
    assert not isinstance(progress.for_stream(io.StringIO()), progress.Progress)
    out = FakeTTY()
    bar = progress.for_stream(out)
    assert isinstance(bar, progress.Progress)
    d = "sha256:" + "ab" * 32
    bar.start(d, 3_000_000)
    bar.advance(d, 1_500_000)
    bar.status(d, "Pull complete")
    bar.close()
    text = out.getvalue()
    assert "abababababab: Waiting" in text and "abababababab: Pull complete" in text
    assert "\x1b[1F" in text  # redrawn in place
