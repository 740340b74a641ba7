"""fsGroup: a pod's volumes owned by its group, as the kubelet makes them (SetVolumeOwnership,
pkg/volume/volume_linux.go).

Every file and directory of a volume gets group fsGroup and group read-write; directories also
get group execute and the setgid bit, so that what the containers create later inherits the
group too. The owner is left alone. With fsGroupChangePolicy OnRootMismatch the walk is skipped
when the volume's root already has the group, the permissions and the setgid bit (a large
volume is not walked at every start); Always (the default) walks every time.
"""

from __future__ import annotations

import os
import stat

RW = 0o660
EXEC = 0o110


def _wanted(st_mode: int) -> int:
    """The permission bits for a file of mode `st_mode` (its type bits included)."""
    extra = (stat.S_ISGID | EXEC) if stat.S_ISDIR(st_mode) else 0
    return stat.S_IMODE(st_mode) | RW | extra


def _fix(path: str, gid: int) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return  # the kubelet skips symlinks: their target may be anywhere
    if st.st_gid != gid:
        os.lchown(path, -1, gid)
    want = _wanted(st.st_mode)
    if want != stat.S_IMODE(st.st_mode):
        os.chmod(path, want)


def root_matches(root: str, gid: int) -> bool:
    st = os.stat(root)
    mode = stat.S_IMODE(st.st_mode)
    return st.st_gid == gid and mode & (RW | EXEC | stat.S_ISGID) == RW | EXEC | stat.S_ISGID


def apply(root: str, gid: int, policy: str = "Always") -> None:
    """Give volume directory `root` and everything under it to group `gid`."""
    if policy == "OnRootMismatch" and root_matches(root, gid):
        return
    _fix(root, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            _fix(os.path.join(dirpath, name), gid)
