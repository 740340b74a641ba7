"""kubectl's streams over SPDY/3.1 against `minipod serve`: port-forward (kubectl 1.35 tunnels
SPDY in a WebSocket, 1.20 upgrades to SPDY directly), and exec/attach with kubectl 1.20
(Debian 12's kubernetes-client, which speaks SPDY only)."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import select
import subprocess
import threading
import time

import pytest

from kubeserve import (PortForward, Served, ended, free_port, http_get,  # noqa: F401
                       kubectl120, kubectl135, procs, ready, served, tty_kubectl)

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.slow]

BIG = 3 * 1000 * 1000  # bytes: far past SPDY's initial 64 KiB window, which nobody updates
WEB = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello from $(hostname) > /www/index.html && yes 0123456789 | head -c {big} > /www/big && exec httpd -f -p 80 -h /www"]
    readinessProbe:
      tcpSocket: {{port: 80}}
      periodSeconds: 1
  - name: sh
    image: busybox
    command: ["sleep", "3600"]
"""


def _server_state(pid: int) -> tuple[int, int, list[int]]:
    """(threads, open fds, child processes) of the server."""
    children = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return (len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd")), children)


def _settled(served, baseline, what: str) -> None:
    """The server is back where it was: no more threads or fds, no new child. (The baseline
    may hold a connection of the kubectl that ran just before, still being closed.)"""
    pid = served.proc.pid
    deadline = time.monotonic() + 20

    def more(now) -> bool:
        return now[0] > baseline[0] or now[1] > baseline[1] or not set(now[2]) <= set(baseline[2])

    while more(_server_state(pid)):
        assert time.monotonic() < deadline, \
            f"{what}: the server went from {baseline} to {_server_state(pid)}"
        time.sleep(0.2)


def _web(served, mp, prefix: str) -> str:
    name = f"{prefix}-" + mp.bridge[-6:]
    served.k("apply", "-f", mp.write(f"{name}.yaml", WEB.format(name=name, big=BIG)))
    ready(served, name)
    return name


def _many(port: int, pod: str) -> None:
    want = f"hello from {pod}\n".encode()
    for i in range(50):
        assert http_get(port) == want, i
    results: list = []

    def one():
        try:
            results.append(http_get(port))
        except Exception as e:  # reported below
            results.append(e)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [want] * 8
    big = http_get(port, "/big")
    assert len(big) == BIG and hashlib.sha256(big).digest() == hashlib.sha256(
        (b"0123456789\n" * (BIG // 11 + 1))[:BIG]).digest()


def test_port_forward_kubectl_135(served, mp):
    """Many requests, sequential and concurrent, through the WebSocket tunnel; kubectl killed:
    nothing of it stays in the server."""
    name = _web(served, mp, "kpf")
    baseline = _server_state(served.proc.pid)
    local = free_port()
    pf = PortForward(served, served.kubectl, name, "-v=4", f"{local}:80")
    try:
        _many(local, name)
        assert pf.out.count(f"Handling connection for {local}".encode()) == 59
        during = _server_state(served.proc.pid)
        assert set(during[2]) - set(baseline[2]), "the socket helper of the pod's netns"
    finally:
        pf.kill()
    # kubectl >= 1.31 tunnels SPDY in a WebSocket, and says so at -v=4; it did not fall back
    # to the plain SPDY upgrade.
    assert b"tunneling_dialer.go:85] negotiated protocol: portforward.k8s.io" in pf.err, \
        pf.err[-2000:]
    assert b"fallback" not in pf.err.lower(), pf.err[-2000:]
    _settled(served, baseline, "after kubectl port-forward was killed")

    # A closed port: kubectl prints the server's reason; 1.35 then ends the forwarding
    # (it closes the connection on any forwarding error). The server goes on.
    pf = PortForward(served, served.kubectl, name, f"{local}:81")
    try:
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            http_get(local)
        deadline = time.monotonic() + 20
        while b"connection refused" not in pf.err.lower() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"error forwarding port 81 to pod " + name.encode() in pf.err, pf.err
        assert b"127.0.0.1:81: Connection refused" in pf.err, pf.err
    finally:
        pf.kill()
    # The pod removed under a forwarding: the server lets go of its netns, kubectl stops.
    pf = PortForward(served, served.kubectl, name, f"{local}:80")
    try:
        assert http_get(local) == f"hello from {name}\n".encode()
        mp.minipod("rm", "-f", name)
        assert pf.p.wait(20) == 1
        pf.kill()
        assert b"lost connection to pod" in pf.err, pf.err
    finally:
        pf.kill()
    _settled(served, baseline, "after the failed forwarding and the pod's removal")
    assert served.proc.poll() is None
    gone = served.k("port-forward", "pod/nope", f"{local}:80", check=False, timeout=30)
    assert gone.returncode == 1 and 'pods "nope" not found' in gone.stderr, gone.stderr


def test_port_forward_kubectl_120(mp, kubectl135, kubectl120):
    """kubectl 1.20 upgrades to SPDY/3.1 itself: the same requests; a closed port is an error
    for that connection only, the forwarding goes on."""
    served = Served(mp, kubectl135)
    try:
        name = _web(served, mp, "kpf120")
        baseline = _server_state(served.proc.pid)
        good, bad = free_port(), free_port()
        pf = PortForward(served, kubectl120, name, f"{good}:80", f"{bad}:81")
        try:
            _many(good, name)
            with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
                http_get(bad)
            deadline = time.monotonic() + 20
            while b"error forwarding port 81" not in pf.err and time.monotonic() < deadline:
                time.sleep(0.1)
            assert re.search(rb"an error occurred forwarding \d+ -> 81: error forwarding port "
                             rb"81 to pod " + name.encode(), pf.err), pf.err
            assert http_get(good) == f"hello from {name}\n".encode()  # it survived
            assert pf.p.poll() is None
        finally:
            pf.kill()
        _settled(served, baseline, "after kubectl 1.20 port-forward was killed")
    finally:
        served.stop()


def test_exec_and_attach_kubectl_120(mp, kubectl135, kubectl120):
    """kubectl 1.20 exec (SPDY, v4.channel.k8s.io): stdout and stderr apart, stdin, the exit
    code, -it with a terminal of kubectl's size; attach; a dropped exec ends its command."""
    served = Served(mp, kubectl120)
    try:
        name = "kx120-" + mp.bridge[-6:]
        served.k("apply", "-f", mp.write("p.yaml", ATTACH.format(name=name)))
        ready(served, name)
        baseline = _server_state(served.proc.pid)
        assert served.k("exec", name, "-c", "sh", "--", "hostname").stdout.strip() == name
        p = served.k("exec", name, "-c", "sh", "--", "sh", "-c", "echo out; echo err >&2; exit 3",
                     check=False)
        assert (p.returncode, p.stdout, p.stderr.splitlines()[0]) == (3, "out\n", "err"), p
        assert "command terminated with exit code 3" in p.stderr
        assert served.k("exec", "-i", name, "-c", "sh", "--", "tr", "a-z", "A-Z",
                        input="piped stdin\n" * 1000).stdout == "PIPED STDIN\n" * 1000
        rc, out = tty_kubectl(served, ["exec", "-it", name, "-c", "sh", "--", "sh"],
                              b"tty; stty size; exit 7\r", 37, 111)
        assert rc == 7, out
        assert re.search(r"/dev/pts/\d+", out) and "37 111" in out, out

        # attach: the ticker's output; a container's stdin.
        k = subprocess.Popen([kubectl120, "attach", name, "-c", "ticker"], env=served.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            mp.wait(lambda: select.select([k.stdout], [], [], 0)[0], 20, "ticks")
            assert re.match(rb"tick \d+\n", k.stdout.readline())
        finally:
            k.kill()
            k.communicate(timeout=10)
        # stdin goes in, the answer comes back; the end of kubectl's stdin ends the attach.
        k = subprocess.Popen([kubectl120, "attach", "-i", name, "-c", "reader"], env=served.env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            k.stdin.write(b"shout\n")
            k.stdin.flush()
            mp.wait(lambda: select.select([k.stdout], [], [], 0)[0], 20, "the reader's answer")
            assert k.stdout.readline() == b"SHOUT\n"
            k.stdin.close()
            assert k.wait(20) == 0
        finally:
            k.kill()
            k.wait(10)
            k.stdout.close()
            k.stderr.close()

        # A dropped connection ends the command.
        k = subprocess.Popen([kubectl120, "exec", name, "-c", "sh", "--", "sleep", "4545"],
                             env=served.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        sleeps = mp.wait(lambda: procs("sleep 4545"), 20, "the exec'd sleep")
        k.kill()
        k.wait()
        mp.wait(lambda: ended(sleeps), 10, "the exec'd command to be killed with its connection")
        _settled(served, baseline, "after the execs and attaches")
    finally:
        served.stop()


ATTACH = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: busybox
    command: ["sleep", "3600"]
  - name: ticker
    image: busybox
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]
  - name: reader
    image: busybox
    stdin: true
    command: ["sh", "-c", "while read l; do echo $l | tr a-z A-Z; done"]
"""
