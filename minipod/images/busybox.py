"""Build `docker.io/library/busybox:latest` offline from the host's static busybox.

A real one-layer OCI image (manifest + config + layer blob) goes into the local store, so
pods that say `image: busybox` run with no registry. The layer holds /bin/busybox, a
symlink per applet (`busybox --list-full`), /etc/passwd and /etc/group (root, nobody), the
usual empty top-level directories and /var/www for `httpd`.

The tar is deterministic (sorted names, mtime 0, owner 0:0), so the same busybox binary
always gives the same digests. Provisioning is idempotent: nothing is done if the tag
already resolves.

    python -m minipod.images.busybox [--image-root DIR] [--busybox PATH]

Debian: apt-get install busybox-static (the dynamically linked `busybox` package will not
run in an empty rootfs; this is checked).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

from minipod.errors import MinipodError
from minipod.images.store import (
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_LAYER,
    MEDIA_OCI_MANIFEST,
    Image,
    ImageNotFound,
    ImageStore,
    StoreError,
    host_arch,
)

REF = "docker.io/library/busybox:latest"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# (path, mode) of the directories every image gets, whether or not an applet lives there.
_DIRS = [
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("sbin", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
    ("var/www", 0o755),
]
_FILES = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": b"root:x:0:\nnobody:x:65534:\n",
    # Mount targets for the files the kubelet writes into every container; the runtime
    # bind-mounts over them, so their content here only matters in a bare chroot.
    "etc/hostname": b"",
    "etc/hosts": b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/resolv.conf": b"",
}


class BusyboxError(MinipodError):
    pass


def _is_static(path: str) -> bool:
    """True when the ELF file at `path` has no program interpreter (PT_INTERP)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            raise BusyboxError(f"{path} is not an ELF executable")
        is64, order = head[4] == 2, "little" if head[5] == 1 else "big"
        if is64:
            phoff, phentsize, phnum = (int.from_bytes(head[32:40], order), int.from_bytes(head[54:56], order),
                                       int.from_bytes(head[56:58], order))
        else:
            phoff, phentsize, phnum = (int.from_bytes(head[28:32], order), int.from_bytes(head[42:44], order),
                                       int.from_bytes(head[44:46], order))
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    PT_INTERP = 3
    return all(
        int.from_bytes(table[i * phentsize:i * phentsize + 4], order) != PT_INTERP for i in range(phnum)
    )


def applets(busybox: str) -> list[str]:
    """Applet paths relative to /, e.g. ['bin/ash', 'usr/bin/wget', 'linuxrc', ...]."""
    try:
        out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise BusyboxError(f"{busybox} --list-full: {e}") from None
    return [line.strip().lstrip("/") for line in out.splitlines() if line.strip()]


def _version(busybox: str) -> str:
    r = subprocess.run([busybox], capture_output=True, text=True)
    first = (r.stdout or r.stderr).splitlines()
    return first[0].strip() if first else "BusyBox"


def build_layer(busybox: str, out: io.BufferedIOBase) -> None:
    """Write the deterministic layer tar to `out`."""
    import tarfile

    entries: dict[str, tuple[str, int, object]] = {}  # path -> (kind, mode, payload)
    for path, mode in _DIRS:
        entries[path] = ("dir", mode, None)
    for path, data in _FILES.items():
        entries[path] = ("file", 0o644, data)
    entries["bin/busybox"] = ("busybox", 0o755, None)
    for applet in applets(busybox):
        parts = applet.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if applet in entries or any(entries.get(p, ("dir",))[0] != "dir" for p in parents):
            continue  # would collide with a file we ship or an earlier applet
        for p in parents:
            entries.setdefault(p, ("dir", 0o755, None))
        entries[applet] = ("symlink", 0o777, "/bin/busybox")

    with open(busybox, "rb") as f:
        binary = f.read()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(entries):
            kind, mode, payload = entries[path]
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = mode
            data = None
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = str(payload)
            else:
                data = binary if kind == "busybox" else payload
                info.size = len(data)  # type: ignore[arg-type]
            tf.addfile(info, io.BytesIO(data) if data is not None else None)  # type: ignore[arg-type]


def provision(store: ImageStore, busybox: str = "/bin/busybox") -> Image:
    """Make `busybox:latest` resolvable in `store` (no-op if it already is); return it."""
    try:
        return store.resolve(REF)
    except (ImageNotFound, StoreError):
        pass
    if not os.access(busybox, os.X_OK):
        raise BusyboxError(f"{busybox} not found: apt-get install busybox-static")
    if not _is_static(busybox):
        raise BusyboxError(f"{busybox} is dynamically linked; install busybox-static for a static one")

    import tempfile

    os.makedirs(store.root, mode=0o700, exist_ok=True)
    with tempfile.NamedTemporaryFile(prefix=".tmp-busybox-", suffix=".tar", dir=store.root) as tmp:
        build_layer(busybox, tmp)  # type: ignore[arg-type]
        tmp.flush()
        layer = store.add_layer(tmp.name)
        size = os.path.getsize(tmp.name)

    config = {
        "architecture": host_arch(),
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created_by": f"minipod.images.busybox: {_version(busybox)} from {busybox}"}],
    }
    config_digest, config_size = store.put_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MEDIA_OCI_LAYER, "digest": layer.digest, "size": size}],
    }
    manifest_digest, _ = store.put_json(manifest)
    store.tag(REF, manifest_digest)
    return store.resolve(REF)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m minipod.images.busybox", description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-root", help="image store directory (default: from minipod's config)")
    parser.add_argument("--busybox", default="/bin/busybox", help="a statically linked busybox (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        root = args.image_root
        if not root:
            from minipod import config

            root = config.load().image_root
        image = provision(ImageStore(root), args.busybox)
    except MinipodError as e:
        print(f"minipod: {e}", file=sys.stderr)
        return 1
    print(f"{image.ref} {image.digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
