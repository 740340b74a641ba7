"""Shared test fixtures.

Integration tests run the real `minipod` CLI as root against an isolated configuration: their
own runtime root, data root, image store, bridge, subnet and cgroup parent, all named with a
random suffix, so they never meet a user's pods or another session's tests.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

DISK = b"minipod test disk\n"  # the first bytes of the `disk` fixture's loop device
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUFFIX = "%05x" % random.randrange(1 << 20)


# The tests' own children, by PID, while their Popen objects live: those objects wait for them.
_POPENS: "weakref.WeakValueDictionary[int, subprocess.Popen]" = weakref.WeakValueDictionary()
_popen_init = subprocess.Popen.__init__


def _tracked_init(self, *args, **kw):
    _popen_init(self, *args, **kw)
    _POPENS[self.pid] = self


subprocess.Popen.__init__ = _tracked_init


def reap_orphans() -> None:
    """Detached supervisors are reparented to us (we are a child subreaper): reap them.

    Only those, not a test's own child: waitpid(-1) would take the exit status of a
    `port-forward` the test started (and will wait for), and Popen, finding nothing to reap,
    reports 0 -- whatever the command's exit code was."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" or int(fields[1]) != me:
            continue
        p = _POPENS.get(pid)
        if p is not None and p.returncode is None:
            continue  # its Popen reaps it
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def tied_popen(argv: list[str], **kw) -> subprocess.Popen:
    """subprocess.Popen for a long-lived helper of a test (`minipod serve`, a kubectl that
    streams): it gets SIGTERM when pytest dies, so a killed test run leaves none behind, as its
    teardown would not run. (The prctl is bound before the fork: preexec_fn runs between fork
    and exec, where a threaded parent's child must not import or allocate much.)"""
    from minipod.kernel import _libc

    prctl, option, parent = _libc.prctl, _libc.PR_SET_PDEATHSIG, os.getpid()

    def tie() -> None:
        prctl(option, signal.SIGTERM)
        if os.getppid() != parent:  # pytest died before the prctl took hold
            os._exit(1)

    return subprocess.Popen(argv, preexec_fn=tie, **kw)


@pytest.fixture(scope="session", autouse=True)
def _subreaper(tmp_path_factory):
    if os.geteuid() == 0:
        from minipod.kernel import _libc

        _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
    yield
    stop_agents(str(tmp_path_factory.getbasetemp()))
    reap_orphans()


def agents(under: str) -> dict[int, str]:
    """{pid: root} of the node agents (minipod/agent/) whose root is below `under`: also
    one still warming up, and the agent's forks that serve a command."""
    found = {}
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                root = agent_root(f.read())
        except OSError:
            continue
        if root and root.startswith(under.rstrip("/") + "/"):
            found[int(d)] = root
    return found


def agent_root(cmdline: bytes) -> str | None:
    """The root of the agent whose /proc/PID/cmdline this is, else None."""
    words = cmdline.replace(b"\0", b" ").split()
    if words[:2] == [b"minipod-agent", b"-root"] and len(words) > 2:
        return words[2].decode()  # its title (server.py)
    if b"minipod.agent.server" in words[:3] and b"--root" in words[:-1]:
        return words[words.index(b"--root") + 1].decode()  # before it set its title
    return None


def stop_agents(under: str) -> None:
    """No test leaves an agent running, even one whose test failed before its teardown."""
    import signal

    left = agents(under)
    for pid in left:
        os.kill(pid, signal.SIGTERM)
    Env.wait(lambda: reap_orphans() or not any(os.path.exists(f"/proc/{p}") for p in left),
             what="the agents to stop")


def free_subnet(prefix: int = 24) -> str:
    """A random 10.200-249.x.0/<prefix> that overlaps no route on this host."""
    out = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"],
                         capture_output=True, text=True).stdout
    used = []
    for line in out.splitlines():
        words = line.split()
        dst = words[1] if words[0] in ("local", "broadcast", "unreachable") else words[0]
        if dst != "default":
            try:
                used.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                pass
    for _ in range(200):
        net = ipaddress.ip_network(
            f"10.{random.randrange(200, 250)}.{random.randrange(256)}.0/{prefix}", strict=False)
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise RuntimeError("no free test subnet")


