"""Make a pod's volumes on the host, and unmount them again.

Run by the orchestrator before the sandbox starts: the sandbox's mount namespace is private
(sandbox.py), so a tmpfs mounted on the host after it was made would never reach the containers,
whose mount namespaces are copies of the sandbox's.
"""

from __future__ import annotations

import base64
import errno
import os

from minipod.kernel import _libc, mounts
from minipod.kernel._libc import MS_NODEV, MS_NOSUID
from minipod.pod.volumes import atomic, claims, hostpath
from minipod.pod.volumes.build import CONTENT

MNT_DETACH = 2


def make(volumes: list[dict], undo) -> None:
    """Create every volume; `undo(what, fn)` registers the undo of each step as it succeeds."""
    for v in volumes:
        kind, d = v["kind"], v["dir"]
        what = f'volume "{v["name"]}"'
        try:
            if kind == "hostPath":
                hostpath.prepare(d, v["type"])
                continue
            if kind == "claim":
                claims.ensure(d, v["claim"])
                continue
            os.makedirs(d, 0o755, exist_ok=True)
            # The kubelet makes every emptyDir-backed volume (configMap, secret, downwardAPI
            # and projected ride on one) world-writable, so a container running as any user
            # can write to it: 0777 on disk (chmod, as mkdir honours the umask), and a tmpfs
            # left at its default 1777 (pkg/volume/emptydir: setupDir keeps a mode whose
            # permission bits are already 0777, sticky bit included).
            if v["tmpfs"]:
                opts = "mode=1777" + (f",size={v['size']}" if v.get("size") else "")
                mounts.mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, opts)
                undo(f"{what} tmpfs", lambda d=d: unmount(d))
            else:
                os.chmod(d, 0o777)
            if kind in CONTENT:
                atomic.write(d, [(p, mode, base64.b64decode(data))
                                 for p, mode, data in v["files"]])
        except hostpath.HostPathError as e:
            raise hostpath.HostPathError(f'{what}: {e}') from None
        except OSError as e:
            raise OSError(e.errno, f"{what}: {d}: {e.strerror}") from None


def unmount(d: str) -> None:
    """Gone = done: an unmounted or missing directory is fine."""
    try:
        _libc.umount2(d, MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    try:
        os.rmdir(d)
    except OSError:
        pass


def unmount_all(volumes: list[dict]) -> None:
    for v in volumes:
        if v.get("tmpfs"):
            unmount(v["dir"])
