"""The titles minipod's long-lived processes show in `ps` once they have a pod, as
containerd-shim shows `-id`: `ps -eo pid,args | grep web` finds the pod's janitor and
supervisor. pause/janitor.c writes the same janitor title.

    minipod-janitor -pod NAME -root ROOT
    minipod-supervisor -pod NAME -root ROOT

The comm (15 bytes) is `mp-jan:NAME` / `mp-sup:NAME`, cut. remains.py recognises a minipod
process by these titles as well as by its original command line.
"""

from __future__ import annotations

import os

JANITOR = "minipod-janitor"
SUPERVISOR = "minipod-supervisor"
_COMM = {JANITOR: "mp-jan:", SUPERVISOR: "mp-sup:"}


def title(role: str, run_dir: str) -> tuple[str, str]:
    """(args, comm) for `role` given the pod's run directory ROOT/pods/NAME."""
    run_dir = run_dir.rstrip("/")
    name = os.path.basename(run_dir)
    root = os.path.dirname(os.path.dirname(run_dir))
    return f"{role} -pod {name} -root {root}", _COMM[role] + name


def set_for(role: str, run_dir: str) -> None:
    from minipod.kernel import proctitle

    try:
        proctitle.set_title(*title(role, run_dir))
    except Exception:  # noqa: BLE001 - cosmetic: a pod never fails for its title
        pass


def role_of(argv: list[bytes]) -> str | None:
    """JANITOR or SUPERVISOR if this command line (split at NULs) is one of our titles."""
    first = argv[0] if argv else b""
    for role in (JANITOR, SUPERVISOR):
        if first.startswith(role.encode() + b" -pod "):
            return role
    return None
