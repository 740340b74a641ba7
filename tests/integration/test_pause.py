"""The pause process, C and Python: version, signals, warning, and reaping as PID 1.

The C pause is built with `make` into a temporary directory (skipped without gcc/make).
Every behaviour is checked for both implementations.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import minipod
from minipod.pod import pause as pausemod

REPO = Path(__file__).resolve().parents[2]
WARNING = "Warning: pause should be the first process"
DEADLINE = 20.0  # seconds to wait for an event before declaring it will not happen

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unshare -p)")
needs_unshare = pytest.mark.skipif(
    not (shutil.which("unshare") and shutil.which("nsenter")), reason="needs util-linux unshare/nsenter"
)


@pytest.fixture(scope="module")
def c_pause(c_helpers) -> list[str]:
    return [str(c_helpers / "pause")]


@pytest.fixture(params=["c", "python"])
def impl(request) -> tuple[str, list[str]]:
    if request.param == "c":
        return "c", request.getfixturevalue("c_pause")
    return "python", [sys.executable, "-S", "-I", pausemod.FALLBACK_SCRIPT]


def _wait(predicate, what: str):
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    pytest.fail(f"gave up waiting for {what}")


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _catches(pid: int, *signums: int) -> bool:
    """True once `pid` has handlers for all `signums` (SigCgt in /proc/<pid>/status)."""
    cgt = _status(pid).get("SigCgt")
    if cgt is None:
        return False
    mask = int(cgt, 16)
    return all(mask & (1 << (s - 1)) for s in signums)


def _children(ppid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _status(int(entry)).get("PPid", "").strip() == str(ppid):
            kids.append(int(entry))
    return kids


def _start(argv: list[str]) -> subprocess.Popen:
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: _catches(p.pid, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD), "pause handlers")
    return p


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.communicate()


# -- version ------------------------------------------------------------------------------


def test_version_flag(impl):
    kind, argv = impl
    for flag in ("-v", "-V"):
        r = subprocess.run(argv + ["--other", flag], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0
        name = "pause.c" if kind == "c" else "pause.py"
        assert r.stdout == f"{name} {minipod.__version__}\n"


# -- signals and the not-PID-1 warning ------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_signal_exits_zero_and_warns_when_not_pid1(impl, signum):
    _, argv = impl
    p = _start(argv)
    try:
        assert p.poll() is None, "pause exited by itself"
        p.send_signal(signum)
        _, err = p.communicate(timeout=DEADLINE)
        assert p.returncode == 0
        assert WARNING in err  # not PID 1 here: warned, and kept running until signalled
    finally:
        _stop(p)


def test_sigchld_does_not_stop_it(impl):
    """A stray SIGCHLD (no child to reap) must not end pause."""
    _, argv = impl
    p = _start(argv)
    try:
        os.kill(p.pid, signal.SIGCHLD)
        # It is still waiting: a SIGTERM afterwards still gives a clean exit 0.
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=DEADLINE)
        assert p.returncode == 0
    finally:
        _stop(p)


# -- PID 1 of a new PID namespace -----------------------------------------------------------


def _start_ns_init(argv: list[str]) -> tuple[subprocess.Popen, int]:
    """Run argv as PID 1 of a new PID+mount namespace; return (unshare, init's host pid)."""
    p = subprocess.Popen(
        ["unshare", "--fork", "--pid", "--mount-proc", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    init = _wait(lambda: _children(p.pid), "the namespace's init")[0]
    return p, init


def _make_orphan(init: int) -> int:
    """Start `sleep` inside init's namespaces from a shell that exits at once.

    The sleep is orphaned and re-parented to the namespace's init. Returns its host pid.
    """
    r = subprocess.run(
        ["nsenter", "-t", str(init), "-p", "-m", "--", "sh", "-c", "sleep 1000 >/dev/null 2>&1 & exit 0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    orphans = _wait(lambda: _children(init), "the orphan to be re-parented to init")
    assert len(orphans) == 1, orphans
    return orphans[0]


def _state(pid: int) -> str:
    """'R', 'S', 'Z', ... or 'gone' once the process has been reaped."""
    state = _status(pid).get("State")
    return state[:1] if state else "gone"


@needs_root
@needs_unshare
@pytest.mark.root
def test_as_pid1_reaps_orphaned_zombie_and_does_not_warn(impl):
    _, argv = impl
    p, init = _start_ns_init(argv)
    orphan = None
    try:
        _wait(lambda: _catches(init, signal.SIGTERM, signal.SIGCHLD), "pause handlers")
        ns_pid = _status(init)["NSpid"].split()
        assert ns_pid[-1] == "1", f"pause is not PID 1 in its namespace: NSpid {ns_pid}"

        orphan = _make_orphan(init)
        assert _status(orphan)["PPid"].strip() == str(init)
        os.kill(orphan, signal.SIGKILL)
        # Only its parent (pause) can reap it: if pause did not, it would stay in state Z.
        _wait(lambda: _state(orphan) == "gone", f"pause to reap zombie {orphan}")

        assert p.poll() is None, "pause exited while reaping"
        os.kill(init, signal.SIGTERM)
        _, err = p.communicate(timeout=DEADLINE)
        assert p.returncode == 0  # unshare --fork exits with its child's status
        assert WARNING not in err
    finally:
        _stop(p)


@needs_root
@needs_unshare
@pytest.mark.root
def test_control_an_init_that_does_not_reap_leaves_the_zombie():
    """Shows the reaping test can fail: with `sleep` as PID 1 the zombie stays."""
    p, init = _start_ns_init(["sleep", "1000"])
    try:
        orphan = _make_orphan(init)
        os.kill(orphan, signal.SIGKILL)
        _wait(lambda: _state(orphan) == "Z", f"{orphan} to become a zombie")
        assert _status(orphan)["PPid"].strip() == str(init)
    finally:
        # Killing init kills the namespace; unshare then reaps init.
        os.kill(init, signal.SIGKILL)
        _stop(p)
    _wait(lambda: _state(orphan) == "gone", "the namespace to go away")


def test_fallback_version_matches_package():
    text = Path(pausemod.FALLBACK_SCRIPT).read_text()
    assert f'VERSION = "{minipod.__version__}"' in text


# -- minipod.pod.pause.find ------------------------------------------------------------------


def test_find_prefers_configured_binary(c_pause, monkeypatch):
    monkeypatch.delenv("MINIPOD_PAUSE", raising=False)
    found = pausemod.find(c_pause[0])
    assert found == pausemod.Pause(kind="c", argv=[c_pause[0]], path=c_pause[0])


def test_find_env_then_install_dirs_then_checkout(monkeypatch):
    monkeypatch.setenv("MINIPOD_PAUSE", "/from/env")
    assert pausemod.candidates("/from/config") == [
        "/from/config",
        "/from/env",
        os.path.join(sys.prefix, "libexec/minipod/pause"),
        "/usr/local/libexec/minipod/pause",
        "/usr/libexec/minipod/pause",
        str(REPO / "pause" / "pause"),
    ]


def test_find_falls_back_to_python(tmp_path, monkeypatch):
    not_executable = tmp_path / "pause"
    not_executable.write_text("")
    monkeypatch.setattr(pausemod, "candidates", lambda configured="": [str(tmp_path / "missing"), str(not_executable)])
    found = pausemod.find()
    assert found.kind == "python"
    assert found.argv == [sys.executable, "-S", "-I", found.path]
    assert os.path.isabs(found.path) and found.path.endswith("minipod/pod/pause_fallback.py")
    r = subprocess.run(found.argv + ["-v"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("pause.py ")
