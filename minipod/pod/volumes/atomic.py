"""The kubelet's atomic writer layout (pkg/volume/util/atomic_writer.go), for a fresh volume:

    <dir>/..2026_12_02_05_40_00.123456789/<path>   the files, with their modes
    <dir>/..data -> ..2026_12_02_05_40_00.123456789
    <dir>/<top>  -> ..data/<top>                   one symlink per top-level name

Applications (and subPath mounts) follow the symlinks; an update in a cluster writes a new
timestamped directory and swaps `..data` with a rename, so a reader never sees half of one.
minipod's objects never change while a pod runs, so each volume is written once, but in the same
layout: programs that watch `..data` (config reloaders) and users who `ls -la` see what they
would see on a node.
"""

from __future__ import annotations

import os
import time

DATA = "..data"


def write(target: str, files: list[tuple[str, int, bytes]]) -> None:
    """Write `files` (relative path, mode, content) into the empty directory `target`."""
    now = time.time_ns()
    ts = "..%s.%09d" % (time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now // 10**9)),
                        now % 10**9)
    ts_dir = os.path.join(target, ts)
    os.mkdir(ts_dir, 0o755)
    os.chmod(ts_dir, 0o755)  # mkdir honours the umask
    for path, mode, data in files:
        full = os.path.join(ts_dir, path)
        parent = os.path.dirname(full)
        if parent != ts_dir:
            os.makedirs(parent, 0o755, exist_ok=True)
        # O_EXCL|O_NOFOLLOW: the directory is ours and new; nothing may be there already.
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    tmp = os.path.join(target, DATA + "_tmp")
    os.symlink(ts, tmp)
    os.rename(tmp, os.path.join(target, DATA))
    for top in sorted({p.split("/", 1)[0] for p, _, _ in files}):
        os.symlink(os.path.join(DATA, top), os.path.join(target, top))
