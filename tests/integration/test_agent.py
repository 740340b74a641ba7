"""The node agent (minipod/agent/): started on demand, the same output and exit codes as the
in-process CLI, root only, pods that survive a SIGKILLed agent, nothing left after `daemon
stop`."""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import sys

import pytest

from conftest import agents

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

SLEEPER = """
apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}
"""
BAD = """
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - {name: c, imagee: busybox}
"""


def sock(mp) -> str:
    return os.path.join(mp.root, "agent.sock")


def status(mp) -> dict:
    """The agent's own account (pid, requests served), through the protocol."""
    from minipod.agent import client

    msg = client.request(mp.root, "status")
    assert msg and "status" in msg, f"no agent answers: {msg}"
    return msg["status"]


def started(mp) -> dict:
    """Start the agent (any routed command would) and wait until it answers."""
    mp.minipod("daemon", "start")
    return status(mp)


def cold(mp, *args, **kw):
    return mp.minipod(*args, env=dict(mp.env, MINIPOD_AGENT="0"), check=False, **kw)


def test_the_first_short_command_starts_the_agent(mp):
    assert not os.path.exists(sock(mp))
    p = mp.minipod("ps")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "No resources found\n")
    mp.wait(lambda: os.path.exists(sock(mp)), what="the agent's socket")
    mp.wait(lambda: mp.minipod("daemon", "status", check=False).returncode == 0,
            what="the agent to answer")
    st = os.stat(sock(mp))
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert list(agents(mp.base)) == [status(mp)["pid"]]
    out = mp.minipod("daemon", "status").stdout
    assert out.startswith(f"agent: running (pid {status(mp)['pid']}, ") and sock(mp) in out


def test_two_commands_at_once_start_one_agent(mp):
    procs = [subprocess.Popen([sys.executable, "-m", "minipod", "ps"], env=mp.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(4)]
    for p in procs:
        assert p.wait(60) == 0
    pid = started(mp)["pid"]
    mp.wait(lambda: list(agents(mp.base)) == [pid], what="the agents that lost the lock to exit")


@pytest.mark.parametrize("args", [
    ["validate", "GOOD"], ["validate", "BAD"], ["validate", "MISSING"], ["validate", "-"],
    ["ps"], ["ps", "--bogus"], ["inspect", "nope"], ["get", "pods", "-o", "json"],
    ["get", "deployments"], ["rm", "nope"], ["--config", "CONFIG", "ps"],
])
def test_output_and_exit_code_are_the_in_process_ones(mp, args):
    good = mp.write("good.yaml", SLEEPER.replace("NAME", "good"))
    files = {"GOOD": good, "BAD": mp.write("bad.yaml", BAD),
             "MISSING": os.path.join(mp.base, "missing.yaml"), "CONFIG": mp.config}
    args = [files.get(a, a) for a in args]
    stdin = SLEEPER.replace("NAME", "stdin")
    served = started(mp)["served"]
    warm = mp.minipod(*args, check=False, input=stdin)
    assert status(mp)["served"] == served + 2  # ours, and the status request before it
    down = cold(mp, *args, input=stdin)
    assert (warm.returncode, warm.stdout, warm.stderr) == \
        (down.returncode, down.stdout, down.stderr)
    if args[0] == "validate" and args[1] == files["BAD"]:
        assert warm.returncode == 1 and warm.stdout == ""
        assert warm.stderr.startswith(f"error: {files['BAD']}: 2 problems\n")


def test_a_running_pods_row_is_the_same(mp):
    mp.minipod("run", "-d", mp.write("web.yaml", SLEEPER.replace("NAME", "web")))
    started(mp)

    def rows(p):
        return [ln.split()[:4] + ln.split()[5:] for ln in p.stdout.splitlines()]  # not AGE

    warm, down = mp.minipod("ps"), cold(mp, "ps")
    assert rows(warm) == rows(down) and rows(warm)[1][:3] == ["web", "1/1", "Running"]
    assert json.loads(mp.minipod("inspect", "web").stdout).keys() == \
        json.loads(cold(mp, "inspect", "web").stdout).keys()


def test_a_peer_that_is_not_root_is_refused(mp):
    started(mp)
    nobody = pwd.getpwnam("nobody")
    # As nobody: open the run directory first (as root), then connect through it; the
    # socket's mode stops nobody before the agent ever sees the connection...
    probe = f"""
import os, socket, sys
sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})
d = os.open({mp.root!r}, os.O_PATH)
os.setgroups([]); os.setgid({nobody.pw_gid}); os.setuid({nobody.pw_uid})
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(f"/proc/self/fd/{{d}}/agent.sock")
except PermissionError:
    print("EACCES"); sys.exit(0)
from minipod.agent import protocol
print(protocol.recv(s)[0])  # the agent answers before it reads anything, and hangs up
"""
    run = lambda: subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                 timeout=30, cwd="/")
    p = run()
    assert (p.returncode, p.stdout) == (0, "EACCES\n"), p.stderr
    # ... and when the mode would let it in, SO_PEERCRED does.
    os.chmod(sock(mp), 0o666)
    try:
        p = run()
    finally:
        os.chmod(sock(mp), 0o600)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "{'refused': 'the minipod agent serves root only'}\n"


