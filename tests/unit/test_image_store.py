"""The local image store in a tmp_path: blobs, layers (unpack, whiteouts, escapes), tags.

Unpacking preserves owners and makes device nodes and trusted.* xattrs, so those tests need
root (they are skipped otherwise); everything stays inside tmp_path.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import struct
import tarfile
import uuid
from pathlib import Path

import pytest

from minipod.errors import NotFound
from minipod.images import store as storemod
from minipod.images.store import (
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST,
    ImageNotFound,
    ImageStore,
    LayerError,
    StoreError,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root (chown, mknod, trusted.* xattrs)")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- building test tarballs -----------------------------------------------------------------


def member(name: str, kind: str = "file", data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0,
           link: str = "", dev: tuple[int, int] = (0, 0), pax: dict | None = None):
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 1_600_000_000
    info.type = {
        "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
        "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
    }[kind]
    info.linkname = link
    info.devmajor, info.devminor = dev
    if pax:
        info.pax_headers = pax
    if kind == "file":
        info.size = len(data)
        return info, data
    return info, None


def tar_bytes(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def write_layer(directory: Path, members, gz: bool = False) -> tuple[Path, bytes]:
    """Write a layer tarball; return (path, uncompressed tar bytes)."""
    raw = tar_bytes(members)
    data = gzip.compress(raw, mtime=0) if gz else raw
    path = directory / f"layer-{uuid.uuid4().hex[:8]}.tar{'.gz' if gz else ''}"
    path.write_bytes(data)
    return path, raw


def make_image(store: ImageStore, ref: str, layers: list[Path], config: dict | None = None) -> str:
    """Add layers, config and manifest like a puller would; tag `ref`; return the manifest digest."""
    added = [store.add_layer(p) for p in layers]
    cfg = {
        "architecture": storemod.host_arch(),
        "os": "linux",
        "config": config or {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in added]},
    }
    cfg_digest, cfg_size = store.put_json(cfg)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": cfg_digest, "size": cfg_size},
        "layers": [
            {"mediaType": MEDIA_OCI_LAYER_GZIP if p.suffix == ".gz" else MEDIA_OCI_LAYER, "digest": l.digest,
             "size": p.stat().st_size}
            for p, l in zip(layers, added)
        ],
    }
    digest, _ = store.put_json(manifest)
    store.tag(ref, digest)
    return digest


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(str(tmp_path / "images"))


def leftovers(store: ImageStore) -> list[str]:
    """Temp files/dirs the store left behind (there must be none after any operation)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(store.root):
        if os.path.dirname(dirpath) == store.layers:
            dirnames[:] = []  # inside an unpacked layer: its own files
            continue
        found += [os.path.join(dirpath, n) for n in dirnames + filenames if n.startswith((".tmp-", ".trash-"))]
    return found


# -- blobs ----------------------------------------------------------------------------------


def test_put_blob_bytes_and_file_are_content_addressed(store, tmp_path):
    data = b'{"hello": "world"}'
    digest = store.put_blob(data)
    assert digest == sha(data)
    path = Path(store.root, "blobs", "sha256", digest[7:])
    assert path.read_bytes() == data
    src = tmp_path / "src"
    src.write_bytes(data)
    assert store.put_blob(str(src)) == digest  # same content, same blob
    assert store.put_blob(data, expected=digest) == digest
    assert store.read_blob(digest) == data
    assert leftovers(store) == []


def test_put_blob_refuses_wrong_expected_digest(store, tmp_path):
    wrong = sha(b"something else")
    with pytest.raises(StoreError, match="digest mismatch"):
        store.put_blob(b"data", expected=wrong)
    src = tmp_path / "src"
    src.write_bytes(b"data")
    with pytest.raises(StoreError, match="digest mismatch"):
        store.put_blob(src, expected=wrong)
    assert not store.has_blob(sha(b"data")) and not store.has_blob(wrong)
    assert leftovers(store) == []


