"""The C janitor (pause/janitor.c) on its own: the protocol with its supervisor, signals, and
the hand-over to `python -m minipod.kubelet.janitor` when the supervisor dies unfinished.

A stand-in supervisor (a few lines of Python) plays each case. The janitor execs the clean-up
with the supervisor command's argv[0], so argv[0] here is a small script that records a
clean-up call and otherwise runs Python. The whole pod path (a real pod, its supervisor
SIGKILLed, nothing left behind) is tested in test_pod.py, for both janitors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from minipod.kubelet import janitor


@pytest.fixture
def run(c_helpers, tmp_path):
    """run(code) -> (exit code, the clean-up call or ""): the janitor over `python -c code`."""
    log = tmp_path / "cleanup"
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2 $3" = "-P -m minipod.kubelet.janitor" ]; then\n'
        f'    printf "%s|%s" "$4" "$5" > {log}; exit 1\n'
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)

    def start(code: str) -> subprocess.Popen:
        # The supervisor finds its pipe as the last argument: --janitor-fd N.
        prelude = "import os, signal, sys, time; fd = int(sys.argv[-1]); "
        return subprocess.Popen([str(c_helpers / "janitor"), "--", str(python), "-c",
                                 prelude + code], stdout=subprocess.PIPE, text=True)

    def finish(p: subprocess.Popen) -> tuple[int, str]:
        code = p.wait(timeout=30)
        return code, log.read_text() if log.exists() else ""

    return start, finish


def test_no_pod_handed_over_means_nothing_to_clean(run):
    start, finish = run
    assert finish(start("sys.exit(0)")) == (0, "")
    assert finish(start("os.kill(os.getpid(), 9)")) == (0, "")  # died before it had a pod


def test_a_finished_supervisor_passes_its_exit_code_on(run):
    start, finish = run
    assert finish(start("os.write(fd, b'/run/pod\\n'); os.write(fd, b'done\\n'); sys.exit(3)")) \
        == (3, "")


@pytest.mark.parametrize("code, died", [
    ("os.kill(os.getpid(), 9)", "exit -9"),
    ("sys.exit(0)", "exit 0"),  # no "done": it never finished the pod, whatever its code
])
def test_a_supervisor_that_dies_unfinished_gets_the_pod_cleaned(run, code, died):
    start, finish = run
    p = start("os.write(fd, b'/run/minipod/pods/web\\n'); " + code)
    assert finish(p) == (1, f"/run/minipod/pods/web|the supervisor died unexpectedly ({died})")


def test_sigterm_is_passed_on_and_sigint_is_left_to_the_supervisor(run):
    start, finish = run
    p = start("signal.signal(signal.SIGTERM, lambda *_: (os.write(fd, b'/p\\ndone\\n'), "
              "os._exit(7))); signal.signal(signal.SIGINT, signal.SIG_IGN); "
              "print('ready', flush=True); time.sleep(60)")
    assert p.stdout.readline() == "ready\n"
    os.kill(p.pid, signal.SIGINT)  # Ctrl-C: the janitor ignores it (the supervisor decides)
    os.kill(p.pid, signal.SIGTERM)  # `minipod run` forwarding a SIGTERM
    assert finish(p) == (7, "")


def test_a_sigterm_right_at_the_start_is_never_lost(run):
    # Sent while the janitor may still be starting the supervisor: either the janitor had not
    # set its handler yet (it dies of it, before any fork) or the supervisor gets it.
    start, finish = run
    for _ in range(20):
        p = start("time.sleep(60)")
        os.kill(p.pid, signal.SIGTERM)
        assert finish(p)[0] in (0, -signal.SIGTERM)


def test_usage_error(c_helpers):
    r = subprocess.run([str(c_helpers / "janitor")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("usage: janitor --")


def test_find(c_helpers, tmp_path, monkeypatch):
    binary = str(c_helpers / "janitor")
    assert janitor.find(binary) == binary
    assert janitor.find("python") is None  # asks for the Python janitor
    monkeypatch.setattr("minipod.pod.pause.installed", lambda name: [str(tmp_path / name)])
    assert janitor.find(str(tmp_path / "missing")) is None  # nothing built: the Python one