def _ancestors(pid: int) -> list[int]:
    out = []
    while pid > 1:
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rpartition(")")[2].split()[1])
        out.append(pid)
    return out


def test_a_pod_outlives_a_sigkilled_agent(mp):
    agent = started(mp)["pid"]
    mp.minipod("run", "-d", mp.write("web.yaml", SLEEPER.replace("NAME", "web")))
    info = mp.inspect("web")
    sup = info["supervisor"]["pid"]
    # Forked from the warm agent (its pages: pydantic's core is mapped, which a supervisor
    # exec'd on its own never imports): its parent is the C janitor, whose parent is the
    # agent's zygote (minipod/agent/zygote.py), which dies with the agent.
    with open(f"/proc/{sup}/maps") as f:
        assert "_pydantic_core" in f.read()
    janitor, zygote = _ancestors(sup)[:2]
    with open(f"/proc/{janitor}/cmdline", "rb") as f:
        assert f.read().startswith(b"minipod-janitor -pod web ")
    with open(f"/proc/{zygote}/cmdline", "rb") as f:
        assert f.read().startswith(f"minipod-zygote -root {mp.root}".encode())
    assert _ancestors(zygote)[0] == agent
    assert info["supervisor"]["janitorKind"] == "c"
    os.kill(agent, signal.SIGKILL)
    mp.wait(lambda: agent not in agents(mp.base), what="the agent to die")
    mp.wait(lambda: not os.path.exists(f"/proc/{zygote}") or
            open(f"/proc/{zygote}/stat").read().split()[2] == "Z", what="the zygote to die")
    assert os.path.exists(f"/proc/{sup}") and _ancestors(sup)[0] == janitor
    assert agent not in _ancestors(sup) and zygote not in _ancestors(sup)
    # The next command finds a dead agent's socket, runs in-process and starts a new agent.
    p = mp.minipod("ps")
    assert p.stdout.splitlines()[1].split()[:3] == ["web", "1/1", "Running"]
    again = started(mp)["pid"]
    assert again != agent
    assert mp.minipod("ps").stdout.splitlines()[1].split()[:3] == ["web", "1/1", "Running"]
    assert mp.inspect("web")["supervisor"]["pid"] == sup
    mp.minipod("rm", "-f", "web")
    assert not os.path.exists(f"/proc/{sup}")


def _zygote_of(agent: int) -> int | None:
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if not f.read().startswith(b"minipod-zygote "):
                    continue
            if _ancestors(int(d))[0] == agent:
                return int(d)
        except (OSError, ValueError):
            continue
    return None


