"""inotify(7), for one question: has anything changed in these directories since we looked?

Python has no inotify binding; the three calls go through ctypes. The descriptor is
non-blocking, so asking costs one read(2) -- cheap enough to ask before every request, where a
walk that stats every file (~1 ms for minipod's 150) would not be.
"""

from __future__ import annotations

import ctypes
import os
import struct

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
CHANGES = (IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
           | IN_DELETE_SELF | IN_MOVE_SELF)

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
_libc = ctypes.CDLL(None, use_errno=True)


class Watch:
    """Changes to the files of `dirs` whose names end in one of `suffixes` (and to the
    directories themselves: removed, moved, replaced)."""

    def __init__(self, dirs: list[str], suffixes: tuple[str, ...]):
        self.suffixes = tuple(s.encode() for s in suffixes)
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise _error("inotify_init1")
        try:
            for d in dirs:
                if _libc.inotify_add_watch(self.fd, os.fsencode(d), CHANGES) < 0:
                    raise _error(f"inotify_add_watch {d}")
        except BaseException:
            os.close(self.fd)
            raise

    def changed(self) -> bool:
        """Whether a change has been seen since the last call that said so."""
        seen = False
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return seen
            off = 0
            while off + _EVENT.size <= len(buf):
                _, mask, _, n = _EVENT.unpack_from(buf, off)
                name = buf[off + _EVENT.size:off + _EVENT.size + n].rstrip(b"\0")
                off += _EVENT.size + n
                if mask & (IN_DELETE_SELF | IN_MOVE_SELF) or name.endswith(self.suffixes):
                    seen = True

    def close(self) -> None:
        os.close(self.fd)


def _error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")
