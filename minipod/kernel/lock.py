"""An exclusive flock(2) on a lock file, as a context manager.

flock, not fcntl/lockf: the lock belongs to the open file description, so a forked child that
inherits the fd does not silently drop the parent's lock when it closes its copy (lockf locks are
per process and are dropped by *any* close of the file in that process). The kernel releases the
lock when the holder dies, so a crashed minipod never leaves the network locked.

The lock file may be deleted by whoever holds the lock (the ip_forward registry removes its whole
directory when the last network goes). A waiter that was blocked on the deleted inode would then
"hold" a lock nobody else can see, so after locking we check that the path still names the inode
we locked, and start over if it does not.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterator

from minipod.errors import MinipodError


class LockError(MinipodError):
    """The lock file could not be created or locked (the message names the file)."""


def _open(path: str) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        # The directory does not exist (yet, or any more): make it and retry once.
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        return os.open(path, flags, 0o600)


@contextmanager
def flock(path: str) -> Iterator[int]:
    """Hold an exclusive lock on `path` (created mode 0600, parent dirs 0700) for the block."""
    while True:
        try:
            fd = _open(path)
        except OSError as e:
            raise LockError(f"open lock file {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            mine = os.fstat(fd)
            now = os.stat(path)
        except FileNotFoundError:
            os.close(fd)  # deleted while we waited: lock the new file instead
            continue
        except OSError as e:
            os.close(fd)
            raise LockError(f"lock {path}: {e.strerror}") from None
        if (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino):
            break
        os.close(fd)
    try:
        yield fd
    finally:
        os.close(fd)  # closing the last fd of the open file description releases the lock