def test_a_killed_zygote_is_forked_again(mp):
    agent = started(mp)["pid"]
    first = _zygote_of(agent)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    mp.wait(lambda: _zygote_of(agent) not in (None, first), what="another zygote")
    mp.minipod("run", "-d", mp.write("web.yaml", SLEEPER.replace("NAME", "web")))
    assert mp.minipod("ps").stdout.splitlines()[1].split()[:3] == ["web", "1/1", "Running"]
    with open(os.path.join(mp.root, "agent.log")) as f:
        assert f"zygote {first} died (signal 9); forking another" in f.read()
    mp.minipod("rm", "-f", "web")


BUSY = """
apiVersion: v1
kind: Pod
metadata: {name: busy}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www; echo hi > /www/index.html; exec httpd -f -p 80 -h /www"]
    ports: [{containerPort: 80, hostPort: HOSTPORT}]
    startupProbe: {exec: {command: ["true"]}, periodSeconds: 1}
    readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 1}
    livenessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
    lifecycle:
      postStart: {exec: {command: ["true"]}}
      preStop: {httpGet: {path: /, port: 80}}
  - name: crash
    image: busybox
    command: ["sh", "-c", "echo once; exit 3"]
"""


def test_a_supervisor_imports_nothing_the_agent_has_not(mp, tmp_path):
    """A module a pod's supervisor imports itself is about a megabyte of private memory in
    every pod (zygote.py): probes, hooks, a restart, a host port and the teardown all run on
    what the agent imported while it warmed up."""
    import socket

    with socket.socket() as s:  # a free port for the hostPort
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started(mp)
    late = str(tmp_path / "late")
    env = dict(mp.env, MINIPOD_TEST_LATE_IMPORTS=late)
    mp.minipod("run", "-d", mp.write("busy.yaml", BUSY.replace("HOSTPORT", str(port))),
               env=env)

    def row():
        return dict(zip(["name", "ready", "status", "restarts"],
                        mp.minipod("ps").stdout.splitlines()[1].split()))

    mp.wait(lambda: row()["ready"] == "1/2" and int(row()["restarts"]) >= 1,
            what="the web container ready and the other restarted")
    mp.minipod("rm", "-f", "busy")
    files = [f for f in os.listdir(tmp_path) if f.startswith("late.")]
    assert len(files) == 1, files
    with open(tmp_path / files[0]) as f:
        assert f.read() == ""


def test_a_pod_gets_the_clients_environment_not_the_agents(mp):
    """The agent keeps the environment of the command that started it; a pod started through
    it gets the environment of the command that started the pod, as in-process: what the
    client has is set, and what only the agent has is unset (zygote.py sends the difference).
    The C janitor is exec'd by J after J applied it, so its /proc/PID/environ shows it."""
    mp.minipod("daemon", "start", env=dict(mp.env, MP_TEST_AGENT_ONLY="agent"))
    assert "MP_TEST_AGENT_ONLY=agent" in _environ(status(mp)["pid"])
    mp.minipod("run", "-d", mp.write("web.yaml", SLEEPER.replace("NAME", "web")),
               env=dict(mp.env, MP_TEST_CLIENT_ONLY="client"))
    env = _environ(mp.inspect("web")["supervisor"]["janitorPid"])
    assert "MP_TEST_CLIENT_ONLY=client" in env
    assert not any(v.startswith("MP_TEST_AGENT_ONLY=") for v in env)
    mp.minipod("rm", "-f", "web")


