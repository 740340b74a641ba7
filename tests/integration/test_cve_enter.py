"""Regression tests, named after their CVEs, of the one way into a container (minipod.pod.enter):
container PID 1, `minipod exec`, exec probes and lifecycle hooks.

CVE-2019-5736 (runc): a container process opened /proc/PID/exe of a runc process joining it
and, through it, overwrote the host's runc binary. Here the joining process is minipod's Python
until it execs; it must be non-dumpable before it joins, so a process of the pod (root, with the
default capabilities, in a pod with shareProcessNamespace) can neither open its exe nor list
its fds. The window is short (the process execs right after dropping its capabilities), so the
tests hold every execve of the joining processes for a few seconds with strace's delay
injection, while a "spy" container looks for minipod's interpreter in the pod's /proc.

CVE-2024-21626 (runc): a host fd leaked into the container's process (and was usable as its
cwd). Here every process that enters a container must hold only fds 0, 1 and 2 and a cwd inside
the container's root, even when minipod itself was started with an extra fd open.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

needs_strace = pytest.mark.skipif(not shutil.which("strace"),
                                  reason="strace not installed (apt-get install strace)")
HOLD_US = 3_000_000  # how long strace holds each execve (microseconds)

# The spy reports every process of the pod that runs minipod's interpreter (its cmdline names
# python, or is the supervisor's title, which its forks inherit: written pyth[o]n and
# minipod-supervis[o]r so that the spy's own cmdline does not match), once per PID: can it
# open its exe for reading, for writing, can it see where its fds lead? A process that exec'd
# during the checks is reported LATE, not ENTRANT: its fds may have been read after the exec.
SPY = r"""
seen=" "
echo spy ready
while :; do
  for p in /proc/[0-9]*; do
    n=${p#/proc/}
    case "$seen" in *" $n "*) continue;; esac
    cmd=$(tr '\0' ' ' < $p/cmdline 2>/dev/null) || continue
    case "$cmd" in *pyth[o]n*|minipod-supervis[o]r*) ;; *) continue;; esac
    seen="$seen$n "
    if true < $p/exe 2>/dev/null; then r=opened; else r=denied; fi
    if true >> $p/exe 2>/dev/null; then w=opened; else w=denied; fi
    if readlink $p/fd/0 > /dev/null 2>&1; then f=read; else f=denied; fi
    # Only what was seen while it still ran the interpreter counts: if it has exec'd since
    # (the command's own program is dumpable again), the checks may straddle the exec.
    cmd=$(tr '\0' ' ' < $p/cmdline 2>/dev/null) || continue
    case "$cmd" in *pyth[o]n*|minipod-supervis[o]r*) ;; *) echo "LATE $n"; continue;; esac
    echo "ENTRANT $n read=$r write=$w fd=$f"
  done
  usleep 20000
done
"""


def spy_pod(name: str, victim_extra: str = "") -> str:
    spy = "\n".join("      " + line for line in SPY.strip().splitlines())
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  shareProcessNamespace: true
  containers:
  - name: spy
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
{spy}
  - name: victim
    image: busybox
    command: ["sleep", "3600"]
{victim_extra}"""


def entrants(mp, pod: str) -> list[str]:
    out = mp.minipod("logs", pod, "-c", "spy").stdout
    return [line for line in out.splitlines() if line.startswith("ENTRANT ")]


def ctr(mp, pod: str, name: str) -> dict:
    return next(c for c in mp.inspect(pod)["containers"] if c["name"] == name)


class HeldExecs:
    """strace attached to `pid` and everything it forks from now on: each execve waits HOLD_US
    before it happens, so a joining process stays minipod's Python for that long."""

    def __init__(self, pid: int):
        self.p = subprocess.Popen(
            ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=execve",
             "-e", f"inject=execve:delay_enter={HOLD_US}", "-p", str(pid)],
            stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # attached (strace has no "attached" message with -qq)
        assert self.p.poll() is None, self.p.stderr.read()

    def close(self) -> None:
        self.p.send_signal(signal.SIGINT)  # detaches; the tracees go on
        self.p.wait(timeout=30)


def assert_protected(lines: list[str], at_least: int) -> None:
    assert len(lines) >= at_least, f"the spy saw {len(lines)} joining processes: {lines}"
    for line in lines:
        assert "read=denied" in line and "write=denied" in line and "fd=denied" in line, \
            f"a container process reached a joining minipod process: {line}"


# --- CVE-2019-5736 -------------------------------------------------------------------------------

