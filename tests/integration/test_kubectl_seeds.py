"""The seeds' kubectl lessons as a student types them, against `minipod serve`: pods01-03 of
seed 002 (lab 11's copies, which only swap nginx and debian for busybox), with the real
kubectl 1.35 and Debian's 1.20. Each command gives what it gives against a cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import pytest
import yaml

from conftest import tied_popen
from kubeserve import (PortForward, Served, free_port, http_get, kubectl120,  # noqa: F401
                       kubectl135, ready, tty_kubectl)

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.slow]
LAB = os.path.join(os.path.dirname(__file__), "..", "..", "labs", "11-kubectl-basics")


def _seed(mp, file: str, name: str) -> str:
    """The lab's manifest, under a name of this test's own (other pods may run here)."""
    with open(os.path.join(LAB, file)) as f:
        doc = yaml.safe_load(f)
    doc["metadata"]["name"] = name
    return mp.write(file, yaml.safe_dump(doc))


@pytest.fixture(params=["1.35", "1.20"])
def kube(request, mp):
    binary = request.getfixturevalue("kubectl135" if request.param == "1.35" else "kubectl120")
    s = Served(mp, binary)
    yield s
    s.stop()


def test_pods01_web_server(kube, mp):
    """apply, get (-o wide, -o yaml), describe, exec -it, port-forward, logs -f, delete -f."""
    name = "webserver-" + mp.bridge[-6:]
    path = _seed(mp, "pods01.yaml", name)
    assert kube.k("apply", "-f", path).stdout.strip() == f"pod/{name} created"
    ready(kube, name)

    row = kube.k("get", "pods").stdout.splitlines()[1].split()
    assert row[:4] == [name, "1/1", "Running", "0"]
    ip = mp.inspect(name)["network"]["ip"]
    assert kube.k("get", "pods", "-o", "wide").stdout.splitlines()[1].split()[5] == ip
    doc = yaml.safe_load(kube.k("get", "pod", name, "-o", "yaml").stdout)
    assert doc["status"]["podIP"] == ip and doc["spec"]["containers"][0]["ports"][0] == \
        {"containerPort": 80, "protocol": "TCP"}
    desc = kube.k("describe", "pod", name).stdout
    assert re.search(rf"^IP:\s+{re.escape(ip)}$", desc, re.M), desc
    assert "Started container webserver" in desc, desc

    # exec -it ... -- sh: an interactive shell in the container, its exit code kubectl's.
    rc, out = tty_kubectl(kube, ["exec", "-it", name, "--", "sh"],
                          b"hostname; ps | grep -c httpd; exit 4\n", 30, 100)
    assert rc == 4 and name in out, out

    # port-forward, then requests to the local port; each is in the container's log.
    local = free_port()
    pf = PortForward(kube, kube.kubectl, name, f"{local}:80")
    try:
        # logs -f in the background, its output read by a thread: a blocking read in the
        # test would hang it if the line never came.
        follow = tied_popen([kube.kubectl, "logs", "-f", name], env=kube.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: [lines.append(ln) for ln in follow.stdout],
                                  daemon=True)
        reader.start()
        try:
            for _ in range(20):
                assert http_get(local, "/") == f"hello from {name}\n".encode()
            mp.wait(lambda: any("url:/\n" in ln for ln in lines), 30, "logs -f to follow")
            assert http_get(local, "/index.html") == f"hello from {name}\n".encode()
            mp.wait(lambda: any("url:/index.html" in ln for ln in lines), 30,
                    "logs -f to print a request made after it started")
        finally:
            follow.kill()  # (kubectl 1.20 did not always stop at once on SIGINT)
            follow.wait(10)
            reader.join(10)
    finally:
        pf.kill()
    assert kube.k("logs", name).stdout.count("response:200") >= 21

    t0 = time.monotonic()
    out = kube.k("delete", "-f", path, timeout=90).stdout.strip()
    assert out.startswith(f'pod "{name}" deleted'), out
    assert time.monotonic() - t0 < 30  # the grace period is 3 s
    assert name not in mp.minipod("ps").stdout


def test_pods02_and_pods03_two_containers(kube, mp):
    """-c picks a container for exec and logs; --previous shows the run before a restart; two
    containers share an emptyDir; delete of both pods at once."""
    web, mc1 = "webserver-" + mp.bridge[-6:], "mc1-" + mp.bridge[-6:]
    kube.k("apply", "-f", _seed(mp, "pods02.yaml", web))
    kube.k("apply", "-f", _seed(mp, "pods03.yaml", mc1))
    ready(kube, web)
    ready(kube, mc1)
    assert kube.k("get", "pod", web).stdout.splitlines()[1].split()[1] == "2/2"

    assert kube.k("exec", web, "-c", "webwatcher", "--", "hostname").stdout.strip() == web
    first = kube.k("logs", web, "-c", "webwatcher").stdout.splitlines()[0]
    assert re.fullmatch(r"watcher \S+ started", first), first
    watcher = next(c for c in mp.inspect(web)["containers"] if c["name"] == "webwatcher")
    os.kill(watcher["pid"], signal.SIGKILL)
    mp.wait(lambda: kube.k("get", "pod", web, "-o",
                           "jsonpath={.status.containerStatuses[1].restartCount}").stdout == "1"
            and kube.k("logs", web, "-c", "webwatcher", check=False).stdout.strip(),
            60, "the watcher's restart")
    assert kube.k("logs", web, "-c", "webwatcher", "--previous").stdout.splitlines()[0] == first
    again = kube.k("logs", web, "-c", "webwatcher").stdout.splitlines()[0]
    assert again != first and again.startswith("watcher ")

    # pods03: 2nd appends a date to the file 1st serves, through the shared emptyDir.
    ip = mp.inspect(mc1)["network"]["ip"]
    mp.wait(lambda: kube.k("exec", mc1, "-c", "1st", "--", "cat",
                           "/usr/share/nginx/html/index.html").stdout.count("\n") >= 2,
            30, "two dates in index.html")
    served = kube.k("exec", mc1, "-c", "2nd", "--", "cat", "/html/index.html").stdout
    assert served.splitlines()[0] in http_get_ip(ip)

    out = kube.k("delete", "pod", web, mc1, timeout=90).stdout
    assert f'pod "{web}" deleted' in out and f'pod "{mc1}" deleted' in out
    ps = mp.minipod("ps").stdout
    assert web not in ps and mc1 not in ps


def http_get_ip(ip: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{ip}/", timeout=10) as r:
        return r.read().decode()
