"""Container stdin, stdinOnce and tty, and attach: what a user sees through `minipod attach`
(driven from a pty or a pipe) and through `kubectl attach` / `kubectl run -it` against
`minipod serve`."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import reap_orphans

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

TTY_POD = """
apiVersion: v1
kind: Pod
metadata: {name: term}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: busybox
    stdin: true
    tty: true
    command: ["sh", "-c", "tty; test -t 0 && echo stdin-is-a-terminal; exec sh"]
"""


class Term:
    """A command in a pty of our own (rows x cols): what it prints, what we type."""

    def __init__(self, argv: list[str], env: dict, rows: int = 24, cols: int = 80):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.resize(rows, cols)
        self.out = b""
        self.code: int | None = None

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        # Our pty's foreground group is the command's: the kernel has sent it SIGWINCH.

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read_until(self, pattern: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.out):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout}s in {self.out!r}")
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError(f"EOF before {pattern!r} in {self.out!r}")
                self.out += data
        return self.out

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:  # drain, or the command may block writing to us
                while select.select([self.fd], [], [], 0.05)[0]:
                    data = os.read(self.fd, 4096)
                    if not data:
                        break
                    self.out += data
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                self.code = os.waitstatus_to_exitcode(status)
                return self.code
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise AssertionError(f"still running after {timeout}s: {self.out!r}")


def minipod_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "minipod", *args]


def running(mp, pod: str, name: str, restarts: int = 0) -> bool:
    for c in mp.pod(pod)["status"].get("containerStatuses", []):
        if c["name"] == name:
            return "running" in c["state"] and c["restartCount"] == restarts
    return False


def log_lines(mp, pod: str, name: str, instance: int = 0) -> list[str]:
    with open(os.path.join(mp.root, "pods", pod, "plan.json")) as f:
        plan = json.load(f)
    [c] = [c for c in plan["containers"] if c["name"] == name]
    with open(os.path.join(c["log_dir"], f"{instance}.log"), "rb") as f:
        return f.read().decode(errors="replace").split("\n")[:-1]  # keeps a tty's \r


def test_tty_container_attach_resize_and_detach(mp):
    mp.minipod("run", "-d", mp.write("term.yaml", TTY_POD))
    mp.wait(lambda: any("stdin-is-a-terminal" in ln for ln in log_lines(mp, "term", "shell")),
            20, "the container's first lines")
    # The container's stdio is a terminal in its own devpts, logged as stdout (CRI format,
    # the terminal's \r\n kept, as containerd writes a tty's output).
    lines = log_lines(mp, "term", "shell")
    assert re.match(r"\S+Z stdout F /dev/pts/0\r$", lines[0]), lines
    assert re.match(r"\S+Z stdout F stdin-is-a-terminal\r$", lines[1]), lines
    assert "/dev/pts/0" in mp.minipod("logs", "term").stdout
    # PID 1 holds the terminal as stdio, and nothing else (the master is the supervisor's).
    fds = mp.minipod("exec", "term", "--", "sh", "-c", "cd /proc/1/fd && for f in *; do "
                     "echo $f $(readlink $f); done").stdout.split("\n")[:-1]
    own = [f for f in fds if f.endswith(" /dev/tty")]  # ash opens it for job control
    assert [f for f in fds if f not in own] == ["0 /dev/pts/0", "1 /dev/pts/0",
                                                 "2 /dev/pts/0"], fds

    t = Term(minipod_argv("attach", "-it", "term"), mp.env, rows=37, cols=111)
    t.read_until(b"try pressing enter")
    t.type(b"echo answer-$((6*7)); stty size\r")
    t.read_until(b"answer-42")
    t.read_until(b"37 111")
    t.resize(50, 132)  # SIGWINCH -> RESIZE -> TIOCSWINSZ on the container's pty
    # The resize travels on its own (signal, socket, supervisor loop): ask again until the
    # container's pty has it, rather than guessing how long that takes on a loaded machine.
    deadline = time.monotonic() + 20
    while True:
        t.type(b"stty size\r")
        try:
            t.read_until(b"50 132", timeout=1)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    t.type(b"\x10\x11")  # Ctrl-P Ctrl-Q: detach
    assert t.wait() == 0, t.out
    assert b"Session ended, resume using 'minipod attach term -c shell -i -t'" in t.out
    assert running(mp, "term", "shell")  # detaching leaves the shell running
    # ... and what was typed went to the log as well (the terminal echoes it).
    assert any("answer-42" in ln for ln in log_lines(mp, "term", "shell"))

    # Type-ahead: what is typed before attach has its terminal in raw mode (here, before the
    # client has even started) is kept and sent on, not flushed by the switch to raw.
    t = Term(minipod_argv("attach", "-it", "term"), mp.env)
    t.type(b"echo ahead-$((2*3))\r")
    t.read_until(b"ahead-6")
    t.type(b"\x10\x11")
    assert t.wait() == 0, t.out


def test_exec_t_alone_gives_a_terminal_and_no_input(mp):
    """`exec -t` without -i (docker's and podman's meaning): the command's stdio is a
    terminal, and what we type stays ours; with -i it is the command's input."""
    mp.minipod("run", "-d", mp.write("term.yaml", TTY_POD))
    mp.wait(lambda: running(mp, "term", "shell"), 20, "the shell")
    probe = "test -t 0 && echo IS-A-TTY; read -t 3 x; echo GOT-[$x]"
    for flags, got in (("-t", rb"GOT-\[\]"), ("-it", rb"GOT-\[typed\]")):
        t = Term(minipod_argv("exec", flags, "term", "--", "sh", "-c", probe), mp.env)
        t.read_until(b"IS-A-TTY")
        t.type(b"typed\r")
        t.read_until(got)
        assert t.wait() == 0, t.out


