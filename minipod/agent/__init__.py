"""The node agent: one long-lived, warm minipod process per runtime root (issue 11).

    server.py    `minipod daemon run`: the socket, the warm interpreter, a fork per request
    client.py    what the `minipod` command does first: hand its argv to the agent, or not
    protocol.py  length-prefixed marshal frames (with the client's stdio as SCM_RIGHTS)
    zygote.py    `run -d` in the agent: a pod's janitor + supervisor forked, not exec'd

The agent of a root lives in it: ROOT/agent.sock (0600), ROOT/agent.lock (held by the agent
for its whole life: at most one agent per root), ROOT/agent.log. Every request is served by
a fresh fork of the agent, which runs the ordinary CLI (cli.main) with the client's argv,
environment, working directory and stdio -- so messages and exit codes are the CLI's own, and
a request that crashes or hangs takes no other request and no pod with it.
"""

from __future__ import annotations

import os

SOCKET, LOCK, LOG = "agent.sock", "agent.lock", "agent.log"

# Set in the agent's workers: `run -d` then forks pods from the warm interpreter (zygote.py).
in_agent = False


def path(root: str, name: str) -> str:
    return os.path.join(root, name)


def spawner():
    """The Daemon class runner.py starts a pod's janitor + supervisor with: None (runner's
    own, which execs them) outside the agent."""
    if not in_agent:
        return None
    from minipod.agent import zygote

    return zygote.Daemon
