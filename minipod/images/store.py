"""The local image store: OCI blobs, unpacked layers and tags on disk.

Layout under the image root (default /var/lib/minipod/images):

    blobs/sha256/<hex>       manifests, configs and layer tarballs, content-addressed
    layers/<16 hex>/         one unpacked layer per diff_id (first 16 hex digits), shared by
                             every image that has it; used as an overlay lowerdir as it is
    repositories.json        {"docker.io/library/busybox:latest": "sha256:<manifest>", ...}
    repositories.lock        flock(2) held while repositories.json is rewritten

Layer directory names are short on purpose: overlay takes all lowerdirs in one mount option
string, and mount options are limited to one page (4096 bytes).

Every file appears atomically (written to a temp name in the same directory, then renamed), so a
crash leaves at most a `.tmp-*` entry behind, never a half-written blob, layer or tag file.
Blobs are verified against their digest when written, and the small JSON blobs again when read.

`resolve()` runs on every `minipod run`: it reads repositories.json and two small JSON blobs and
stats the layer directories, nothing more. tarfile, gzip and shutil are imported only when a layer
is added or an image removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from typing import IO, Callable, NamedTuple, TypeVar

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
                    result.append(_ingest(src, tar_path, copy_to=out, unpack_to=tmp_dir or None))

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

    def remove(self, ref: str) -> str:
        """Untag `ref`; delete its blobs and layers unless another tag still uses them.

        Returns the manifest digest it pointed at. The caller must make sure no pod has these
        layers mounted: overlay does not allow changing a lowerdir under a live mount.
        Only the removed image's own blobs are candidates for deletion (not a sweep of the
        whole store), so a blob that a concurrent pull has written but not yet tagged is safe.
        """
        r = parse(ref)
        key = str(r)

        def untag(repos: dict[str, str]) -> tuple[str, set[str]]:
            if key not in repos:
                raise ImageNotFound(r.familiar(), key)
            digest = repos.pop(key)
            doomed = self._closure(digest)
            for other in set(repos.values()):
                doomed -= self._closure(other)
            return digest, doomed

        digest, doomed = self._update_repositories(untag)
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
        return digest

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


# -- layer unpacking ----------------------------------------------------------------------
#
# Python 3.11.2's tarfile has no extraction filters, and its extract() follows symlinks in
# the final path component (open "wb"), links hardlinks with AT_SYMLINK_FOLLOW and never
# checks member names. So members are created here one by one:
#   - names that are absolute or contain ".." are refused;
#   - every parent directory is lstat'ed: a symlink there is refused (that is how a layer
#     would write through "evil -> /etc"); missing parents are created 0755;
#   - an existing entry at the final path is removed first (a later member replaces an
#     earlier one, as in an overlay), then created with O_EXCL|O_NOFOLLOW / link without
#     following / mknod, so nothing is ever written through a symlink;
#   - hardlink targets get the same checks and must already exist in this layer.
# The temporary layer directory is private to this process, so nothing races with the checks.


class _HashingReader:
    """A read-only file that hashes (and optionally copies) every byte read through it."""

    def __init__(self, f: IO[bytes], copy_to: IO[bytes] | None = None) -> None:
        self._f = f
        self._copy = copy_to
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if data:
            self.sha256.update(data)
            if self._copy is not None:
                self._copy.write(data)
        return data

    def readable(self) -> bool:
        return True

    def digest(self) -> str:
        return f"sha256:{self.sha256.hexdigest()}"


def _ingest(
    src: IO[bytes], what: str, *, copy_to: IO[bytes] | None, unpack_to: str | None
) -> tuple[str, str]:
    """Read a layer tarball once: return (digest, diff_id); copy the raw bytes to `copy_to`;
    unpack into `unpack_to`. Plain tar and gzip (single or multi-member) are accepted."""
    import gzip
    import tarfile
    import zlib

    raw = _HashingReader(src, copy_to)
    head = src.peek(6)[:6] if hasattr(src, "peek") else b""
    if head[:2] == b"\x1f\x8b":
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    elif head[:4] == b"\x28\xb5\x2f\xfd":
        raise LayerError(f"{what}: zstd-compressed layers are not supported (Python 3.11 has no zstd)")
    elif head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        raise LayerError(f"{what}: bzip2/xz compression is not an OCI layer format (tar or tar+gzip)")
    else:
        stream = raw  # type: ignore[assignment]
    plain = _HashingReader(stream)
    try:
        if unpack_to is not None:
            with tarfile.open(fileobj=plain, mode="r|") as tf:  # type: ignore[call-overload]
                ex = _Extractor(unpack_to, what)
                for member in tf:
                    ex.add(tf, member)
                ex.finish()
        # Read to the end so the hashes cover everything (the zero blocks after the tar's
        # end-of-archive marker, the gzip trailer).
        while plain.read(_CHUNK):
            pass
        while raw.read(_CHUNK):
            pass
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise LayerError(f"{what}: corrupt or truncated gzip data: {e}") from None
    except tarfile.TarError as e:
        raise LayerError(f"{what}: not a valid tar archive: {e}") from None
    return raw.digest(), plain.digest()


def _split_member(name: str, what: str) -> tuple[str, ...]:
    """'./usr/bin/x' -> ('usr', 'bin', 'x'); '.' -> (). Refuses absolute names and '..'."""
    if name.startswith("/"):
        raise LayerError(f"{what}: member {name!r} has an absolute path; refusing to unpack")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise LayerError(f"{what}: member {name!r} contains '..'; refusing to unpack")
    return parts


class _Extractor:
    def __init__(self, root: str, what: str) -> None:
        self.root = root
        self.what = what
        self.dirs: set[str] = set()  # relative paths checked to be real directories
        self.dir_times: list[tuple[str, int]] = []

    def _fail(self, name: str, why: str) -> LayerError:
        return LayerError(f"{self.what}: member {name!r}: {why}")

    def _parent(self, parts: tuple[str, ...], name: str, create: bool = True) -> str:
        """The directory holding `parts`' last component, made of real directories only."""
        path, rel = self.root, ""
        for part in parts:
            rel = f"{rel}/{part}" if rel else part
            path = os.path.join(path, part)
            if rel in self.dirs:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    raise self._fail(name, f"directory {rel!r} does not exist in this layer") from None
                os.mkdir(path)
                os.chmod(path, 0o755)  # explicit: independent of the umask
                self.dirs.add(rel)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise self._fail(name, f"would be written through the symlink {rel!r}; refusing")
            if not stat.S_ISDIR(st.st_mode):
                raise self._fail(name, f"{rel!r} is not a directory")
            self.dirs.add(rel)
        return path

    def _make_room(self, path: str, rel: str, is_dir: bool) -> None:
        import shutil

        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return  # a directory entry again: keep its contents, update its metadata
            shutil.rmtree(path)  # never follows symlinks inside
            self.dirs = {d for d in self.dirs if d != rel and not d.startswith(rel + "/")}
        else:
            os.unlink(path)

    def add(self, tf, m) -> None:  # tf: tarfile.TarFile, m: tarfile.TarInfo
        try:
            self._add(tf, m)
        except LayerError:
            raise
        except OSError as e:
            raise self._fail(m.name, f"{e.strerror or e} ({e.filename or self.root})") from None

    def _add(self, tf, m) -> None:
        parts = _split_member(m.name, self.what)
        if parts and parts[-1].startswith(".wh."):
            self._whiteout(m, parts)
            return
        if not parts:  # "./": the layer root itself
            if not m.isdir():
                raise self._fail(m.name, "the layer root must be a directory")
            self._set_dir_meta(self.root, m)
            return
        parent = self._parent(parts[:-1], m.name)
        path = os.path.join(parent, parts[-1])
        rel = "/".join(parts)
        if m.islnk():
            src = self._link_source(m)
            if src == path:
                return
            self._make_room(path, rel, False)
            os.link(src, path, follow_symlinks=False)  # a hardlink to a symlink stays a symlink
            return
        self._make_room(path, rel, m.isdir())
        ns = int(m.mtime * 1_000_000_000)
        if m.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                data = tf.extractfile(m)
                while chunk := data.read(_CHUNK):
                    _write_all(fd, chunk)
                # chown before chmod: chown clears setuid/setgid; xattrs after chown: it clears
                # security.capability.
                os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, m.mode & 0o7777)
                self._xattrs(fd, m)
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)
        elif m.isdir():
            if not os.path.isdir(path):
                os.mkdir(path, 0o700)
            self.dirs.add(rel)
            self._set_dir_meta(path, m)
        elif m.issym():
            os.symlink(m.linkname, path)
            os.chown(path, m.uid, m.gid, follow_symlinks=False)
            os.utime(path, ns=(ns, ns), follow_symlinks=False)
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(path, kind | 0o600, os.makedev(m.devmajor, m.devminor))
            os.chown(path, m.uid, m.gid, follow_symlinks=False)
            os.chmod(path, m.mode & 0o7777)  # a node we just made: not a symlink
            os.utime(path, ns=(ns, ns), follow_symlinks=False)
        else:
            raise self._fail(m.name, f"unsupported tar member type {m.type!r}")

    def _set_dir_meta(self, path: str, m) -> None:
        os.chown(path, m.uid, m.gid, follow_symlinks=False)
        os.chmod(path, m.mode & 0o7777)
        self._xattrs(path, m)
        # Creating entries inside a directory changes its mtime: set it after the last member.
        self.dir_times.append((path, int(m.mtime * 1_000_000_000)))

    def _link_source(self, m) -> str:
        parts = _split_member(m.linkname, self.what)
        if not parts:
            raise self._fail(m.name, f"hardlink to {m.linkname!r} (the layer root)")
        src = os.path.join(self._parent(parts[:-1], m.name, create=False), parts[-1])
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            raise self._fail(m.name, f"hardlink target {m.linkname!r} is not in this layer") from None
        if stat.S_ISDIR(st.st_mode):
            raise self._fail(m.name, f"hardlink target {m.linkname!r} is a directory")
        return src

    def _whiteout(self, m, parts: tuple[str, ...]) -> None:
        """OCI whiteouts -> overlayfs: `.wh.<name>` becomes a 0:0 char device named <name>;
        `.wh..wh..opq` marks its directory opaque (trusted.overlay.opaque=y)."""
        parent = self._parent(parts[:-1], m.name)
        base = parts[-1]
        if base == ".wh..wh..opq":
            os.setxattr(parent, "trusted.overlay.opaque", b"y")
            return
        if base.startswith(".wh..wh."):
            return  # other AUFS bookkeeping (.wh..wh.plnk, ...): meaningless for overlay
        target = os.path.join(parent, base[len(".wh."):])
        if os.path.lexists(target):
            # A whiteout hides only lower layers' files; this layer's own entry stays.
            return
        os.mknod(target, stat.S_IFCHR, os.makedev(0, 0))
        os.chown(target, m.uid, m.gid, follow_symlinks=False)

    @staticmethod
    def _xattrs(target: int | str, m) -> None:
        # PAX SCHILY.xattr.* records (GNU tar --xattrs, Go's archive/tar). tarfile decoded the
        # values as UTF-8 with surrogateescape; encoding back that way restores the raw bytes.
        # Only user.* and file capabilities: trusted.* (overlay's own metadata) and
        # security.selinux must not be forged by an image.
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if name.startswith("user.") or name == "security.capability":
                os.setxattr(target, name, value.encode("utf-8", "surrogateescape"))

    def finish(self) -> None:
        for path, ns in reversed(self.dir_times):
            try:
                os.utime(path, ns=(ns, ns), follow_symlinks=False)
            except FileNotFoundError:
                pass  # replaced by a later member


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
