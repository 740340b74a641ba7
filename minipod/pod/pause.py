"""Find the pause binary that holds a pod's namespaces.

The C pause (pause/pause.c, ~0.7 MB static, well under 1 MB RSS) is preferred; when it
has not been built or installed, a pure-Python pause with the same behaviour is used
instead (it works everywhere but costs ~8 MB RSS per pod). `Pause.kind` says which one
a pod got, so `inspect` can show it.

This runs on every `minipod run`: only os/sys/dataclasses, a handful of stat calls.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

_HERE = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(os.path.dirname(_HERE))  # <repo>/minipod/pod -> <repo>
FALLBACK_SCRIPT = os.path.join(_HERE, "pause_fallback.py")


@dataclass(frozen=True)
class Pause:
    kind: str  # "c" (the static binary) or "python" (pause_fallback.py)
    argv: list[str]  # what to exec
    path: str  # the binary or the fallback script


def installed(name: str) -> list[str]:
    """Where minipod's C helper `name` (pause, janitor: pause/*.c) may be, in search order:
    `make -C pause install` into the venv (what setup.sh does), the system prefixes, and a
    source checkout after `make -C pause`: <repo>/pause/<name> next to <repo>/minipod."""
    return [
        os.path.join(sys.prefix, "libexec", "minipod", name),
        f"/usr/local/libexec/minipod/{name}",
        f"/usr/libexec/minipod/{name}",
        os.path.join(_CHECKOUT, "pause", name),
    ]


def candidates(configured: str = "") -> list[str]:
    """Where a C pause may be, in search order (empty entries dropped)."""
    paths = [configured, os.environ.get("MINIPOD_PAUSE", ""), *installed("pause")]
    return [p for p in paths if p]


def first_executable(paths: list[str]) -> str | None:
    for path in paths:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
    return None


def find(configured: str = "") -> Pause:
    """The first executable C pause in `candidates()`, else the Python fallback.

    A configured path that is missing falls through to the next candidate rather than
    failing: the pod still gets a working pause, and `kind`/`path` show which one.
    """
    if configured != "python":  # "python" asks for the fallback (labs compare the two)
        path = first_executable(candidates(configured))
        if path:
            return Pause(kind="c", argv=[path], path=path)
    # -S: skip site (no venv .pth scanning: faster start, less memory);
    # -I: isolated (ignore PYTHON* env vars and the user site; no cwd on sys.path).
    return Pause(
        kind="python",
        argv=[sys.executable, "-S", "-I", FALLBACK_SCRIPT],
        path=FALLBACK_SCRIPT,
    )
