"""What the `minipod` command (scripts/minipod) runs: the node agent if it serves this
command, else main().

Apart from cli.py so that a command the agent serves never imports argparse nor cli.py
itself (~10-40 ms cold): what runs in this process is minipod/agent/client.py alone.
"""

from __future__ import annotations

import os
import sys


def entry() -> None:
    """Run the command, then leave without the interpreter's teardown (module cleanup and GC
    at exit cost 20-60 ms on every command and do nothing for us)."""
    from minipod.agent import client  # cheap: no pydantic, no pyroute2, no argparse

    argv = sys.argv[1:]
    code = client.call(argv)  # the short commands, in the warm agent
    if code is None:
        from minipod.cli.cli import main

        code = main(argv)  # everything else, and all of them when no agent answers
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)
