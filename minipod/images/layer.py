"""Layer tarballs: read once to hash, copy and unpack them safely for overlayfs.

`ingest()` is the only entry point: the store (store.py) calls it from `add_layer()`.
Moved out of store.py so that the store reads as blobs/tags/images and this file as the tar
rules; tarfile, gzip and zlib are imported only when a layer is actually read.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import IO

from minipod.images.store import LayerError

_CHUNK = 1 << 20

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


def ingest(
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
        self.devices: list[str] = []  # device nodes dropped

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
        if (m.ischr() or m.isblk()) and (m.devmajor, m.devminor) != (0, 0):
            # Device nodes are dropped: in a container they would open host devices wherever
            # the rootfs is not nodev, and the runtime makes /dev itself. (containerd creates
            # them when it runs as root and skips them in a user namespace; we always skip.)
            # A 0:0 char device is an overlay whiteout, which some layers carry as such.
            self.devices.append("/".join(parts))
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
        if self.devices:
            import sys

            shown = ", ".join(self.devices[:3]) + (", ..." if len(self.devices) > 3 else "")
            print(f"warning: {self.what}: dropped {len(self.devices)} device node(s) ({shown}): "
                  "containers get their devices from the runtime", file=sys.stderr)
        for path, ns in reversed(self.dir_times):
            try:
                os.utime(path, ns=(ns, ns), follow_symlinks=False)
            except FileNotFoundError:
                pass  # replaced by a later member


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
