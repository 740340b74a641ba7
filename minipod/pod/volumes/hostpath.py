"""hostPath `type` checks, with the kubelet's words (pkg/volume/hostpath/host_path.go
checkType). The path is the node's own: it is stat()ed following symlinks, as the kubelet does.

`""` checks nothing; a missing path is then created as a directory, as containerd does for a
missing bind source. The *OrCreate types create what is missing (a directory 0755, or an empty
file 0644 whose parent must exist); every other type only checks.
"""

from __future__ import annotations

import os
import stat

from minipod.errors import MinipodError

_WANT = {
    "Directory": (stat.S_ISDIR, "a directory"),
    "DirectoryOrCreate": (stat.S_ISDIR, "a directory"),
    "File": (stat.S_ISREG, "a file"),
    "FileOrCreate": (stat.S_ISREG, "a file"),
    "Socket": (stat.S_ISSOCK, "a socket file"),
    "CharDevice": (stat.S_ISCHR, "a character device"),
    "BlockDevice": (stat.S_ISBLK, "a block device"),
}


class HostPathError(MinipodError):
    pass


def problem(path: str, type_: str) -> str | None:
    """What is wrong with `path` for `type_`, before anything is created (None: fine)."""
    if type_ == "":
        return None
    test, what = _WANT[type_]
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if type_ == "DirectoryOrCreate":
            return None
        if type_ == "FileOrCreate":
            parent = os.path.dirname(path)
            return None if os.path.isdir(parent) else \
                f"hostPath type check failed: {path}: its directory {parent} does not exist"
        return f"hostPath type check failed: {path} is not {what} (it does not exist)"
    except OSError as e:
        return f"hostPath type check failed: {path}: {e.strerror}"
    if not test(st.st_mode):
        return f"hostPath type check failed: {path} is not {what}"
    return None


def prepare(path: str, type_: str) -> None:
    """Check, then create what the type creates. Raises HostPathError."""
    if msg := problem(path, type_):
        raise HostPathError(msg)
    if type_ in ("", "DirectoryOrCreate"):
        if not os.path.lexists(path):
            os.makedirs(path, 0o755, exist_ok=True)
            os.chmod(path, 0o755)
    elif type_ == "FileOrCreate" and not os.path.lexists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        os.fchmod(fd, 0o644)
        os.close(fd)
    if msg := problem(path, type_):  # what a racer left there
        raise HostPathError(msg)
