"""`minipod image import`: load an OCI image layout or a `docker save` archive into the store.

Accepted inputs (a directory, or a tar of one, optionally gzip/xz/bzip2-compressed):
  - an OCI image layout: `oci-layout`, `index.json`, `blobs/<algo>/<hex>` (skopeo copy oci:,
    umoci, buildah push oci-archive:, docker save since 25.0). Names come from the index's
    annotations: `io.containerd.image.name` (a full reference) or
    `org.opencontainers.image.ref.name` (a full reference, or only a tag);
  - a `docker save` archive: `manifest.json` ([{"Config", "RepoTags", "Layers"}]), the config
    JSON and one (usually uncompressed) tar per layer, shared layers as symlinks.

Every blob is verified against its digest and every layer against its config's diff_id, as
in a pull. A tar is first unpacked into `<image root>/ingest/import-*` (same filesystem, only
regular files and symlinks with safe names), then read as a directory, then deleted.
"""

from __future__ import annotations

import json
import os
import posixpath

from minipod.errors import MinipodError
from minipod.images.reference import InvalidReference, parse
from minipod.images.store import (
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST,
    ImageStore,
    StoreError,
)

_INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
NAME_KEYS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


class ImportError_(MinipodError):
    """The archive is not an OCI layout or docker-save archive, or is inconsistent."""


class _Source:
    """Files of the layout/archive by their relative name; symlinks resolved inside it."""

    def __init__(self, root: str, links: dict[str, str] | None = None) -> None:
        self.root = root
        self.links = links or {}

    def path(self, rel: str) -> str:
        name = _clean(rel)
        for _ in range(40):
            if name not in self.links:
                break
            name = self.links[name]
        else:
            raise ImportError_(f"{rel}: too many levels of symbolic links")
        full = os.path.join(self.root, name)
        if not os.path.isfile(full) or os.path.islink(full):
            raise ImportError_(f"the archive has no file {rel!r}")
        return full

    def exists(self, rel: str) -> bool:
        try:
            self.path(rel)
            return True
        except ImportError_:
            return False

    def json(self, rel: str) -> object:
        try:
            with open(self.path(rel), "rb") as f:
                return json.load(f)
        except ValueError as e:
            raise ImportError_(f"{rel}: not valid JSON: {e}") from None


def _clean(rel: str) -> str:
    """A relative name inside the archive, normalised; refuses absolute names and '..'."""
    name = posixpath.normpath(rel)
    if rel.startswith("/") or name == ".." or name.startswith("../"):
        raise ImportError_(f"archive member {rel!r} points outside the archive")
    return name


def import_archive(store: ImageStore, path: str, name: str = "") -> list[str]:
    """Import every image in `path`; return the references tagged (normalized).

    `name` names an image the archive leaves unnamed (or gives the repository for an entry
    that names only a tag); with exactly one image it also overrides the archive's name.
    """
    if name:
        parse(name)  # fail early on a bad reference
    if os.path.isdir(path):
        with store.content_lock(exclusive=False):
            return _import_dir(store, _Source(path), path, name)
    if not os.path.exists(path):
        raise ImportError_(f"{path}: no such file or directory")
    import shutil
    import tempfile

    with store.content_lock(exclusive=False):
        store._mkdir(store.ingest)
        stage = tempfile.mkdtemp(prefix="import-", dir=store.ingest)
        try:
            links = _unpack(path, stage)
            return _import_dir(store, _Source(stage, links), path, name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _unpack(path: str, dest: str) -> dict[str, str]:
    """Extract regular files of the tar at `path` into `dest`; return its symlinks
    {name: target name}, both normalised relative names."""
    import tarfile

    links: dict[str, str] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if m.isdir():
                    continue
                rel = _clean(m.name)
                if m.issym() or m.islnk():
                    target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(rel), m.linkname)
                    links[rel] = _clean(target)
                    continue
                if not m.isreg():
                    continue
                _extract(tf, m, rel, dest, path)
    except tarfile.TarError as e:
        # tarfile lists what every decompressor said, one per line: keep one line.
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if why.startswith("file could not be opened"):
            why = "not tar, tar.gz, tar.bz2 or tar.xz"
        raise ImportError_(f"{path}: not a tar archive or OCI layout directory ({why})") from None
    except EOFError:
        raise ImportError_(f"{path}: truncated archive") from None
    return links


def _extract(tf, m, rel: str, dest: str, path: str) -> None:
    """One regular file of the archive into `dest` (tf: tarfile.TarFile, m: its TarInfo)."""
    out = os.path.join(dest, rel)
    # `a` then `a/b`: a file and then a path under it; `a/b` then `a`: the reverse. Neither is
    # an image layout, and os.makedirs/open would fail with a bare errno.
    parent = posixpath.dirname(rel)
    while parent:
        if os.path.isfile(os.path.join(dest, parent)):
            raise ImportError_(f"{path}: member {rel!r} is under {parent!r}, which is a file in"
                               " the archive")
        parent = posixpath.dirname(parent)
    if os.path.isdir(out):
        raise ImportError_(f"{path}: member {rel!r} is a file and a directory in the archive")
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        src = tf.extractfile(m)
        with open(out, "wb") as f:
            while chunk := src.read(1 << 20):
                f.write(chunk)
    except OSError as e:
        raise ImportError_(f"{path}: cannot unpack member {rel!r}: {e.strerror or e}") from None


