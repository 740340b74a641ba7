"""Pull + unpack, side by side: minipod vs `skopeo copy` + `umoci unpack`, same registry, same run.

    sudo .venv/bin/python bench/pull/run.py [--runs 5] [--rootfs DIR]

Starts Debian's docker-registry on 127.0.0.1:<free port> in a temp dir, pushes two images and
pulls each one `--runs` times with every tool into a fresh directory (page cache warm, network =
loopback, so this measures the client: HTTP, sha256, gunzip, tar, file creation):
  busybox   one layer: the host's busybox-static + applet symlinks (~1 MB gzip)
  debian    one layer: `debootstrap --variant=minbase bookworm` less /var/cache/apt
            (~175 MB, ~61 MB gzip), built here unless --rootfs names one already made
Timed, wall clock of whole processes (so Python's start-up counts for minipod, as it does for a
user): `python -c <pull>` for minipod (download, verify, unpack into its layer store), and for
the peers `skopeo copy docker://... oci:DIR` then `umoci unpack --image DIR BUNDLE`.
Everything it creates is removed at the end (the registry process too).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
sys.path.insert(0, REPO)

from registry import distribution, images  # noqa: E402

DRIVER = """
import sys, types
from minipod.images import pull
from minipod.images.store import ImageStore
cfg = types.SimpleNamespace(registries=sys.argv[3], auth_file="", root="/nonexistent")
pull.pull(ImageStore(sys.argv[1]), cfg, sys.argv[2])
"""


def sh(*argv: str, **kw) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def timed(*argv: str) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {p.stderr.strip()[-500:]}")
    return dt


def debian_layer(work: str, rootfs: str | None) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip) of a minbase Debian rootfs."""
    if not rootfs:
        rootfs = os.path.join(work, "debian-rootfs")
        print("building a Debian minbase rootfs with debootstrap (~30 s) ...", flush=True)
        sh("debootstrap", "--variant=minbase", "bookworm", rootfs, "http://deb.debian.org/debian")
    # Without the downloaded .debs debootstrap leaves in /var/cache/apt (already compressed,
    # and no image ships them): ~175 MB of files, ~61 MB gzip'ed.
    skip = ["./var/cache/apt"]
    tar = subprocess.run(["tar", "--numeric-owner", "--xattrs", "--sort=name", "-C", rootfs,
                          *[f"--exclude={p}" for p in skip], "-cf", "-", "."],
                         check=True, capture_output=True).stdout
    gz = subprocess.run(["gzip", "-6", "-n"], input=tar, check=True, capture_output=True).stdout
    return tar, gz


def image_from(tar: bytes, gz: bytes) -> images.Image:
    img = images.image([tar], docker=True)  # builds the gzip itself at level 1: replace the layer
    import json

    m = json.loads(img.manifest)
    del img.blobs[m["layers"][0]["digest"]]
    m["layers"][0].update(digest=images.sha(gz), size=len(gz))
    img.blobs[images.sha(gz)] = gz
    img.manifest = json.dumps(m).encode()
    return img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rootfs", help="an existing Debian rootfs directory (skips debootstrap)")
    args = ap.parse_args()
    for tool in ("skopeo", "umoci", distribution.BINARY):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install skopeo umoci docker-registry")
    work = tempfile.mkdtemp(prefix="minipod-bench-pull-", dir="/var/tmp")
    reg = distribution.Distribution(os.path.join(work, "registry"))
    try:
        bb_tar = images.busybox_tar()
        imgs = {"busybox": image_from(bb_tar, images.gz(bb_tar))}
        deb_tar, deb_gz = debian_layer(work, args.rootfs)
        imgs["debian"] = image_from(deb_tar, deb_gz)
        reg.start()
        for name, img in imgs.items():
            reg.push(f"library/{name}", "latest", img)
        conf = os.path.join(work, "registries.toml")
        with open(conf, "w") as f:
            f.write("")  # loopback registries are plain HTTP by default
        results: dict[tuple[str, str], list[float]] = {}
        for name, img in imgs.items():
            ref = f"{reg.host}/library/{name}:latest"
            for i in range(args.runs):
                d = os.path.join(work, f"run-{name}-{i}")
                os.makedirs(d)
                results.setdefault((name, "minipod pull+unpack"), []).append(
                    timed(sys.executable, "-c", DRIVER, os.path.join(d, "store"), ref, conf))
                copy = timed("skopeo", "copy", "--quiet", "--src-tls-verify=false",
                             f"docker://{ref}", f"oci:{d}/oci:latest")
                unpack = timed("umoci", "unpack", "--image", f"{d}/oci:latest", f"{d}/bundle")
                results.setdefault((name, "skopeo copy"), []).append(copy)
                results.setdefault((name, "umoci unpack"), []).append(unpack)
                results.setdefault((name, "skopeo + umoci"), []).append(copy + unpack)
                shutil.rmtree(d)
        print(f"\n{'image':8} {'compressed':>10}  {'tool':22} {'median s':>9} {'min s':>7} {'max s':>7}")
        for (name, tool), ts in results.items():
            size = len(imgs[name].blobs[[k for k in imgs[name].blobs if len(imgs[name].blobs[k]) > 5000][0]])
            print(f"{name:8} {size / 1e6:>8.1f}MB  {tool:22} {statistics.median(ts):9.3f} {min(ts):7.3f} {max(ts):7.3f}")
    finally:
        reg.remove()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
