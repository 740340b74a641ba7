"""The node agent's wire format (minipod/agent/protocol.py) and the client's cheap decisions
(minipod/agent/client.py): which commands go to the agent, and which root's agent."""

from __future__ import annotations

import marshal
import os
import socket
import struct
import subprocess
import sys

import pytest

from minipod import config
from minipod.agent import client, protocol


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def test_a_frame_round_trips(pair):
    a, b = pair
    msg = {"argv": ["ps"], "env": {"K": "v é"}, "n": 3}
    protocol.send(a, msg)
    assert protocol.recv(b) == (msg, [])


def test_descriptors_ride_with_the_frame(pair, tmp_path):
    a, b = pair
    path = tmp_path / "f"
    path.write_text("through the socket\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        protocol.send(a, {"argv": []}, [fd, fd])
    finally:
        os.close(fd)
    msg, fds = protocol.recv(b)
    assert msg == {"argv": []} and len(fds) == 2
    assert os.read(fds[0], 100) == b"through the socket\n"
    for got in fds:
        os.close(got)


def test_frames_in_a_row_stay_apart(pair):
    a, b = pair
    protocol.send(a, {"pid": 1})
    protocol.send(a, {"exit": 2})
    assert protocol.recv(b)[0] == {"pid": 1}
    assert protocol.recv(b)[0] == {"exit": 2}


def test_a_peer_that_closes_mid_frame_is_an_error(pair):
    a, b = pair
    a.sendall(struct.pack(">I", 10) + b'{"a"')
    a.close()
    with pytest.raises(protocol.ProtocolError, match="closed after 4 of 10 bytes"):
        protocol.recv(b)


def test_an_oversized_frame_is_refused_before_it_is_read(pair):
    a, b = pair
    a.sendall(struct.pack(">I", protocol.MAX_FRAME + 1))
    with pytest.raises(protocol.ProtocolError, match="over the limit"):
        protocol.recv(b)
    with pytest.raises(protocol.ProtocolError, match="over the limit"):
        protocol.send(a, {"x": "y" * protocol.MAX_FRAME})


@pytest.mark.parametrize("body", [b"not marshal", marshal.dumps([1, 2]), b""])
def test_a_frame_that_is_not_a_dict_is_an_error(pair, body):
    a, b = pair
    a.sendall(struct.pack(">I", len(body)) + body)
    with pytest.raises(protocol.ProtocolError):
        protocol.recv(b)


@pytest.mark.parametrize("argv, want", [
    (["ps"], ("ps", None)),
    (["--config", "/x.toml", "validate", "p.yaml"], ("validate", "/x.toml")),
    (["--config=/y.toml", "inspect", "web"], ("inspect", "/y.toml")),
    (["run", "-d", "p.yaml"], ("run", None)),
    (["get", "pods", "-o", "json"], ("get", None)),
    (["rm", "-f", "web"], ("rm", None)),
])
def test_short_commands_go_to_the_agent(argv, want):
    assert client.routed(argv) == want


@pytest.mark.parametrize("argv", [
    [], ["-h"], ["run", "p.yaml"], ["run", "-d", "--explain", "p.yaml"],
    ["run", "-d", "--step", "p.yaml"], ["get", "pods", "-w"], ["exec", "web", "--", "ps", "-d"],
    ["logs", "-f", "web"], ["daemon", "status"], ["version"], ["--bogus", "ps"],
])
def test_interactive_and_unknown_commands_stay_in_process(argv):
    assert client.routed(argv) is None


def test_the_mirrored_defaults_are_configs():
    assert client.DEFAULT_ROOT == config.Config().root
    assert client.DEFAULT_CONFIG == config.DEFAULT_PATH


@pytest.mark.parametrize("text, want", [
    ('root = "/tmp/a b"\nbridge = "x"\n', "/tmp/a b"),
    ("root = '/tmp/lit'  # literal\n", "/tmp/lit"),
    ('root = "/tmp/c" # comment\n', "/tmp/c"),
    ('bridge = "x"\n', client.DEFAULT_ROOT),
    ("root = 3\n", None),
    ('[table]\nroot = "/tmp/t"\n', None),
    ('root = "/tmp/\\u00e9"\n', None),  # an escape: left to config.load, in-process
    ('root = "/tmp/q\\"x"\n', None),
    ('root = "/tmp/unterminated\n', None),
])
def test_the_root_is_read_as_config_reads_it(tmp_path, text, want):
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert client.root_of(str(path), env={}) == want
    if want not in (None, client.DEFAULT_ROOT):
        assert config.load(str(path), env={}).root == want


def test_the_environment_names_the_root_first(tmp_path):
    assert client.root_of(None, env={"MINIPOD_ROOT": "/tmp/r"}) == "/tmp/r"
    assert client.root_of(str(tmp_path / "missing.toml"), env={}) is None
    assert client.root_of(None, env={"MINIPOD_CONFIG": "/nonexistent/default.toml"}) is None


def test_minipod_agent_0_turns_it_off():
    assert not client.enabled({"MINIPOD_AGENT": "0"})


def test_the_client_imports_nothing_that_costs():
    """What every `minipod` command imports before it talks to the agent (entry.py, client.py,
    protocol.py) stays within the interpreter's built-ins: json, re, enum, socket and signal
    were ~14 ms of a 30 ms `minipod ps` through the agent."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(protocol.__file__))))
    probe = (f"import sys; sys.path.insert(0, {repo!r}); from minipod.cli import entry; "
             "from minipod.agent import client, protocol; print(' '.join(sorted(sys.modules)))")
    # -S: no site, so what is listed is what our modules import (site itself imports none of them)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                         text=True, check=True).stdout
    loaded = set(out.split())
    assert "minipod.agent.protocol" in loaded
    assert not loaded & {"json", "re", "enum", "socket", "signal", "functools", "selectors",
                         "pydantic", "yaml", "pyroute2", "argparse"}
