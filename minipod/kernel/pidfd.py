"""Process file descriptors (pidfd_open(2)): a handle on one process that a recycled PID can
never be mistaken for, which poll(2) reports readable once the process has exited -- the way to
wait for processes that are not our children, or for many at once, without polling /proc."""

from __future__ import annotations

import os
import select
import signal
import time


def open_(pid: int) -> int | None:
    """A pidfd for `pid`, or None if it has exited already."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def send(fd: int | None, sig: int) -> None:
    """Signal the process behind `fd`; one that has exited is not an error."""
    if fd is None:
        return
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass


def wait_exited(fds: list[int], timeout: float) -> bool:
    """Wait until every process behind `fds` has exited (zombie or reaped), at most `timeout`
    seconds; True if they all have."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    left, deadline = len(fds), time.monotonic() + timeout
    while left and (ms := int((deadline - time.monotonic()) * 1000)) > 0:
        for fd, _ in poller.poll(ms):
            poller.unregister(fd)
            left -= 1
    return not left