def _import_dir(store: ImageStore, src: _Source, what: str, name: str) -> list[str]:
    """Import from a directory; the caller holds the content lock (shared)."""
    try:
        if src.exists("index.json"):
            return _import_oci(store, src, what, name)
        if src.exists("manifest.json"):
            return _import_docker(store, src, what, name)
    except StoreError as e:
        raise ImportError_(f"{what}: {e}") from None
    raise ImportError_(f"{what}: neither an OCI image layout (index.json) nor a docker save archive (manifest.json)")


def _blob_rel(digest: str) -> str:
    algo, _, hex_ = digest.partition(":")
    if not algo or not hex_ or "/" in digest or ".." in digest:
        raise ImportError_(f"invalid digest {digest!r}")
    return f"blobs/{algo}/{hex_}"


def _import_oci(store: ImageStore, src: _Source, what: str, name: str) -> list[str]:
    index = src.json("index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ImportError_(f"{what}: index.json has no manifests list")
    entries = index["manifests"]
    if not entries:
        raise ImportError_(f"{what}: index.json lists no images")
    tagged = []
    for entry in entries:
        digest = entry.get("digest", "")
        _import_manifest(store, src, digest, entry.get("mediaType", ""))
        ann = entry.get("annotations") or {}
        ref = _name_for(ann, name, len(entries) == 1, what, digest)
        tagged.append(store.tag(ref, digest))
    return tagged


def _name_for(ann: dict, name: str, only: bool, what: str, digest: str) -> str:
    """The reference to tag an index.json entry with. `name` (from the command line) names
    the only image, or every entry that carries no full reference of its own."""
    full = ann.get(NAME_KEYS[0]) or ""
    ref_name = ann.get(NAME_KEYS[1]) or ""
    found = ""
    for candidate in (full, ref_name):
        # A bare tag ("3.19", "latest") is not a repository: parse() would take it as one.
        if candidate and ("/" in candidate or ":" in candidate):
            try:
                parse(candidate)
                found = candidate
                break
            except InvalidReference:
                pass
    if name and (only or not found):
        explicit_tag = ":" in name.rsplit("/", 1)[-1] or "@" in name
        if not explicit_tag and ref_name and "/" not in ref_name and ":" not in ref_name:
            return f"{parse(name).name}:{ref_name}"  # NAME alpine + ref.name 3.19 -> alpine:3.19
        return name
    if found:
        return found
    hint = f" (it names only the tag {ref_name!r})" if ref_name else ""
    raise ImportError_(f"{what}: image {digest} has no name{hint}: "
                       f"give one: minipod image import {what} NAME[:TAG]")


def _import_manifest(store: ImageStore, src: _Source, digest: str, media: str) -> None:
    data = _put(store, src, digest)
    obj = json.loads(data)
    kind = obj.get("mediaType") or media
    if kind in _INDEXES or "manifests" in obj:
        present = 0
        for entry in obj.get("manifests") or []:
            if src.exists(_blob_rel(entry.get("digest", ""))):
                _import_manifest(store, src, entry["digest"], entry.get("mediaType", ""))
                present += 1
        if not present:
            raise ImportError_(f"index {digest}: none of its manifests are in the archive")
        return
    config_digest = obj["config"]["digest"]
    config = json.loads(_put(store, src, config_digest))
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layers = obj.get("layers") or []
    if len(diff_ids) != len(layers):
        raise ImportError_(f"manifest {digest}: {len(layers)} layers but {len(diff_ids)} diff_ids in its config")
    for layer, diff_id in zip(layers, diff_ids):
        store.add_layer(src.path(_blob_rel(layer["digest"])), digest=layer["digest"], diff_id=diff_id)


def _put(store: ImageStore, src: _Source, digest: str) -> bytes:
    path = src.path(_blob_rel(digest))
    store.put_blob(path, expected=digest)
    return store.read_blob(digest)


def _import_docker(store: ImageStore, src: _Source, what: str, name: str) -> list[str]:
    entries = src.json("manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ImportError_(f"{what}: manifest.json is not a non-empty list")
    tagged = []
    for entry in entries:
        try:
            config_rel, layer_rels = entry["Config"], entry["Layers"]
        except (KeyError, TypeError) as e:
            raise ImportError_(f"{what}: manifest.json entry without {e}") from None
        config_path = src.path(config_rel)
        config_digest = store.put_blob(config_path)
        config = store.read_json(config_digest)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(layer_rels):
            raise ImportError_(f"{what}: {config_rel} lists {len(diff_ids)} diff_ids for {len(layer_rels)} layers")
        descs = []
        for rel, diff_id in zip(layer_rels, diff_ids):
            path = src.path(rel)
            with open(path, "rb") as f:
                gz = f.read(2) == b"\x1f\x8b"
            layer = store.add_layer(path, diff_id=diff_id)
            descs.append({"mediaType": MEDIA_OCI_LAYER_GZIP if gz else MEDIA_OCI_LAYER,
                          "digest": layer.digest, "size": os.path.getsize(path)})
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest,
                       "size": os.path.getsize(config_path)},
            "layers": descs,
        }
        digest, _ = store.put_json(manifest)
        names = [name] if name and len(entries) == 1 else list(entry.get("RepoTags") or [])
        if not names:
            raise ImportError_(f"{what}: image {config_rel} has no RepoTags: give a name: "
                               f"minipod image import {what} NAME[:TAG]")
        for n in names:
            tagged.append(store.tag(n, digest))
    return tagged
