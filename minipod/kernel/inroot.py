"""Open a path inside a directory tree as if that directory were "/", and hand back an fd.

Why fds and not strings: a container's mount target is a path in its image or in a volume that
another container of the pod can change while we work. Checking a path string and then mounting
onto it (runc before 1.0.0-rc95, CVE-2021-30465) lets a symlink swapped in between the check and
the mount redirect the mount onto the host; creating a missing mount point the same way creates
files and directories on the host (CVE-2024-45310). So a target is opened here, component by
component, with every symlink resolved *inside* the root, and the caller mounts onto
/proc/self/fd/N: the kernel then mounts onto exactly the object we opened, whatever the path
says by then.

openat2(RESOLVE_IN_ROOT) (Linux 5.6) does the resolution in the kernel, including the races of
".." against a concurrent rename. The fallback walks one component at a time with
O_PATH|O_NOFOLLOW, reads each symlink through the fd it opened (never by path again), and keeps
the fds of the directories it went through, so ".." is the directory we came from and stops at
the root. Missing components are created with mkdirat/openat(O_EXCL|O_NOFOLLOW) relative to
their parent's fd and then looked up again, so whatever a racer put there is resolved in the
root too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque

from minipod.kernel import _libc

__all__ = ["open_in_root", "lookup", "fd_path", "MAX_SYMLINKS"]

MAX_SYMLINKS = 40  # the kernel's limit (MAXSYMLINKS)
_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_have_openat2 = True


def fd_path(fd: int) -> str:
    """A path naming exactly the object `fd` refers to (mount(2) follows this magic link)."""
    return f"/proc/self/fd/{fd}"


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def open_in_root(root_fd: int, path: str, create: str | None = None) -> int:
    """An O_PATH fd for `path` resolved inside the directory `root_fd`.

    create: None (a missing component raises FileNotFoundError), "dir" (missing components are
    made directories) or "file" (the same, but the last one is made an empty regular file).
    Symlinks, absolute or relative, and ".." never lead above the root. Errors name `path`.
    """
    global _have_openat2
    if _have_openat2:
        try:
            # No O_NOFOLLOW: a symlink as the last component is followed too (in the root).
            return _libc.openat2(root_fd, path, os.O_PATH | os.O_CLOEXEC,
                                 _libc.RESOLVE_IN_ROOT | _libc.RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EPERM):
                # ENOSYS: older than 5.6; EPERM: a seccomp filter that does not know it.
                _have_openat2 = False
            elif e.errno == errno.ENOENT and create is not None:
                pass  # the walk creates what is missing
            elif e.errno != errno.EAGAIN:
                # (EAGAIN: a rename raced with a ".."; the walk below, which holds the fd of
                # every directory it went through, has no such race.)
                raise OSError(e.errno, f"{path}: {os.strerror(e.errno)}") from None
    fd, missing = _walk(root_fd, path, create)
    if missing:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, f"{path}: no such file or directory")
    return fd


def lookup(root_fd: int, path: str) -> tuple[int, list[str]]:
    """Resolve `path` in the root as far as it exists: (an O_PATH fd of the deepest existing
    object, the components below it that do not exist). Creates nothing."""
    return _walk(root_fd, path, None)


def _walk(root_fd: int, path: str, create: str | None) -> tuple[int, list[str]]:
    stack = [os.dup(root_fd)]  # the fds of the directories resolved so far; the root first
    todo = deque(_parts(path))
    hops = 0
    try:
        while todo:
            part = todo.popleft()
            if part == "..":
                if len(stack) > 1:  # at the root, ".." is the root (as in the kernel)
                    os.close(stack.pop())
                continue
            last = not todo
            try:
                fd = os.open(part, _O_PATH, dir_fd=stack[-1])
            except FileNotFoundError:
                if create is None:
                    return stack.pop(), [part, *todo]
                _make(stack[-1], part, "file" if last and create == "file" else "dir")
                todo.appendleft(part)  # look it up again: resolve whatever is there now
                continue
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                # O_PATH|O_NOFOLLOW opened the link itself: read it through that fd, so the
                # link we follow is the one we looked at.
                try:
                    target = os.readlink("", dir_fd=fd)
                finally:
                    os.close(fd)
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, f"{path}: too many levels of symbolic links")
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo.extendleft(reversed(_parts(target)))
                continue
            if todo and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise NotADirectoryError(errno.ENOTDIR, f"{path}: {part!r} is not a directory")
            stack.append(fd)
        return stack.pop(), []
    finally:
        for fd in stack:
            os.close(fd)


def _make(dir_fd: int, name: str, kind: str) -> None:
    """Create `name` in `dir_fd` without following a symlink; someone else's entry is fine."""
    try:
        if kind == "dir":
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        else:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=dir_fd))
    except FileExistsError:
        pass