def test_read_blob_detects_corruption(store):
    digest = store.put_blob(b"original")
    Path(store.blob_path(digest)).write_bytes(b"tampered")
    with pytest.raises(StoreError, match="corrupt"):
        store.read_blob(digest)


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "a" * 32, "sha256:" + "A" * 64, "nodigest"])
def test_invalid_digests_are_refused(store, bad):
    with pytest.raises(StoreError, match="invalid digest"):
        store.blob_path(bad)


# -- tag / resolve / images / remove --------------------------------------------------------


@needs_root
def test_round_trip_tag_resolve(store, tmp_path):
    l1, raw1 = write_layer(tmp_path, [member("bin/", "dir", mode=0o755), member("bin/a", data=b"A", mode=0o755)])
    l2, raw2 = write_layer(tmp_path, [member("etc/conf", data=b"B")], gz=True)
    config = {"Env": ["PATH=/bin"], "Cmd": ["a"], "Entrypoint": None, "WorkingDir": "/", "User": "0",
              "StopSignal": "SIGQUIT"}
    digest = make_image(store, "example.com/team/app:v1", [l1, l2], config)

    image = store.resolve("example.com/team/app:v1")
    assert image.ref == "example.com/team/app:v1"
    assert image.digest == digest
    assert image.config == config
    # Bottom-first, absolute, named by the first 16 hex digits of each diff_id.
    assert image.layers == [os.path.join(store.root, "layers", sha(raw)[7:23]) for raw in (raw1, raw2)]
    assert Path(image.layers[0], "bin/a").read_bytes() == b"A"
    assert Path(image.layers[1], "etc/conf").read_bytes() == b"B"

    repos = json.loads(Path(store.root, "repositories.json").read_text())
    assert repos == {"example.com/team/app:v1": digest}
    # By digest too, with or without the tag.
    assert store.resolve(f"example.com/team/app@{digest}").layers == image.layers
    assert leftovers(store) == []


def test_image_not_found_message(store):
    with pytest.raises(ImageNotFound) as exc:
        store.resolve("nginx")
    assert str(exc.value) == 'image "nginx:latest" not found in the local store (docker.io/library/nginx:latest)'
    assert isinstance(exc.value, NotFound)
    with pytest.raises(ImageNotFound, match=r'image "busybox@sha256:'):
        store.resolve("busybox@" + sha(b"nothing"))


def test_invalid_reference_is_a_value_error(store):
    with pytest.raises(ValueError, match="invalid image reference 'Nginx'"):
        store.resolve("Nginx")


def test_tag_needs_the_manifest_blob(store):
    with pytest.raises(StoreError, match="is not in"):
        store.tag("busybox", sha(b"missing"))
    assert not Path(store.root, "repositories.json").exists()


@needs_root
def test_resolve_reports_a_missing_layer_dir(store, tmp_path):
    layer, _ = write_layer(tmp_path, [member("f", data=b"x")])
    make_image(store, "app", [layer])
    path = store.resolve("app").layers[0]
    os.rename(path, path + "-moved")
    with pytest.raises(ImageNotFound, match="is not unpacked at"):
        store.resolve("app")