def _environ(pid: int) -> list[str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return f.read().decode(errors="replace").split("\0")


def test_a_minipod_folder_where_the_command_runs_is_never_imported(mp, tmp_path):
    """`python -m` puts the working directory first on sys.path: every interpreter minipod
    starts runs with -P (minipod.python_m), or a minipod/ folder wherever root runs a command
    would be imported as root -- by the supervisor minipod execs, the janitor's clean-up, the
    agent. (The command is the installed script, whose sys.path starts at its own folder.)
    The agent also leaves the directory it was started from."""
    script = os.path.join(os.path.dirname(sys.executable), "minipod")
    here = tmp_path / "cwd"
    (here / "minipod").mkdir(parents=True)
    marker = tmp_path / "imported"
    (here / "minipod" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported')\nraise SystemExit(99)\n")
    spec = mp.write("web.yaml", SLEEPER.replace("NAME", "web"))

    def run(*args, agent="0"):
        p = subprocess.run([script, *args], cwd=here, capture_output=True, text=True,
                           timeout=120, env=dict(mp.env, MINIPOD_AGENT=agent))
        assert p.returncode == 0, p.stderr
        return p

    mp.stop_agent()
    run("run", "-d", spec)  # in-process: the janitor execs the supervisor
    os.kill(mp.inspect("web")["supervisor"]["pid"], signal.SIGKILL)  # the janitor cleans up
    mp.wait(lambda: mp.pod("web")["status"]["phase"] == "Failed", what="the janitor")
    mp.minipod("rm", "-f", "web")
    run("daemon", "start", agent="1")
    agent = status(mp)["pid"]
    assert os.readlink(f"/proc/{agent}/cwd") == "/"
    run("run", "-d", spec, agent="1")
    assert mp.minipod("ps").stdout.splitlines()[1].split()[:3] == ["web", "1/1", "Running"]
    mp.minipod("rm", "-f", "web")
    assert not marker.exists(), "a minipod/ folder in the working directory was imported"


@pytest.mark.parametrize("agent", ["0", "1"], ids=["in-process", "agent"])
def test_a_pod_keeps_no_hold_on_the_directory_it_was_started_from(mp, tmp_path, agent):
    """`minipod run -d` typed in a mounted directory (a USB stick, a share): the pod's janitor,
    supervisor and pause live in /, so it can be unmounted while the pod runs; and a relative
    `--config` reaches them, absolute (they read the config again, from $MINIPOD_CONFIG)."""
    script = os.path.join(os.path.dirname(sys.executable), "minipod")
    here = tmp_path / "mnt"
    here.mkdir()
    if agent == "1":
        started(mp)
    subprocess.run(["mount", "-t", "tmpfs", "mp-test-cwd", str(here)], check=True)
    mounted = True
    try:
        spec = mp.write("web.yaml", SLEEPER.replace("NAME", "web"))
        env = {k: v for k, v in mp.env.items() if k != "MINIPOD_CONFIG"}
        p = subprocess.run([script, "--config", os.path.relpath(mp.config, here), "run", "-d",
                            os.path.relpath(spec, here)], cwd=here, capture_output=True,
                           text=True, timeout=120, env=dict(env, MINIPOD_AGENT=agent))
        assert p.returncode == 0, p.stderr
        info = mp.inspect("web")
        pids = {"janitor": info["supervisor"]["janitorPid"],
                "supervisor": info["supervisor"]["pid"], "pause": info["sandbox"]["pid"]}
        for what, pid in pids.items():
            assert os.readlink(f"/proc/{pid}/cwd") == "/", what
        assert f"MINIPOD_CONFIG={mp.config}" in _environ(pids["janitor"])
        subprocess.run(["umount", str(here)], check=True)  # not busy
        mounted = False
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(here)])
    assert mp.minipod("ps").stdout.splitlines()[1].split()[:3] == ["web", "1/1", "Running"]
    mp.minipod("rm", "-f", "web")


