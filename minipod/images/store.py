"""The local image store: OCI blobs, unpacked layers and tags on disk.

Layout under the image root (default /var/lib/minipod/images):

    blobs/sha256/<hex>       manifests, configs and layer tarballs, content-addressed
    layers/<16 hex>/         one unpacked layer per diff_id (first 16 hex digits), shared by
                             every image that has it; used as an overlay lowerdir as it is
    repositories.json        {"docker.io/library/busybox:latest": "sha256:<manifest>", ...}
    repositories.lock        flock(2) held while repositories.json is rewritten
    content.lock             flock(2): shared while a pull/import adds blobs it has not tagged
                             yet, exclusive while rmi/gc delete blobs and layers
    ingest/                  partial downloads (<hex>.partial, resumable) and import staging

Layer directory names are short on purpose: overlay takes all lowerdirs in one mount option
string, and mount options are limited to one page (4096 bytes).

Every file appears atomically (written to a temp name in the same directory, then renamed), so a
crash leaves at most a `.tmp-*` entry behind, never a half-written blob, layer or tag file.
Blobs are verified against their digest when written, and the small JSON blobs again when read.

`resolve()` runs on every `minipod run`: it reads repositories.json and two small JSON blobs and
stats the layer directories, nothing more. The tar rules live in layer.py; tarfile, gzip and
shutil are imported only when a layer is added or an image removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from typing import IO, Callable, Iterable, Iterator, NamedTuple, TypeVar

from minipod.errors import MinipodError, NotFound
from minipod.images.reference import parse

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_MANIFESTS = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
_INDEXES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)

DEFAULT_ROOT = "/var/lib/minipod/images"
LAYER_DIR_HEX = 16
_CHUNK = 1 << 20
T = TypeVar("T")

# uname -m -> OCI/Go GOARCH (the "architecture" of image configs and index platforms).
_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_arch() -> str:
    machine = os.uname().machine
    return _ARCH.get(machine, machine)


class StoreError(MinipodError):
    """The store is damaged or a blob/layer is not what it claims to be (message names it)."""


class LayerError(StoreError):
    """A layer tarball is unsafe (a member escapes the layer directory) or unsupported."""


class ImageNotFound(NotFound):
    def __init__(self, ref: str, normalized: str, why: str = "") -> None:
        self.ref = ref
        self.normalized = normalized
        msg = f'image "{ref}" not found in the local store ({normalized})'
        super().__init__(msg + (f": {why}" if why else ""))


@dataclass
class Image:
    ref: str  # normalized reference, e.g. docker.io/library/busybox:latest
    digest: str  # the manifest (or index) digest the reference points at
    layers: list[str]  # absolute unpacked layer dirs, bottom-first (reverse for lowerdir=)
    config: dict  # the OCI config's "config" object: Env, Cmd, Entrypoint, WorkingDir, User, ...


@dataclass
class ImageSummary:
    ref: str  # normalized reference
    digest: str  # manifest (or index) digest
    size: int  # bytes of config + layer blobs as stored (compressed size, like a registry)


class Layer(NamedTuple):
    digest: str  # sha256 of the blob as stored (compressed if it came compressed)
    diff_id: str  # sha256 of the uncompressed tar (what the config's rootfs.diff_ids list)
    path: str  # the unpacked layer directory


def _check_digest(digest: str) -> tuple[str, str]:
    algo, sep, hex_ = digest.partition(":")
    if not sep or algo not in ("sha256", "sha384", "sha512") or not hex_ or not all(
        c in "0123456789abcdef" for c in hex_
    ) or len(hex_) != hashlib.new(algo).digest_size * 2:
        raise StoreError(f"invalid digest {digest!r} (want sha256:<64 lowercase hex>)")
    return algo, hex_


def _canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class ImageStore:
    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = os.path.abspath(root)
        self.blobs = os.path.join(self.root, "blobs")
        self.layers = os.path.join(self.root, "layers")
        self.repositories = os.path.join(self.root, "repositories.json")
        self._lock_path = os.path.join(self.root, "repositories.lock")
        self._content_lock = os.path.join(self.root, "content.lock")
        self.ingest = os.path.join(self.root, "ingest")

    def _mkdir(self, path: str) -> None:
        """Create `path` and any missing parents up to the store root, all mode 0700."""
        if os.path.isdir(path):
            return
        if path != self.root:
            self._mkdir(os.path.dirname(path))
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(path, mode=0o700, exist_ok=True)  # above the store root

    # -- blobs ------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        algo, hex_ = _check_digest(digest)
        return os.path.join(self.blobs, algo, hex_)

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    def read_blob(self, digest: str) -> bytes:
        """A blob's bytes, verified against its digest (use for small JSON blobs)."""
        path = self.blob_path(digest)
        with open(path, "rb") as f:
            data = f.read()
        algo = digest.partition(":")[0]
        got = f"{algo}:{hashlib.new(algo, data).hexdigest()}"
        if got != digest:
            raise StoreError(f"blob {path} is corrupt: its content hashes to {got}")
        return data

    def read_json(self, digest: str) -> dict:
        data = self.read_blob(digest)
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise StoreError(f"blob {self.blob_path(digest)} is not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise StoreError(f"blob {self.blob_path(digest)} is not a JSON object")
        return obj

    def put_blob(self, src: bytes | str | os.PathLike, expected: str = "") -> str:
        """Store bytes or a file's content; return its digest ("sha256:<hex>").

        With `expected`, raise StoreError (and store nothing) if the content has another digest.
        """
        if isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
            algo = _check_digest(expected)[0] if expected else "sha256"
            digest = f"{algo}:{hashlib.new(algo, data).hexdigest()}"
            self._verify(digest, expected, "bytes")
            if not self.has_blob(digest):
                self._install(digest, lambda f: f.write(data))
            return digest
        path = os.fspath(src)
        algo = _check_digest(expected)[0] if expected else "sha256"
        if expected and self.has_blob(expected) and self._is_blob_file(path, expected):
            return expected
        h = hashlib.new(algo)

        def copy(out: IO[bytes]) -> None:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)

        tmp = self._write_tmp(os.path.join(self.blobs, algo), copy)
        return self._commit_blob(tmp, f"{algo}:{h.hexdigest()}", expected, path)

    def put_json(self, obj: object) -> tuple[str, int]:
        """Store `obj` as canonical JSON (sorted keys, no spaces); return (digest, size)."""
        data = _canonical_json(obj)
        return self.put_blob(data), len(data)

    def _is_blob_file(self, path: str, digest: str) -> bool:
        try:
            return os.path.samefile(path, self.blob_path(digest))
        except OSError:
            return False

    @staticmethod
    def _verify(digest: str, expected: str, what: str) -> None:
        if expected and digest != expected:
            raise StoreError(f"digest mismatch for {what}: expected {expected}, got {digest}")

    def _write_tmp(self, directory: str, write: Callable[[IO[bytes]], object]) -> str:
        """Write a new file `.tmp-*` in `directory` (created if needed); return its path."""
        import tempfile

        self._mkdir(directory)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.chmod(tmp, 0o644)
        except BaseException:
            _unlink(tmp)
            raise
        return tmp

    def _commit_blob(self, tmp: str, digest: str, expected: str, what: str) -> str:
        try:
            self._verify(digest, expected, what)
            final = self.blob_path(digest)
            if os.path.exists(final):
                return digest  # same content already there
            os.rename(tmp, final)
            tmp = ""
            return digest
        finally:
            if tmp:
                _unlink(tmp)

    def adopt_blob(self, path: str, digest: str) -> str:
        """Move a file the caller has already verified to hash to `digest` into blobs/.

        For large downloads: the puller hashed every byte on the way in, so re-reading the file
        would only cost time. `path` must be on the store's filesystem (use `ingest/`); it is
        gone afterwards either way (renamed, or dropped because the blob was already there).
        """
        final = self.blob_path(digest)
        self._mkdir(os.path.dirname(final))
        os.chmod(path, 0o644)
        if os.path.exists(final):
            _unlink(path)
        else:
            os.rename(path, final)
        return final

    @contextlib.contextmanager
    def content_lock(self, exclusive: bool) -> Iterator[None]:
        """Shared: I am adding content that is not tagged yet (pull, import).
        Exclusive: I am deleting content (rmi, gc), so nobody may be half-way through adding.

        Without it, rmi could delete a blob that a concurrent pull found present and skipped,
        and the pull would then tag an image whose layer is gone.
        """
        import fcntl

        self._mkdir(self.root)
        fd = os.open(self._content_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _install(self, digest: str, write: Callable[[IO[bytes]], object]) -> None:
        algo = digest.partition(":")[0]
        tmp = self._write_tmp(os.path.join(self.blobs, algo), write)
        self._commit_blob(tmp, digest, "", digest)

    # -- layers -----------------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.layers, _check_digest(diff_id)[1][:LAYER_DIR_HEX])

    def add_layer(self, tar_path: str, *, digest: str = "", diff_id: str = "") -> Layer:
        """Store a layer tarball (tar or tar+gzip) as a blob and unpack it once per diff_id.

        `digest`/`diff_id`, when given, are the values the manifest/config promise: a mismatch
        raises StoreError and leaves nothing behind (no blob, no layer). An unsafe member
        (absolute, `..`, through a symlink) raises LayerError, likewise leaving nothing.
        """
        from minipod.images import layer as layermod  # tarfile & co. only when a layer is added

        tar_path = os.fspath(tar_path)
        if digest:
            _check_digest(digest)
        # The puller may hand us the blob it already stored: then there is nothing to copy.
        copy = not (digest and self._is_blob_file(tar_path, digest))
        # One read of the tarball hashes it, copies it into blobs/ and unpacks it. Only when
        # the caller names a diff_id whose layer is already here is the unpack skipped; without
        # a diff_id we cannot know before reading everything, and unpacking on the way (then
        # dropping a duplicate) is cheaper than reading the tarball twice.
        known = self.layer_dir(diff_id) if diff_id else ""
        tmp_dir = "" if known and os.path.isdir(known) else self._new_layer_tmp(known or "new")
        tmp_blob = ""
        try:
            result: list[tuple[str, str]] = []
            with open(tar_path, "rb") as src:

                def ingest(out: IO[bytes] | None) -> None:
                    result.append(layermod.ingest(src, tar_path, copy_to=out, unpack_to=tmp_dir or None))

                if copy:
                    tmp_blob = self._write_tmp(os.path.join(self.blobs, "sha256"), ingest)
                else:
                    ingest(None)
            got_digest, got_diff_id = result[0]
            self._verify(got_digest, digest, f"layer {tar_path}")
            self._verify(got_diff_id, diff_id, f"layer {tar_path} (uncompressed)")
            if tmp_blob:
                self._commit_blob(tmp_blob, got_digest, "", tar_path)
                tmp_blob = ""
            final = self.layer_dir(got_diff_id)
            if tmp_dir:
                self._publish_layer(tmp_dir, final)
                tmp_dir = ""
            return Layer(got_digest, got_diff_id, final)
        finally:
            if tmp_blob:
                _unlink(tmp_blob)
            if tmp_dir:
                _rmtree(tmp_dir)

    def _new_layer_tmp(self, final: str) -> str:
        import tempfile

        self._mkdir(self.layers)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(final)}-", dir=self.layers)
        # mkdtemp makes 0700; a layer root without a "./" entry should look like a normal "/".
        os.chmod(tmp, 0o755)
        return tmp

    @staticmethod
    def _publish_layer(tmp: str, final: str) -> None:
        if os.path.isdir(final):
            _rmtree(tmp)  # added meanwhile (or before, when the diff_id was not known): keep it
            return
        try:
            os.rename(tmp, final)
        except OSError as e:
            # Another process unpacked the same layer first (rename onto a non-empty directory
            # fails): theirs is identical, keep it.
            if not os.path.isdir(final):
                raise StoreError(f"rename {tmp} to {final}: {e.strerror}") from None
            _rmtree(tmp)

    # -- tags -------------------------------------------------------------------------------

    def _read_repositories(self) -> dict[str, str]:
        try:
            with open(self.repositories, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise StoreError(f"{self.repositories}: not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise StoreError(f"{self.repositories}: expected a JSON object")
        return data

    def _update_repositories(self, change: Callable[[dict[str, str]], T]) -> T:
        """Read-modify-write repositories.json under the lock; returns what `change` returns."""
        import fcntl

        self._mkdir(self.root)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            repos = self._read_repositories()
            result = change(repos)
            data = json.dumps(repos, indent=2, sort_keys=True).encode() + b"\n"

            def write(f: IO[bytes]) -> None:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the rename must not expose an empty file after a crash

            tmp = self._write_tmp(self.root, write)
            os.rename(tmp, self.repositories)
            return result
        finally:
            os.close(fd)  # releases the flock

    def tag(self, ref: str, manifest_digest: str) -> str:
        """Point `ref` at a stored manifest (or index); return the normalized reference."""
        r = parse(ref)
        if r.digest and r.digest != manifest_digest:
            raise StoreError(f"cannot tag {ref!r} as {manifest_digest}: the reference pins {r.digest}")
        if not self.has_blob(manifest_digest):
            raise StoreError(f"cannot tag {ref!r}: manifest {manifest_digest} is not in {self.blobs}")
        key = str(r)
        self._update_repositories(lambda repos: repos.__setitem__(key, manifest_digest))
        return key

    # -- images -----------------------------------------------------------------------------

    def _manifest_for_host(self, digest: str, ref: str, key: str) -> dict:
        """The image manifest at `digest`, following an index to this host's linux/<arch>."""
        try:
            manifest = self.read_json(digest)
        except FileNotFoundError:
            raise ImageNotFound(parse(ref).familiar(), key, f"manifest {digest} is missing") from None
        kind = manifest.get("mediaType") or ("index" if "manifests" in manifest else MEDIA_OCI_MANIFEST)
        if kind in _INDEXES or kind == "index":
            arch = host_arch()
            for entry in manifest.get("manifests", []):
                platform = entry.get("platform") or {}
                if platform.get("os") == "linux" and platform.get("architecture") == arch:
                    return self._manifest_for_host(entry["digest"], ref, key)
            raise ImageNotFound(parse(ref).familiar(), key, f"index {digest} has no linux/{arch} image")
        if kind not in _MANIFESTS:
            raise StoreError(f"{key}: manifest {digest} has unsupported media type {kind!r}")
        return manifest

    def resolve(self, ref: str) -> Image:
        """The stored image for `ref` (any form: `busybox`, `nginx:alpine`, `repo@sha256:...`).

        Raises ValueError for an invalid reference, ImageNotFound when it is not stored.
        """
        r = parse(ref)
        key = str(r)
        digest = self._read_repositories().get(key)
        if r.digest:
            # A pinned digest wins over whatever the tag points at now (as in docker).
            digest = r.digest if self.has_blob(r.digest) else None
        if digest is None:
            raise ImageNotFound(r.familiar(), key)
        manifest = self._manifest_for_host(digest, ref, key)
        try:
            config_digest = manifest["config"]["digest"]
            config = self.read_json(config_digest)
            diff_ids = config["rootfs"]["diff_ids"]
        except FileNotFoundError as e:
            raise ImageNotFound(r.familiar(), key, f"config blob {e.filename} is missing") from None
        except (KeyError, TypeError) as e:
            raise StoreError(f"{key}: malformed manifest or config (missing {e})") from None
        if len(diff_ids) != len(manifest.get("layers", [])):
            raise StoreError(
                f"{key}: manifest {digest} lists {len(manifest.get('layers', []))} layers "
                f"but its config has {len(diff_ids)} diff_ids"
            )
        layers = [self.layer_dir(d) for d in diff_ids]
        # A stat per layer is cheap, and turns a later baffling overlay mount error (ENOENT on
        # a lowerdir) into a message that says what to do.
        for diff_id, path in zip(diff_ids, layers):
            if not os.path.isdir(path):
                raise ImageNotFound(r.familiar(), key, f"layer {diff_id} is not unpacked at {path}")
        return Image(ref=key, digest=digest, layers=layers, config=config.get("config") or {})

    def images(self) -> list[ImageSummary]:
        out = []
        for key, digest in sorted(self._read_repositories().items()):
            try:
                manifest = self._manifest_for_host(digest, key, key)
                size = manifest["config"].get("size", 0) + sum(l.get("size", 0) for l in manifest.get("layers", []))
            except (MinipodError, OSError, KeyError, TypeError):
                size = -1  # listed anyway, so the user can see and remove it
            out.append(ImageSummary(ref=key, digest=digest, size=size))
        return out

    def tags(self) -> dict[str, str]:
        """{normalized reference: manifest (or index) digest} for every tag in the store."""
        return self._read_repositories()

    def remove(self, ref: str, keep: Iterable[str] = ()) -> str:
        """Untag `ref`; delete its blobs and layers unless another tag still uses them.

        Returns the manifest digest it pointed at. The caller must make sure no pod has these
        layers mounted: overlay does not allow changing a lowerdir under a live mount.
        Only the removed image's own blobs are candidates for deletion (not a sweep of the
        whole store), so a blob that a concurrent pull has written but not yet tagged is safe.
        `keep`: more manifest digests whose content must stay (images that pods still use
        although no tag points at them any more). Runs under the exclusive content lock.
        """
        r = parse(ref)
        key = str(r)

        def untag(repos: dict[str, str]) -> tuple[str, set[str]]:
            if key not in repos:
                raise ImageNotFound(r.familiar(), key)
            digest = repos.pop(key)
            doomed = self._closure(digest)
            for other in set(repos.values()) | set(keep):
                doomed -= self._closure(other)
            return digest, doomed

        with self.content_lock(exclusive=True):
            digest, doomed = self._update_repositories(untag)
            self._delete(doomed)
        return digest

    def _delete(self, doomed: Iterable[str]) -> None:
        """Delete blobs and "layer:<diff_id>" entries (from closure()); gone = done."""
        for item in sorted(doomed):
            try:
                path = self.layer_dir(item[6:]) if item.startswith("layer:") else self.blob_path(item)
            except StoreError:
                continue  # a malformed digest in a manifest: nothing of ours to delete
            if item.startswith("layer:"):
                if os.path.isdir(path):
                    # Rename first so the layer vanishes at once (a half-deleted layer would
                    # look complete to resolve()), then delete at leisure.
                    trash = os.path.join(self.layers, f".trash-{os.path.basename(path)}-{os.urandom(4).hex()}")
                    try:
                        os.rename(path, trash)
                    except FileNotFoundError:
                        continue
                    _rmtree(trash)
            else:
                _unlink(path)

    def closure(self, digest: str) -> set[str]:
        return self._closure(digest)

    def _closure(self, digest: str) -> set[str]:
        """Blob digests and "layer:<diff_id>" entries an image (or index) needs."""
        found: set[str] = {digest}
        try:
            manifest = self.read_json(digest)
        except (OSError, MinipodError):
            return found
        for entry in manifest.get("manifests", []):
            found |= self._closure(entry.get("digest", ""))
        config = manifest.get("config", {}).get("digest")
        if config:
            found.add(config)
            try:
                for diff_id in self.read_json(config).get("rootfs", {}).get("diff_ids", []):
                    found.add(f"layer:{diff_id}")
            except (OSError, MinipodError):
                pass
        for layer in manifest.get("layers", []):
            found.add(layer.get("digest", ""))
        found.discard("")
        return found


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rmtree(path: str) -> None:
    import shutil

    if os.path.lexists(path) and stat.S_ISDIR(os.lstat(path).st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        _unlink(path)