class Env:
    """One isolated minipod installation for tests."""

    def __init__(self, base: str, images: str, tag: str, subnet: str | None = None):
        self.base = base
        self.root = os.path.join(base, "run")
        self.data = os.path.join(base, "data")
        self.images = images
        self.bridge = f"mpt{tag}"[:15]
        self.subnet = subnet or free_subnet()
        self.cgroup_parent = f"mpt{tag}.slice"
        self.config = os.path.join(base, "config.toml")
        self.registries = ""
        os.makedirs(base, exist_ok=True)
        self.write_config()
        self.env = dict(os.environ, MINIPOD_CONFIG=self.config)

    def write_config(self, **extra) -> None:
        values = {"root": self.root, "data_root": self.data, "image_root": self.images,
                  "bridge": self.bridge, "subnet": self.subnet,
                  "cgroup_parent": self.cgroup_parent, "backoff_initial": 1.0,
                  "backoff_max": 4.0, **extra}
        if self.registries:
            values.setdefault("registries", self.registries)
        with open(self.config, "w") as f:
            for k, v in values.items():
                f.write(f"{k} = {json.dumps(v)}\n")

    def minipod(self, *args: str, check: bool = True, timeout: float = 120,
                **kw) -> subprocess.CompletedProcess:
        kw.setdefault("env", self.env)
        p = subprocess.run([sys.executable, "-m", "minipod", *args],
                           capture_output=True, text=True, timeout=timeout, **kw)
        reap_orphans()
        if check and p.returncode != 0:
            raise AssertionError(f"minipod {' '.join(args)} exited {p.returncode}:\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p

    def stop_agent(self) -> None:
        """Stop this Env's node agent (minipod/agent/), which its commands started on
        demand: it is one of this Env's processes, and must not outlive the test."""
        if os.path.exists(os.path.join(self.root, "agent.lock")):
            self.minipod("daemon", "stop", check=False)

    def inspect(self, name: str) -> dict:
        return json.loads(self.minipod("inspect", name).stdout)

    def pod(self, name: str) -> dict:
        return json.loads(self.minipod("get", "pod", name, "-o", "json").stdout)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.base, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    @staticmethod
    def wait(cond, timeout: float = 30, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = cond()
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def host_state(self) -> dict:
        """Everything a leak would change on the host, restricted to names this Env owns."""
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        ipt = ""
        for table in ("nat", "filter"):
            ipt += subprocess.run(["iptables-save", "-t", table], capture_output=True,
                                  text=True).stdout
        cgroups = []
        # v1 (and the hybrid's unified tree): /sys/fs/cgroup/<controller>/<parent>; v2, with
        # the hierarchy mounted at /sys/fs/cgroup itself: /sys/fs/cgroup/<parent>.
        dirs = [os.path.join("/sys/fs/cgroup", self.cgroup_parent)]
        dirs += [os.path.join("/sys/fs/cgroup", c, self.cgroup_parent)
                 for c in sorted(os.listdir("/sys/fs/cgroup"))]
        for d in dirs:
            if os.path.isdir(d):
                cgroups += [p for p, _, _ in os.walk(d)]
        procs = _processes_of(self.base)
        leases = os.path.join(self.root, "networks", self.bridge)
        with open("/proc/self/mountinfo") as f:
            mounts = [ln for ln in f if self.base in ln]
        data = os.path.join(self.data, "pods")
        from minipod.net import nat

        # ip_forward itself is the host's: other sessions' pods on this machine change it at
        # any time. Ours is the claim our network holds on it (nat.py's holder file); that
        # the last claim puts the value back is tested in the network's own tests.
        claims = os.listdir(nat.FORWARD_STATE) if os.path.isdir(nat.FORWARD_STATE) else []
        return {
            # Our bridge and every veth enslaved to it ("master <bridge>"); other sessions'
            # pods on this machine have veths too, on bridges of their own.
            "links": sorted(ln.split(": ")[1].split("@")[0] for ln in links.splitlines()
                            if self.bridge in ln),
            "mounts": mounts,
            "iptables": [ln for ln in ipt.splitlines() if self.bridge in ln],
            "cgroups": cgroups,
            "processes": procs,
            "leases": sorted(f for f in os.listdir(leases) if f[0].isdigit())
            if os.path.isdir(leases) else [],
            "ip_forward_claim": f"holder.{self.bridge}" in claims,
            # The pods' names for `ip netns` (<cgroup prefix>-<pod>-<uid>): only ours.
            "netns": sorted(f for f in os.listdir("/run/netns")
                            if f.startswith(self.cgroup_parent.removesuffix(".slice") + "-"))
            if os.path.isdir("/run/netns") else [],
            # A pod's writable layers, volumes and logs: only `rm` removes them.
            "data": sorted(os.listdir(data)) if os.path.isdir(data) else [],
        }


def _described(pid: int) -> str:
    """PID's state, parent and argv, for a leak's message."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        return f"state {fields[0]}, parent {fields[1]}: {argv}"
    except OSError:
        return "gone"


def _processes_of(base: str) -> list[str]:
    """Live processes (not zombies) that name `base` in their argv or their environment: a
    janitor's `-root BASE/run`, and a `minipod serve` or kubectl that finds its config or
    kubeconfig through MINIPOD_CONFIG/KUBECONFIG only."""
    needle, out = base.encode(), []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read()
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
        except (OSError, IndexError):
            continue  # gone meanwhile, or a kernel thread
        if agent_root(argv) or argv.startswith(b"minipod-zygote "):
            # The node agent (and its forks serving a command: see agents()); its zygote,
            # which dies with it (minipod/agent/zygote.py).
            continue
        if needle in argv or needle in env:
            words = argv.replace(b"\0", b" ").decode(errors="replace").strip()
            out.append(f"{d} {words}")
    return sorted(out)


@pytest.fixture(scope="session")
def c_helpers(tmp_path_factory) -> Path:
    """pause/'s C programs (pause, janitor) built with its Makefile into a fresh directory, so
    the tests check the source in this tree, not whatever setup installed earlier."""
    if not (shutil.which("gcc") or shutil.which("cc")) or not shutil.which("make"):
        pytest.skip("gcc/make not installed (apt-get install gcc make libc6-dev)")
    out = tmp_path_factory.mktemp("pause-build")
    r = subprocess.run(["make", "-C", os.path.join(REPO, "pause"), f"BUILD_DIR={out}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"make failed:\n{r.stdout}\n{r.stderr}"
    for name in ("pause", "janitor"):
        assert os.access(out / name, os.X_OK), f"make built no {name}"
    return out


@pytest.fixture(scope="session")
def image_store(tmp_path_factory):
    """A busybox image provisioned once per session from the busybox-static package."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed (scripts/setup.sh installs it)")
    from minipod.images import busybox
    from minipod.images.store import ImageStore

    root = str(tmp_path_factory.mktemp("images"))
    busybox.provision(ImageStore(root))
    return root


@pytest.fixture(scope="session")
def lab_registry(tmp_path_factory):
    """Debian's docker-registry on 127.0.0.1 with the lab images under their docker.io names,
    so `image: busybox` (pull policy Always) pulls locally, never from Docker Hub; None when
    docker-registry is not installed (pulls then fall back to the local store, with a
    warning)."""
    sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
    from registry import distribution

    if os.geteuid() != 0 or not os.access(distribution.BINARY, os.X_OK):
        yield None
        return
    reg = distribution.start_lab(str(tmp_path_factory.mktemp("registry")))
    yield reg
    reg.remove()


@pytest.fixture
def mp(tmp_path, image_store, lab_registry):
    """A fresh isolated minipod installation; fails the test if anything leaked."""
    env = Env(str(tmp_path / "mp"), image_store, tag=SUFFIX + "%02x" % random.randrange(256))
    if lab_registry is not None:
        from registry import distribution

        env.registries = distribution.mirror_config(os.path.join(env.base, "registries.toml"),
                                                    lab_registry.url)
        env.write_config()
    before = env.host_state()
    before["agents"] = {}
    yield env
    pods = os.path.join(env.root, "pods")
    stuck = {}  # name: what rm -f said
    for name in sorted(os.listdir(pods)) if os.path.isdir(pods) else []:
        r = env.minipod("rm", "-f", name, check=False)
        if r.returncode != 0:
            stuck[name] = f"exit {r.returncode}: {r.stdout}{r.stderr}".strip()
    env.stop_agent()
    after = env.host_state()
    # The agent is no pod's, but it must not outlive its test; a worker that has just
    # answered may still be exiting.
    deadline = time.monotonic() + 10
    while agents(env.base) and time.monotonic() < deadline:
        time.sleep(0.05)
    after["agents"] = {pid: _described(pid) for pid in agents(env.base)}
    if stuck:  # don't leave a broken pod on a shared machine: its janitor can still clean up
        _kill_supervisors(pods, stuck)
    assert not stuck, f"minipod rm -f failed: {stuck}"
    assert after == before, "the host changed: something leaked"


def _kill_supervisors(pods: str, names: list[str]) -> None:
    for name in names:
        with open(os.path.join(pods, name, "state.json")) as f:
            st = json.load(f)
        try:
            os.kill(st["supervisor_pid"], 9)
        except ProcessLookupError:
            continue
        # The janitor exits once it has torn the pod down; we (a subreaper) reap it.
        Env.wait(lambda: reap_orphans() or not os.path.exists(f"/proc/{st['janitor_pid']}"),
                 what="the janitor's clean-up")


@pytest.fixture
def disk(tmp_path):
    """(node, major, minor): a block node for a loop device over a 1 MiB file of our own."""
    if shutil.which("losetup") is None:
        pytest.skip("no losetup")
    backing = tmp_path / "disk.img"
    backing.write_bytes(DISK + bytes((1 << 20) - len(DISK)))
    made = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"losetup: {made.stderr.strip()}")
    loop = made.stdout.strip()
    try:
        rdev = os.stat(loop).st_rdev
        node = tmp_path / "disk-node"
        os.mknod(node, 0o600 | stat.S_IFBLK, rdev)
        yield str(node), os.major(rdev), os.minor(rdev)
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)
    assert subprocess.run(["losetup", "--associated", str(backing)], capture_output=True,
                          text=True).stdout == "", "loop device left behind"