@needs_strace
def test_cve_2019_5736_exec_is_not_dumpable_while_it_joins(mp):
    mp.minipod("run", "-d", mp.write("pod.yaml", spy_pod("spyx")))
    mp.wait(lambda: "spy ready" in mp.minipod("logs", "spyx", "-c", "spy").stdout, what="spy")
    before = entrants(mp, "spyx")  # (the victim's PID 1 may have been seen as it started)
    p = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=execve",
                        "-e", f"inject=execve:delay_enter={HOLD_US}",
                        sys.executable, "-m", "minipod", "exec", "spyx", "-c", "victim", "--",
                        "true"], env=mp.env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert_protected(mp.wait(lambda: entrants(mp, "spyx")[len(before):], what="the spy's report"),
                     1)


@needs_strace
def test_cve_2019_5736_pid1_hooks_and_probes_are_not_dumpable_while_they_join(mp):
    victim = """    lifecycle:
      postStart: {exec: {command: ["true"]}}
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
"""
    mp.minipod("run", "-d", mp.write("pod.yaml", spy_pod("spyp", victim)))
    mp.wait(lambda: "spy ready" in mp.minipod("logs", "spyp", "-c", "spy").stdout, what="spy")
    before = entrants(mp, "spyp")
    supervisor = mp.inspect("spyp")["supervisor"]["pid"]
    held = HeldExecs(supervisor)
    try:
        # A restart: a new PID 1 (which execs "sleep"), then its postStart hook, then a probe,
        # each a child of the supervisor, each held in execve.
        os.kill(ctr(mp, "spyp", "victim")["pid"], signal.SIGKILL)
        seen = mp.wait(lambda: (e := entrants(mp, "spyp")[len(before):]) and len(e) >= 3 and e,
                       timeout=60, what="three joining processes (PID 1, hook, probe)")
    finally:
        held.close()
    assert_protected(seen, 3)


def test_cve_2019_5736_nothing_of_the_host_is_mapped_or_open_after_exec(mp):
    mp.minipod("run", "-d", mp.write("pod.yaml", spy_pod("spym")))
    pid1 = mp.wait(lambda: ctr(mp, "spym", "victim")["pid"], what="victim")
    host = [os.path.realpath(sys.executable), sys.prefix, "libc.so", "python"]

    def check(pid: int, where: str) -> None:
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
        files = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        for h in host:
            assert h not in maps, f"{where}: {h} is mapped:\n{maps}"
            assert not any(h in x for x in files), f"{where}: {h} is open: {files}"

    check(pid1, "container PID 1")
    # From inside an exec'd process: its exe is the image's, and it cannot write to it.
    p = mp.minipod("exec", "spym", "-c", "victim", "--", "sh", "-c",
                   "readlink /proc/self/exe; cat /proc/$$/maps; ls -l /proc/$$/fd/; "
                   "if echo x >> /proc/self/exe; then echo WROTE; fi", check=False)
    assert "/bin/busybox" in p.stdout.splitlines()[0], p.stdout
    for h in host:
        assert h not in p.stdout, f"exec: {h} is visible from inside:\n{p.stdout}"
    assert "WROTE" not in p.stdout, "the container wrote to its own running executable"
    # And a container's process cannot write to a joining process's exe (a sibling's exec).
    assert_protected(entrants(mp, "spym"), 0)


# --- CVE-2024-21626 ------------------------------------------------------------------------------

# What a process reports about itself from inside the container: its cwd and its open fds (as
# readlink, its child, inherits them: fds without close-on-exec). No $$: a container's command
# is expanded as the kubelet does, where $$ means $.
REPORT = ("echo CWD $(readlink /proc/self/cwd); for n in $(seq 0 20); do "
          "t=$(readlink /proc/self/fd/$n) && echo FD $n $t; done; true")


def leaky_fd() -> int:
    """A host directory fd minipod inherits (as a careless caller's would be): it must not reach
    a container."""
    fd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(fd, True)
    assert fd <= 20, "REPORT looks at fds 0..20"
    return fd


def parse_report(text: str, marker: str = "") -> tuple[str, dict[int, str]]:
    cwd, fds = "", {}
    for line in text.splitlines():
        line = line.removeprefix(marker)
        if line.startswith("CWD "):
            cwd = line[4:].strip()
        elif line.startswith("FD "):
            n, _, target = line[3:].partition(" ")
            fds[int(n)] = target
    return cwd, fds


