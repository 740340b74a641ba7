"""The stop points behind `minipod run --step`: after each stage of a pod's set-up (cgroups,
sandbox, network, each container) the orchestrator stops, tells the CLI what now exists and
what to look at, and waits until the student presses Enter.

Off by default, and then free (`ON` is False; call sites are guarded). `run --step` gives its
daemon two pipes, named in $MINIPOD_STEP as "W,R": one JSON line per stop goes to W, and the
supervisor blocks reading one line from R. Read once here at import (the supervisor's, before
it forks anything), then forgotten and made close-on-exec, so neither pause nor a container
ever holds them; the containers' set-up children close them with every other fd.
"""

from __future__ import annotations

import json
import os

ENV = "MINIPOD_STEP"
_w = _r = -1


def _open() -> None:
    global _w, _r
    spec = os.environ.pop(ENV, "")
    if spec:
        try:
            _w, _r = (int(x) for x in spec.split(","))
            os.set_inheritable(_w, False)
            os.set_inheritable(_r, False)
        except (ValueError, OSError):
            _w = _r = -1


_open()
ON = _w >= 0


def stop(stage: str, exists: list[str], look: list[str]) -> None:
    """Say what stage `stage` made and what a student could run to see it; wait for Enter.
    A CLI that has gone (EOF, a broken pipe) lets the pod go on."""
    if not ON:
        return
    try:
        os.write(_w, (json.dumps({"stage": stage, "exists": exists, "look": look}) + "\n")
                 .encode())
        os.read(_r, 1)  # one byte per stop: the CLI writes "\n" on Enter; EOF goes on too
    except OSError:
        pass


def render(msg: dict) -> str:
    out = [f"── stopped after: {msg['stage']}", "   now there is:"]
    out += [f"     {x}" for x in msg["exists"]]
    out.append("   look at it (in another terminal):")
    out += [f"     $ {x}" for x in msg["look"]]
    out.append("   press Enter to continue")
    return "\n".join(out)