class Attached:
    """`minipod attach` with pipes: what it prints, what we write to its stdin."""

    def __init__(self, mp, *args: str):
        self.p = subprocess.Popen(minipod_argv("attach", *args), env=mp.env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        os.set_blocking(self.p.stdout.fileno(), False)
        self.out = b""
        # kubectl's hint comes once the session is in place: from then on we see the output.
        self.err = b""
        deadline = time.monotonic() + 30
        while b"try pressing enter" not in self.err:
            assert time.monotonic() < deadline and self.p.poll() is None, self.err
            if select.select([self.p.stderr], [], [], 0.2)[0]:
                self.err += self.p.stderr.read1()

    def write(self, data: bytes) -> None:
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def read_until(self, pattern: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.out):
            left = deadline - time.monotonic()
            over = self.p.poll() is not None and not select.select([self.p.stdout], [], [], 0)[0]
            if left <= 0 or over:
                err = self.p.stderr.read() if over else b""
                raise AssertionError(f"no {pattern!r} in {self.out!r} ({self.p.poll()}, {err!r})")
            if select.select([self.p.stdout], [], [], min(left, 0.2))[0]:
                self.out += self.p.stdout.read() or b""
        return self.out

    def wait(self, timeout: float = 20) -> int:
        try:
            self.p.wait(timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
        rest = self.p.stdout.read()
        self.out += rest or b""
        return self.p.returncode

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            self.p.wait(10)


PIPES = """
apiVersion: v1
kind: Pod
metadata: {name: pipes}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: reader            # stdin stays open across attach sessions
    image: busybox
    stdin: true
    command: ["sh", "-c", "while read l; do echo got:$l; done; echo reader-eof; sleep 3600"]
  - name: once              # stdin closes when the first attach's stdin ends
    image: busybox
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "while read l; do echo once:$l; done; echo once-eof; sleep 3600"]
  - name: deaf              # no stdin: /dev/null
    image: busybox
    command: ["sh", "-c", "readlink /proc/1/fd/0; cat; echo deaf-eof; exec sleep 3600"]
"""


def test_stdin_pipes_two_attachers_and_stdin_once(mp):
    mp.minipod("run", "-d", mp.write("pipes.yaml", PIPES))
    mp.wait(lambda: all(running(mp, "pipes", c) for c in ("reader", "once", "deaf")), 30,
            "the containers")
    # Two sessions at once see the same output; one of them writes.
    watcher = Attached(mp, "pipes", "-c", "reader")
    writer = Attached(mp, "pipes", "-c", "reader", "-i")
    try:
        writer.write(b"one\n")
        writer.read_until(b"got:one\n")
        watcher.read_until(b"got:one\n")
        # Without stdinOnce, a session's end of stdin ends that session, not the stdin:
        writer.p.stdin.close()
        assert writer.wait() == 0
        again = Attached(mp, "pipes", "-c", "reader", "-i")
        again.write(b"two\n")
        watcher.read_until(b"got:two\n")
        again.stop()
        assert b"reader-eof" not in watcher.out
    finally:
        watcher.stop()

    # stdinOnce: the first session's end of stdin is the container's EOF; that session goes on
    # showing output until the container exits (here: it sleeps on, so we stop it).
    first = Attached(mp, "pipes", "-c", "once", "-i")
    try:
        first.write(b"a\nb\n")
        first.p.stdin.close()
        first.read_until(b"once:a\nonce:b\nonce-eof\n")
        assert first.p.poll() is None
    finally:
        first.stop()
    late = Attached(mp, "pipes", "-c", "once", "-i")
    late.write(b"c\n")
    time.sleep(0.5)
    late.stop()
    assert b"has no open stdin" in late.err
    assert not any("once:c" in ln for ln in log_lines(mp, "pipes", "once"))

    # Without stdin, the container's is /dev/null (it read EOF at once); -i and -t say so.
    assert [ln.split(" ", 3)[3] for ln in log_lines(mp, "pipes", "deaf")] == \
        ["/dev/null", "deaf-eof"]
    r = subprocess.run(minipod_argv("attach", "-it", "pipes", "-c", "deaf"), env=mp.env,
                       input=b"x\n", capture_output=True, timeout=20)
    assert b"error: Unable to use a TTY - container deaf did not allocate one" in r.stderr
    assert b"has no open stdin" in r.stderr and r.returncode == 0, r


RESTARTS = """
apiVersion: v1
kind: Pod
metadata: {name: again}
spec:
  containers:
  - name: one-line
    image: busybox
    stdin: true
    command: ["sh", "-c", "read l; echo got:$l; exit 3"]
"""


def supervisor_fds(mp, pod: str) -> list[str]:
    with open(os.path.join(mp.root, "pods", pod, "state.json")) as f:
        pid = json.load(f)["supervisor_pid"]
    d = f"/proc/{pid}/fd"
    # What each fd is (a pipe, a socket, the instance's N.log), not its inode or number.
    return sorted(re.sub(r"\d+\.log$", "N.log", os.readlink(os.path.join(d, n)).split("[")[0])
                  for n in os.listdir(d))


def test_attach_to_a_restarted_container(mp):
    mp.minipod("run", "-d", mp.write("again.yaml", RESTARTS))
    held = []
    for n, word in enumerate((b"first", b"second")):
        mp.wait(lambda: running(mp, "again", "one-line", n), 30, f"instance {n}")
        held.append(supervisor_fds(mp, "again"))
        a = Attached(mp, "again", "-i")
        a.write(word + b"\n")
        # The container exits: the session ends with its exit code; each instance has a
        # fresh stdin pipe behind the same socket.
        assert a.wait() == 3, a.out
        assert a.out == b"got:" + word + b"\n"
    # The supervisor holds the same kinds of fds for each instance: nothing left behind.
    assert held[0] == held[1], held
    assert mp.minipod("attach", "again", "-c", "nope", check=False).returncode == 1


# --- kubectl ---------------------------------------------------------------------------------

def _served_class():
    from kubeserve import Served

    return Served


@pytest.fixture
def served(mp):
    import kubectl_clients

    kubectl = kubectl_clients.kubectl_135()
    if kubectl is None:
        pytest.skip(kubectl_clients.why["1.35"])
    s = _served_class()(mp, kubectl)
    yield s
    s.stop()


KPOD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{kubectl.kubernetes.io/default-container: shell}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: ticker
    image: busybox
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; echo tock $i >&2; sleep 0.2; done"]
  - name: shell
    image: busybox
    stdin: true
    tty: true
    command: ["sh"]
  - name: once
    image: busybox
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "tr a-z A-Z; echo upper-done; sleep 3600"]
"""


@pytest.mark.slow
def test_kubectl_attach(served, mp):
    name = "katt-" + mp.bridge[-6:]
    served.k("apply", "-f", mp.write("katt.yaml", KPOD.format(name=name)))
    served.k("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=60s", timeout=90)

    # -it into the tty container (the annotation's default): a terminal with kubectl's size.
    t = Term([served.kubectl, "attach", "-it", name], served.env, rows=37, cols=111)
    t.read_until(b"try pressing enter")
    t.type(b"\r")
    t.read_until(b"# ")
    t.type(b"tty; stty size; exit 7\r")
    assert t.wait(40) == 0, t.out  # attach ends with the container; kubectl says 0
    assert re.search(rb"/dev/pts/0\s.*37 111", t.out, re.S), t.out
    assert b"Session ended, resume using 'kubectl attach " + name.encode() + \
        b" -c shell -i -t' command when the pod is running" in t.out
    mp.wait(lambda: running(mp, name, "shell", restarts=1), 30, "the shell's restart")

    # Output only, both streams, from a container without stdin or tty; -t there is refused
    # by kubectl itself (kubectl's message), and the attach goes on without.
    k = subprocess.Popen([served.kubectl, "attach", "-t", name, "-c", "ticker"], env=served.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        mp.wait(lambda: select.select([k.stdout], [], [], 0)[0], 20, "ticks")
        line = k.stdout.readline()
        assert re.match(rb"tick \d+\n", line), line
    finally:
        k.kill()
        _, err = k.communicate(timeout=10)
    assert b"error: Unable to use a TTY - container ticker did not allocate one" in err, err
    assert b"tock" in err
    assert running(mp, name, "ticker")  # a dropped kubectl is a detach

    # stdinOnce: kubectl's stdin ends -> the container reads EOF, the attach shows what
    # follows and ends when the container exits (here it sleeps: we stop kubectl).
    k = subprocess.Popen([served.kubectl, "attach", "-i", name, "-c", "once"], env=served.env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1)  # kubectl has attached
        k.stdin.write(b"shout\n")
        k.stdin.close()
        mp.wait(lambda: any("upper-done" in ln for ln in log_lines(mp, name, "once")), 20,
                "EOF in the container")
        assert [ln.split(" ", 3)[3] for ln in log_lines(mp, name, "once")] == \
            ["SHOUT", "upper-done"]
    finally:
        k.kill()
        k.wait(10)
        k.stdout.close()
        k.stderr.close()

    # Errors as kubectl prints them, and the server's Status for what kubectl checks itself.
    bad = served.k("attach", name, "-c", "nope", check=False)
    assert (bad.returncode, bad.stderr) == (1, "error: cannot attach to the container: "
                                               f"container nope not found in pod {name}\n")
    path = f"/api/v1/namespaces/default/pods/{name}/attach?container=ticker"
    code, body = served.raw("POST", path)
    assert (code, json.loads(body)["message"]) == \
        (400, "you must specify at least 1 of stdin, stdout, stderr")
    code, body = served.raw("POST", path + "&stdout=true")
    assert code == 400 and "needs an upgrade to WebSocket (v5.channel.k8s.io) or SPDY/3.1" \
        in json.loads(body)["message"]
    reap_orphans()


@pytest.mark.slow
def test_kubectl_run_it(served, mp):
    """`kubectl run -it --rm`: a pod with stdin, stdinOnce and tty, attached as soon as it
    runs, deleted when the shell exits."""
    name = "krun-" + mp.bridge[-6:]
    t = Term([served.kubectl, "run", "-it", "--rm", name, "--image=busybox",
              "--restart=Never", "--", "sh"], served.env, rows=30, cols=90)
    t.read_until(b"# ", 90)
    t.type(b"echo ran-$((2*3)) in $(hostname); exit 4\r")
    t.read_until(b"ran-6 in " + name.encode())
    code = t.wait(90)
    assert f'pod "{name}" deleted'.encode() in t.out, t.out
    assert code == 4, t.out  # kubectl run passes the container's exit code on
    assert name not in mp.minipod("ps").stdout
    # -i without a tty: stdin and stdinOnce; the container reads kubectl's stdin to its end.
    piped = served.k("run", "-i", "--rm", name + "-i", "--image=busybox", "--restart=Never",
                     "--", "tr", "a-z", "A-Z", input="piped\n", timeout=90)
    assert "PIPED" in piped.stdout, piped