@needs_root
def test_index_resolves_to_this_hosts_platform(store, tmp_path):
    layer, _ = write_layer(tmp_path, [member("f", data=b"x")])
    manifest_digest = make_image(store, "app:single", [layer])
    other = store.put_json({"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "layers": []})[0]
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [
            {"mediaType": MEDIA_OCI_MANIFEST, "digest": other, "size": 1,
             "platform": {"os": "linux", "architecture": "not-" + storemod.host_arch()}},
            {"mediaType": MEDIA_OCI_MANIFEST, "digest": manifest_digest, "size": 1,
             "platform": {"os": "linux", "architecture": storemod.host_arch()}},
        ],
    }
    index_digest, _ = store.put_json(index)
    store.tag("app:multi", index_digest)
    image = store.resolve("app:multi")
    assert image.digest == index_digest
    assert image.layers == store.resolve("app:single").layers


@needs_root
def test_layer_shared_by_two_images_is_unpacked_once(store, tmp_path):
    base, base_raw = write_layer(tmp_path, [member("base", data=b"shared")])
    top1, _ = write_layer(tmp_path, [member("one", data=b"1")])
    top2, _ = write_layer(tmp_path, [member("two", data=b"2")])
    make_image(store, "one", [base, top1])
    shared = store.resolve("one").layers[0]
    # A marker inside the unpacked layer survives only if the second image does not unpack again.
    Path(shared, "marker").write_text("still here")
    inode = os.stat(shared).st_ino
    make_image(store, "two", [base, top2])
    assert store.resolve("two").layers[0] == shared
    assert os.stat(shared).st_ino == inode and Path(shared, "marker").exists()
    assert sorted(os.listdir(store.layers)) == sorted(os.path.basename(p) for p in
                                                      store.resolve("one").layers + store.resolve("two").layers[1:])
    # add_layer with a known diff_id skips the unpack as well.
    again = store.add_layer(base, diff_id=sha(base_raw))
    assert again.path == shared and Path(shared, "marker").exists()


@needs_root
def test_images_lists_and_remove_keeps_shared_layers(store, tmp_path):
    base, _ = write_layer(tmp_path, [member("base", data=b"shared")])
    top, _ = write_layer(tmp_path, [member("top", data=b"t")])
    d1 = make_image(store, "one", [base, top])
    d2 = make_image(store, "two", [base])
    one = store.resolve("one")
    summaries = store.images()
    assert [(s.ref, s.digest) for s in summaries] == [
        ("docker.io/library/one:latest", d1), ("docker.io/library/two:latest", d2)]
    assert summaries[0].size == sum(json.loads(store.read_blob(d1))["layers"][i]["size"] for i in (0, 1)) + \
        json.loads(store.read_blob(d1))["config"]["size"]

    assert store.remove("one") == d1
    with pytest.raises(ImageNotFound):
        store.resolve("one")
    assert not store.has_blob(d1)
    assert not os.path.exists(one.layers[1])  # only "one" used it
    assert os.path.isdir(one.layers[0])  # "two" still does
    assert store.resolve("two").layers == [one.layers[0]]
    assert [s.ref for s in store.images()] == ["docker.io/library/two:latest"]
    with pytest.raises(ImageNotFound):
        store.remove("one")
    assert leftovers(store) == []


# -- unpacking ------------------------------------------------------------------------------


@needs_root
def test_gzip_layer_digest_diff_id_and_verification(store, tmp_path):
    path, raw = write_layer(tmp_path, [member("hello", data=b"hi")], gz=True)
    layer = store.add_layer(path)
    assert layer.digest == sha(path.read_bytes()) and layer.diff_id == sha(raw)
    assert layer.digest != layer.diff_id
    assert Path(store.blob_path(layer.digest)).read_bytes() == path.read_bytes()
    assert Path(layer.path, "hello").read_bytes() == b"hi"

    other, other_raw = write_layer(tmp_path, [member("other", data=b"o")], gz=True)
    with pytest.raises(StoreError, match="digest mismatch"):
        store.add_layer(other, diff_id=sha(b"not the tar"))
    with pytest.raises(StoreError, match="digest mismatch"):
        store.add_layer(other, digest=sha(b"not the blob"))
    assert not os.path.exists(store.layer_dir(sha(other_raw)))
    assert not store.has_blob(sha(other.read_bytes()))
    # With the right diff_id: one pass hashes, stores and unpacks.
    ok = store.add_layer(other, digest=sha(other.read_bytes()), diff_id=sha(other_raw))
    assert Path(ok.path, "other").read_bytes() == b"o"
    assert leftovers(store) == []


# struct vfs_cap_data, revision 2 with the effective bit: permitted = cap_setuid(7) | cap_net_raw(13).
CAPS = struct.pack("<IIIII", 0x02000001, (1 << 7) | (1 << 13), 0, 0, 0)


@needs_root
def test_metadata_is_preserved(store, tmp_path):
    path, _ = write_layer(tmp_path, [
        member("usr/", "dir", mode=0o755),
        member("usr/bin/", "dir", mode=0o755),
        member("usr/bin/su", data=b"ELF", mode=0o4755, uid=0, gid=0),
        member("usr/bin/tool", data=b"T", mode=0o2711, uid=1000, gid=50),
        member("usr/bin/same", "hardlink", link="usr/bin/tool", mode=0o2711, uid=1000, gid=50),
        member("usr/bin/sh", "symlink", link="/bin/busybox", mode=0o777),
        member("tmp/", "dir", mode=0o1777),
        member("home/u/", "dir", mode=0o700, uid=1000, gid=1000),
        member("dev/null", "chr", mode=0o666, dev=(1, 3)),
        member("run/fifo", "fifo", mode=0o600),
        member("bin/ping", data=b"P", mode=0o755, pax={
            "SCHILY.xattr.user.note": "hello",
            # File capabilities (cap_net_raw + cap_setuid; a 0x80 byte that is not UTF-8) must
            # survive: chown clears them, so they are set after it.
            "SCHILY.xattr.security.capability": CAPS.decode("utf-8", "surrogateescape"),
            # A layer must not forge overlay metadata.
            "SCHILY.xattr.trusted.overlay.redirect": "/elsewhere",
        }),
    ])
    root = Path(store.add_layer(path).path)

    def mode(p):
        return stat.S_IMODE(os.lstat(root / p).st_mode)

    assert mode("usr/bin/su") == 0o4755
    assert mode("usr/bin/tool") == 0o2711
    st = os.lstat(root / "usr/bin/tool")
    assert (st.st_uid, st.st_gid) == (1000, 50)
    assert os.lstat(root / "usr/bin/same").st_ino == st.st_ino
    assert os.readlink(root / "usr/bin/sh") == "/bin/busybox"
    assert mode("tmp") == 0o1777
    assert (mode("home/u"), os.lstat(root / "home/u").st_uid) == (0o700, 1000)
    assert not os.path.lexists(root / "dev/null")  # device nodes are dropped (a warning says so)
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert os.getxattr(root / "bin/ping", "user.note") == b"hello"
    assert os.getxattr(root / "bin/ping", "security.capability") == CAPS
    assert "trusted.overlay.redirect" not in os.listxattr(root / "bin/ping")
    assert os.lstat(root / "usr/bin/su").st_mtime == 1_600_000_000
    assert os.lstat(root / "usr").st_mtime == 1_600_000_000  # set after its children were made
    assert mode(".") == 0o755  # a layer without a "./" entry gets an ordinary root


@needs_root
def test_whiteouts_become_overlay_whiteouts(store, tmp_path):
    path, _ = write_layer(tmp_path, [
        member("etc/", "dir", mode=0o755),
        member("etc/.wh.removed", data=b""),
        member("var/cache/.wh..wh..opq", data=b""),
        member("var/cache/new", data=b"n"),
        member("kept", data=b"k"),
        member(".wh.kept", data=b""),  # this layer's own file is not hidden by its whiteout
        member(".wh..wh.plnk", "dir"),  # AUFS bookkeeping: ignored
    ])
    root = Path(store.add_layer(path).path)
    wh = os.lstat(root / "etc/removed")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
    assert not os.path.lexists(root / "etc/.wh.removed")
    assert os.getxattr(root / "var/cache", "trusted.overlay.opaque") == b"y"
    assert not os.path.lexists(root / "var/cache/.wh..wh..opq")
    assert (root / "var/cache/new").read_bytes() == b"n"
    assert (root / "kept").read_bytes() == b"k"
    assert not os.path.lexists(root / ".wh..wh.plnk")


@needs_root
def test_later_member_replaces_earlier_without_following_symlinks(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("host data")
    path, _ = write_layer(tmp_path, [
        member("link", "symlink", link=str(secret)),
        member("link", data=b"layer data"),  # must replace the symlink, not write through it
        member("hl-src", "symlink", link=str(secret)),
        member("hl", "hardlink", link="hl-src"),  # a link to the symlink, not to the host file
        member("d/", "dir"),
        member("d/inner", data=b"x"),
        member("d", data=b"now a file"),  # a file replaces a whole directory
    ])
    root = Path(store.add_layer(path).path)
    assert secret.read_text() == "host data" and os.stat(secret).st_nlink == 1
    assert not os.path.islink(root / "link") and (root / "link").read_bytes() == b"layer data"
    assert os.path.islink(root / "hl") and os.readlink(root / "hl") == str(secret)
    assert (root / "d").read_bytes() == b"now a file"


ESCAPES = {
    "dotdot": lambda outside, tag: [member(f"../{tag}", data=b"escaped")],
    "nested-dotdot": lambda outside, tag: [member("a/", "dir"), member(f"a/../../{tag}", data=b"escaped")],
    "absolute": lambda outside, tag: [member(f"{outside}/{tag}", data=b"escaped")],
    "through-symlink": lambda outside, tag: [
        member("evil", "symlink", link=str(outside)),
        member(f"evil/{tag}", data=b"escaped"),
    ],
    "through-relative-symlink": lambda outside, tag: [
        member("up", "symlink", link="../../../.."),
        member(f"up/{tag}", data=b"escaped"),
    ],
    "symlink-dir-through-symlink": lambda outside, tag: [
        member("evil", "symlink", link=str(outside)),
        member(f"evil/{tag}/", "dir"),
    ],
    "hardlink-outside": lambda outside, tag: [member(tag, "hardlink", link=f"../../{tag}-target")],
    "hardlink-absolute": lambda outside, tag: [member(tag, "hardlink", link=f"{outside}/{tag}-target")],
    "hardlink-through-symlink": lambda outside, tag: [
        member("evil", "symlink", link=str(outside)),
        member(tag, "hardlink", link=f"evil/{tag}-target"),
    ],
    "whiteout-through-symlink": lambda outside, tag: [
        member("evil", "symlink", link=str(outside)),
        member(f"evil/.wh.{tag}-target", data=b""),
    ],
}


@needs_root
@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_members_cannot_escape_the_layer_dir(store, tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    tag = f"minipod-escape-{uuid.uuid4().hex[:8]}"
    target = outside / f"{tag}-target"
    target.write_text("host file")
    path, raw = write_layer(tmp_path, ESCAPES[case](outside, tag))

    def snapshot():
        return sorted(str(p) for p in tmp_path.rglob("*") if store.root not in str(p))

    before = snapshot()
    with pytest.raises(LayerError, match="refusing|not in this layer|does not exist"):
        store.add_layer(path)
    assert snapshot() == before
    # Where a broken unpacker would have put it ("up" -> ../../../.. lands in tmp_path.parent).
    for d in (tmp_path.parent, tmp_path.parent.parent, Path("/tmp"), Path("/")):
        assert not [n for n in os.listdir(d) if tag in n], f"{tag} escaped into {d}"
    assert target.read_text() == "host file" and os.stat(target).st_nlink == 1
    assert not os.path.exists(store.layer_dir(sha(raw)))
    assert not list(Path(store.layers).iterdir())  # no layer, no temp dir
    assert not list(Path(store.blobs, "sha256").iterdir())  # the refused blob is not kept


@needs_root
def test_unsupported_and_corrupt_layers(store, tmp_path):
    zstd = tmp_path / "layer.zst"
    zstd.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    with pytest.raises(LayerError, match="zstd"):
        store.add_layer(zstd)
    path, _ = write_layer(tmp_path, [member("f", data=b"x" * 10000)], gz=True)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(LayerError, match="gzip"):
        store.add_layer(truncated)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(LayerError, match="tar"):
        store.add_layer(junk)
    assert leftovers(store) == []
    assert not os.path.exists(store.layers) or not os.listdir(store.layers)