def assert_clean(cwd: str, fds: dict[int, str], want_cwd: str, where: str) -> None:
    assert cwd == want_cwd, f"{where}: cwd {cwd!r}, want {want_cwd!r}"
    assert sorted(fds) == [0, 1, 2], f"{where}: leaked fds {fds}"


ENTRY_POD = """
apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  terminationGracePeriodSeconds: 3
  volumes: [{name: out, emptyDir: {}}]
  containers:
  - name: app
    image: busybox
    workingDir: /work/dir
    command: ["sh", "-c", "{ REPORT; } > /out/pid1; exec sleep 3600"]
    volumeMounts: [{name: out, mountPath: /out}]
    lifecycle:
      postStart: {exec: {command: ["sh", "-c", "{ REPORT; } > /out/postStart"]}}
      preStop: {exec: {command: ["sh", "-c", "{ REPORT; } > /out/preStop"]}}
    readinessProbe:
      exec: {command: ["sh", "-c", "{ REPORT; } > /out/probe"]}
      periodSeconds: 1
"""


@pytest.fixture
def entry_pod(mp):
    """A pod started by a minipod holding a leaky fd, whose container reports what each
    process that enters it holds: PID 1, postStart, a probe (preStop: on stop)."""
    fd = leaky_fd()
    try:
        text = ENTRY_POD.replace("NAME", "entry").replace("REPORT", REPORT.replace('"', '\\"'))
        mp.minipod("run", "-d", mp.write("pod.yaml", text), pass_fds=(fd,))
    finally:
        os.close(fd)
    data = os.path.join(mp.inspect("entry")["dirs"]["data"], "volumes", "out")

    def report(name: str) -> tuple[str, dict[int, str]]:
        path = os.path.join(data, name)
        mp.wait(lambda: os.path.exists(path) and open(path).read().endswith("\n"),
                what=f"the report of {name}")
        time.sleep(0.2)  # finished writing
        with open(path) as f:
            return parse_report(f.read())
    return report


def test_cve_2024_21626_container_pid1_has_no_host_fd_or_cwd(entry_pod):
    assert_clean(*entry_pod("pid1"), "/work/dir", "container PID 1")


def test_cve_2024_21626_post_start_hook_has_no_host_fd_or_cwd(entry_pod):
    assert_clean(*entry_pod("postStart"), "/work/dir", "postStart hook")


def test_cve_2024_21626_exec_probe_has_no_host_fd_or_cwd(entry_pod):
    assert_clean(*entry_pod("probe"), "/work/dir", "readiness probe")


def test_cve_2024_21626_pre_stop_hook_has_no_host_fd_or_cwd(mp, entry_pod):
    entry_pod("pid1")
    mp.minipod("stop", "entry")
    assert_clean(*entry_pod("preStop"), "/work/dir", "preStop hook")


@pytest.mark.parametrize("tty", [False, True], ids=["exec", "exec -t"])
def test_cve_2024_21626_exec_has_no_host_fd_or_cwd(mp, tty):
    mp.minipod("run", "-d", mp.write("pod.yaml", ENTRY_POD.replace("NAME", "ex").replace(
        "REPORT", "true")))
    mp.wait(lambda: ctr(mp, "ex", "app")["pid"], what="app")
    fd = leaky_fd()
    try:
        if tty:
            # exec -t needs a terminal on our side: `script` gives minipod one.
            if not shutil.which("script"):
                pytest.skip("script (util-linux) not installed")
            cmd = " ".join([sys.executable, "-m", "minipod", "exec", "-t", "ex", "--",
                            "sh", "-c", f"'{REPORT}'"])
            # A stdin that stays open: at its EOF `script` types an EOF character on the
            # terminal, whose echo would land in the output.
            held_r, held_w = os.pipe()
            try:
                p = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=mp.env,
                                   capture_output=True, text=True, timeout=60,
                                   pass_fds=(fd,), stdin=held_r)
            finally:
                os.close(held_r)
                os.close(held_w)
        else:
            p = subprocess.run([sys.executable, "-m", "minipod", "exec", "ex", "--", "sh", "-c",
                                REPORT], env=mp.env, capture_output=True, text=True,
                               timeout=60, pass_fds=(fd,))
    finally:
        os.close(fd)
    assert p.returncode == 0, p.stdout + p.stderr
    cwd, fds = parse_report(p.stdout.replace("\r", ""))
    assert_clean(cwd, fds, "/work/dir", "exec -t" if tty else "exec")
    if tty:
        assert fds[0].startswith("/dev/pts/"), f"exec -t: stdin is not the container's pty: {fds}"
