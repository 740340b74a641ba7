"""Process title primitive: what `ps` shows for this process.

Two kernel fields, set separately: the command line (/proc/PID/cmdline, `ps -o args`), which
is the process's own argv memory -- python-prctl's set_proctitle rewrites it in place (it
cannot grow, so a long title is cut to the length of the original argv) and leaves the
environment as it was; and the comm (/proc/PID/comm, `ps -o comm`, `top`), at most 15 bytes,
set with prctl(PR_SET_NAME).
"""

from __future__ import annotations

COMM_MAX = 15  # TASK_COMM_LEN - 1


def set_title(args: str, comm: str) -> None:
    import prctl

    prctl.set_proctitle(args)
    prctl.set_name(comm.encode()[:COMM_MAX].decode(errors="ignore"))