def test_a_run_whose_client_is_killed_starts_no_more_pods(mp):
    """In-process, `run -d` of a file dies with its terminal; through the agent its worker
    must not go on starting the file's other pods for nobody."""
    names = [f"k{i}" for i in range(8)]
    manifest = mp.write("pods.yaml", "---".join(SLEEPER.replace("NAME", n) for n in names))
    started(mp)
    client = subprocess.Popen([sys.executable, "-m", "minipod", "run", "-d", manifest],
                              env=mp.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        mp.wait(lambda: os.path.exists(os.path.join(mp.root, "pods", "k1")),
                what="the second pod started")
    finally:
        client.kill()
        client.wait()
    workers = [p for p in agents(mp.base) if p != status(mp)["pid"]]
    mp.wait(lambda: not [p for p in workers if p in agents(mp.base)], what="the worker to end")
    left = os.listdir(os.path.join(mp.root, "pods"))
    assert 2 <= len(left) < len(names), left
    mp.minipod("rm", "-f", *left)


def test_daemon_stop_leaves_nothing(mp):
    pid = started(mp)["pid"]
    zygote = _zygote_of(pid)
    p = mp.minipod("daemon", "stop")
    assert p.stdout == f"agent: stopped (pid {pid})\n"
    assert not os.path.exists(sock(mp)) and not agents(mp.base)
    assert not os.path.exists(f"/proc/{zygote}")  # the agent has reaped it
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert mp.minipod("daemon", "stop").stdout == "agent: not running\n"
    p = mp.minipod("daemon", "status", check=False)
    assert p.returncode == 3 and p.stdout.startswith("agent: not running")


def test_an_agent_whose_code_changed_on_disk_makes_way_for_the_new(mp, tmp_path):
    """After a `git pull` (or a reinstall) the agent's modules are the old code and what its
    workers import lazily the new: the agent stops at the next request, which runs
    in-process, and the command after starts an agent of the new code."""
    import shutil

    import minipod

    code = tmp_path / "code"
    shutil.copytree(os.path.dirname(minipod.__file__), code / "minipod",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(mp.env, PYTHONPATH=str(code))

    def run(*args, **kw):  # not from our working directory: python -m would find ours there
        return mp.minipod(*args, env=env, cwd=str(tmp_path), **kw)

    run("daemon", "start")
    old = status(mp)
    assert old["code"] == str(code / "minipod")
    with open(code / "minipod" / "cli" / "cli.py", "a") as f:
        f.write("# a new version\n")
    p = run("ps")  # refused by the old agent: served in-process
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "No resources found\n")
    mp.wait(lambda: old["pid"] not in agents(mp.base), what="the old agent to stop")
    with open(os.path.join(mp.root, "agent.log")) as f:
        assert "minipod's code changed on disk: stopping" in f.read()
    run("ps")  # starts the new one
    mp.wait(lambda: run("daemon", "status", check=False).returncode == 0, what="a new agent")
    new = status(mp)
    assert new["pid"] != old["pid"] and new["code"] == old["code"]
    run("daemon", "stop")


def test_an_agent_being_started_holds_the_lock_before_the_command_returns(mp):
    """No window in which a command has started an agent that does not hold the root's
    lock yet: a `daemon stop` in it would find nothing to stop, and the agent would serve
    after it -- or a second command would start a second interpreter."""
    from minipod.agent import client

    client.start(mp.root)
    assert client.starting(mp.root)  # before the new interpreter has imported anything
    p = mp.minipod("daemon", "stop")
    assert p.stdout.startswith("agent: stopped (pid ")
    assert not os.path.exists(sock(mp)) and not agents(mp.base)
    assert not client.starting(mp.root)


def test_sigterm_while_the_agent_forks_for_requests_stops_it(mp):
    """The agent forks a worker per request; a SIGTERM that lands in its at-fork callbacks
    (Python ignores what is raised there) must still stop it, and soon."""
    import threading
    import time

    from minipod.agent import client

    for _ in range(8):
        pid = started(mp)["pid"]
        done = threading.Event()

        def hammer():
            while not done.is_set():
                client.request(mp.root, "status")

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        os.kill(pid, signal.SIGTERM)
        try:
            mp.wait(lambda: not agents(mp.base) and not os.path.exists(sock(mp)), 5,
                    "the agent to stop after SIGTERM")
        finally:
            done.set()
            for t in threads:
                t.join()
