"""A pure-Python pause, used when the C pause (pause/pause.c) is not built.

Run as a script: `python -S -I pause_fallback.py [-v]`. It imports nothing from minipod
(with -I the script's directory is not on sys.path) and only os/signal/sys from the stdlib.

Same behaviour as pause.c: `-v` prints the version; a warning when not PID 1; SIGINT and
SIGTERM exit 0; SIGCHLD reaps every exited child; exit 1/2/3 when installing a handler
fails; exit 42 if the wait loop ever ends.

One difference: Python cannot pass SA_NOCLDSTOP, so a child that stops or continues
also wakes the reaper. That is harmless: waitpid(WNOHANG) without WUNTRACED reports
only exited children, so the loop finds nothing to reap and goes back to sleep.
"""

import os
import signal
import sys

VERSION = "0.1.0"  # keep in step with minipod.__version__ (checked by tests/integration/test_pause.py)


def _shutdown(signum, frame):
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
    os.write(2, f"pause: shutting down on {name}\n".encode())
    # _exit, like the C handler: no atexit work, no stdio flush that could block.
    os._exit(0)


def _reap(signum, frame):
    # Signals do not queue: one SIGCHLD may stand for many exits, so drain them all.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list) -> int:
    if any(a.lower() == "-v" for a in argv[1:]):
        print(f"pause.py {VERSION}")
        return 0
    if os.getpid() != 1:
        # Not an error: pause is PID 1 only when the pod shares one PID namespace.
        print("Warning: pause should be the first process", file=sys.stderr, flush=True)
    for code, signum, handler in (
        (1, signal.SIGINT, _shutdown),
        (2, signal.SIGTERM, _shutdown),
        (3, signal.SIGCHLD, _reap),
    ):
        try:
            signal.signal(signum, handler)
        except (OSError, ValueError):
            return code
    # A child may have exited before the SIGCHLD handler was installed.
    _reap(signal.SIGCHLD, None)
    while True:
        # Returns after each signal once its Python-level handler has run.
        signal.pause()
    print("Error: infinite loop terminated", file=sys.stderr)  # unreachable, as in pause.c
    return 42


if __name__ == "__main__":
    sys.exit(main(sys.argv))
