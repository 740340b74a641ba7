"""Side-by-side pod benchmark: minipod vs podman (+ kube play) vs a bare shell floor.

    python bench/pods.py --work DIR --tag HEX [-n 20] [--no-podman REASON] [--no-floor] ...
    python bench/pods.py --work DIR --tag HEX --cleanup-only

Run it through bench/run.sh (root, installs podman, traps Ctrl-C). One pod shape everywhere:
two busybox containers, `httpd -f -p 80 -h /` and `sleep 3600`, in a pod with its own
net/ipc/uts namespaces, a veth + IP on a bridge, and a cgroup. Per runtime and iteration:
  up    wall time from spawning the command(s) until they return with both containers running
  mem   RSS / PSS / USS (smaps_rollup) of the runtime's own long-lived processes of that pod,
        sampled SETTLE seconds after `up` returned (containers' workloads are not counted)
  down  wall time of the remove command(s)
Iterations are interleaved (minipod, podman, ..., minipod, podman, ...) so a background load
that comes and goes hits every runtime alike. Then a few traced minipod cycles attribute the
time (bench/trace/sitecustomize.py).

Everything is named mpb<tag> / mpn<tag> / mpf<tag> and lives under --work, podman included
(its own storage, config, CNI config dir and lock dir via CONTAINERS_CONF /
CONTAINERS_STORAGE_CONF), so nothing here meets anyone else's pods; cleanup() removes it all
and is idempotent (run.sh calls it again from its trap).

This process is a child subreaper and reaps every child as soon as it exits (like systemd as
PID 1 would; this machine's PID 1 reaps late): orphaned supervisors, conmons and the floor's
processes never linger as zombies in a cgroup.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENV = os.path.join(REPO, ".venv")
PY = os.path.join(VENV, "bin", "python")
MINIPOD = os.path.join(VENV, "bin", "minipod")
SETTLE = 0.3  # seconds between `up` returning and the memory sample
PR_SET_CHILD_SUBREAPER = 36

STOP = False


class Interrupted(Exception):
    pass


def _on_signal(signum, _frame) -> None:
    global STOP
    if not STOP:
        print(f"\n[bench] {signal.Signals(signum).name}: finishing the current step, "
              "then cleaning up", file=sys.stderr, flush=True)
    STOP = True


def check_stop() -> None:
    if STOP:
        raise Interrupted()


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --- processes --------------------------------------------------------------------------------

class Result:
    def __init__(self, argv, code, out, err, seconds):
        self.argv, self.code, self.out, self.err, self.seconds = argv, code, out, err, seconds

    def check(self) -> "Result":
        if self.code != 0:
            raise RuntimeError(f"{' '.join(self.argv)} exited {self.code}: "
                               f"{(self.err or self.out).strip()[-2000:]}")
        return self


def run(argv: list[str], env: dict | None = None, timeout: float = 180) -> Result:
    """Run argv and time it. Own session (Ctrl-C is ours to handle, never a half-made pod's);
    output to temp files (a detached daemon holding our pipe would keep us waiting for EOF);
    waitpid(-1) so every orphan that exits meanwhile is reaped on the spot."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                             start_new_session=True)
        status = _wait_for(p.pid, t0 + timeout)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status) if status is not None else -9
        out.seek(0)
        err.seek(0)
        return Result(argv, p.returncode, out.read().decode(errors="replace"),
                      err.read().decode(errors="replace"), dt)


def _wait_for(pid: int, deadline: float) -> int | None:
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return None
        if got == pid:
            return status
        # an orphan reparented to us: reaped, nothing else to do
        if time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)


def rmdir_retry(path: str) -> bool:
    """rmdir a cgroup, reaping and retrying for ~1 s while zombies keep it busy; True if
    this call removed it."""
    for _ in range(100):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return False
        except OSError:
            reap()
            time.sleep(0.01)
    return False


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def smaps(pid: int) -> dict | None:
    """RSS, PSS and USS (private) in kB from /proc/PID/smaps_rollup; None if it is gone."""
    vals = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, rest = line.partition(":")
                if k in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    vals[k] = int(rest.split()[0])
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return {"comm": comm, "rss": vals.get("Rss", 0), "pss": vals.get("Pss", 0),
            "uss": vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)}


def free_subnet(used_extra: list[str] = ()) -> str:
    out = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"],
                         capture_output=True, text=True).stdout
    used = [ipaddress.ip_network(u) for u in used_extra]
    for line in out.splitlines():
        w = line.split()
        dst = w[1] if w[0] in ("local", "broadcast", "unreachable", "blackhole") else w[0]
        if dst != "default":
            try:
                used.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                pass
    for _ in range(500):
        net = ipaddress.ip_network(f"10.{random.randrange(150, 200)}.{random.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise RuntimeError("no free 10.x subnet")


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def delete_link(name: str) -> None:
    if link_exists(name):
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def remove_cgroup_tree(name: str) -> None:
    """Kill and remove /sys/fs/cgroup/<ctrl>/<name> (v1) or /sys/fs/cgroup/<name> (v2)."""
    roots = ["/sys/fs/cgroup"] + [os.path.join("/sys/fs/cgroup", c)
                                  for c in sorted(os.listdir("/sys/fs/cgroup"))]
    for root in roots:
        top = os.path.join(root, name)
        if not os.path.isdir(top) or os.path.islink(root):
            continue
        for _ in range(300):
            pids = []
            for d, _, files in os.walk(top):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        pids += [int(x) for x in f.read().split()]
                except OSError:
                    pass
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
            reap()
        for d, _, _ in sorted(os.walk(top), key=lambda x: -x[0].count("/")):
            rmdir_retry(d)


def remove_iptables(match: str) -> list[str]:
    """Delete rules and chains whose text contains `match` (ours by name); say what went."""
    gone = []
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(f"{tool}-save"):
            continue
        for table in ("nat", "filter"):
            dump = subprocess.run([f"{tool}-save", "-t", table], capture_output=True,
                                  text=True).stdout
            for line in dump.splitlines():
                if line.startswith("-A ") and match in line:
                    args = shlex.split(line[3:])
                    subprocess.run([tool, "-t", table, "-D", *args], capture_output=True)
                    gone.append(f"{tool} -t {table} {line}")
            for line in dump.splitlines():
                if line.startswith(":") and match in line.split()[0]:
                    chain = line[1:].split()[0]
                    subprocess.run([tool, "-t", table, "-F", chain], capture_output=True)
                    subprocess.run([tool, "-t", table, "-X", chain], capture_output=True)
                    gone.append(f"{tool} -t {table} chain {chain}")
    return gone


def umount_under(path: str) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [ln.split()[4] for ln in f]
    for mp in sorted((m for m in points if m == path or m.startswith(path + "/")),
                     key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def host_snapshot() -> dict[str, set]:
    """What a leak would change: links, iptables rules/chains, mounts, cgroups at the top of
    each hierarchy, and the directories runtimes create state in."""
    def ls(d):
        try:
            return {os.path.join(d, x) for x in os.listdir(d)}
        except OSError:
            return set()

    ipt = set()
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            for table in ("nat", "filter"):
                out = subprocess.run([tool, "-t", table], capture_output=True, text=True).stdout
                ipt |= {f"{tool} {table} {ln.split(' [')[0]}" for ln in out.splitlines()
                        if ln[:1] in (":", "-")}
    with open("/proc/self/mountinfo") as f:
        mounts = {ln.split()[4] for ln in f}
    cgroups = set()
    for c in ls("/sys/fs/cgroup"):
        if os.path.isdir(c) and not os.path.islink(c):
            for d, subdirs, _ in os.walk(c):
                if d.count("/") - c.count("/") >= 3:
                    subdirs[:] = []
                cgroups |= {os.path.join(d, x) for x in subdirs}
    paths = set()
    for d in ("/run", "/var/lib", "/var/tmp", "/etc/cni/net.d", "/etc/containers", "/dev/shm",
              "/var/lib/cni", "/run/netns"):
        paths |= ls(d)
    return {"links": set(os.listdir("/sys/class/net")), "iptables": ipt, "mounts": mounts,
            "cgroups": cgroups, "paths": paths}


def host_diff(before: dict, after: dict, tag: str) -> list[str]:
    out = []
    for k in before:
        for x in sorted(after[k] - before[k]):
            out.append(f"+ {k}: {x}{'' if tag in x else '  (not named by this run)'}")
        for x in sorted(before[k] - after[k]):
            out.append(f"- {k}: {x}{'' if tag in x else '  (not named by this run)'}")
    return out


def _is_mountpoint(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(ln.split()[4] == path for ln in f)


def stats(xs: list[float]) -> dict:
    if not xs:
        return {}
    xs = sorted(xs)
    if len(xs) >= 2:
        q = statistics.quantiles(xs, n=10, method="inclusive")
        p10, p90 = q[0], q[8]
    else:
        p10 = p90 = xs[0]
    return {"n": len(xs), "median": statistics.median(xs), "p10": p10, "p90": p90,
            "min": xs[0], "max": xs[-1]}


# --- the runtimes -----------------------------------------------------------------------------

# imagePullPolicy IfNotPresent: `busybox` means :latest, whose Kubernetes default is Always, and
# minipod honours it (a registry check on every run; offline here it fails fast and minipod
# uses the local image with a warning). podman run's default is "missing": compare like with
# like. The check's own cost is measured apart (see README: "Image pull policy").
POD_YAML = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: web
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["httpd", "-f", "-p", "80", "-h", "/"]
  - name: sleep
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"""

RESIDENT_YAML = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: sleep
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"""


PROBED_YAML = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {{command: ["test", "-f", "/tmp/ready"]}}
      periodSeconds: 1
"""


class Minipod:
    """minipod with an isolated config. `resident`: a second pod stays up meanwhile, so the
    bridge and NAT rules exist already (the steady state of a host that runs pods)."""

    label = "minipod"

    def __init__(self, work: str, tag: str, subnet: str, source: str = ""):
        self.work = os.path.join(work, "minipod")
        self.tag = tag
        self.bridge = f"mpb{tag}"
        self.subnet = subnet
        self.cgroup_parent = f"mpb{tag}.slice"
        self.config = os.path.join(self.work, "config.toml")
        self.images = os.path.join(work, "minipod-images")
        self.pyc = os.path.join(work, "pyc")
        env = dict(os.environ, MINIPOD_CONFIG=self.config)
        for k in ("PYTHONPATH", "MINIPOD_BENCH_TRACE", "PYTHONPYCACHEPREFIX",
                  "PYTHONDONTWRITEBYTECODE", "MINIPOD_DEBUG"):
            env.pop(k, None)
        # --source: a snapshot of minipod (run.sh --rev) instead of the working tree. PYTHONPATH
        # wins over the editable install's finder (appended to sys.meta_path), and the
        # supervisor, started as `python -m minipod.kubelet.supervisor`, inherits it.
        self.source = source
        if source:
            env["PYTHONPATH"] = source
        # The rows without "agent" in their name measure the CLI on its own, as before the
        # node agent (minipod/agent/) existed: MINIPOD_AGENT=0 keeps every command in-process.
        env["MINIPOD_AGENT"] = "0"
        self.env_nocache = dict(env, PYTHONDONTWRITEBYTECODE="1")
        # A user's install has __pycache__ next to the sources (pip writes it, or the first run
        # does). This machine's sessions run with PYTHONDONTWRITEBYTECODE=1, which would make
        # every CLI call compile minipod from source: keep bytecode in a prefix of our own.
        self.env = dict(env, PYTHONPYCACHEPREFIX=self.pyc)
        self.env_agent = dict(self.env, MINIPOD_AGENT="1")

    def write_config(self) -> None:
        os.makedirs(self.work, exist_ok=True)
        values = {"root": os.path.join(self.work, "run"), "data_root": os.path.join(self.work,
                  "data"), "image_root": self.images, "bridge": self.bridge,
                  "subnet": self.subnet, "cgroup_parent": self.cgroup_parent}
        with open(self.config, "w") as f:
            for k, v in values.items():
                f.write(f"{k} = {json.dumps(v)}\n")

    def setup(self) -> None:
        self.write_config()
        if not os.path.isdir(os.path.join(self.images, "layers")):
            run([PY, "-m", "minipod.images.busybox", "--image-root", self.images],
                env=self.env).check()
        for name in ("bench", "resident"):
            text = (RESIDENT_YAML if name == "resident" else POD_YAML).format(
                name=f"{name}", image="busybox")
            with open(os.path.join(self.work, f"{name}.yaml"), "w") as f:
                f.write(text)

    def spec(self, name: str) -> str:
        return os.path.join(self.work, f"{name}.yaml")

    def up(self, env=None) -> float:
        return run([MINIPOD, "run", "-d", self.spec("bench")], env=env or self.env).check().seconds

    def down(self, env=None) -> float:
        return run([MINIPOD, "rm", "-f", "bench"], env=env or self.env).check().seconds

    def inspect(self, name: str = "bench") -> dict:
        return json.loads(run([MINIPOD, "inspect", name], env=self.env).check().out)

    def processes(self) -> dict[str, int]:
        d = self.inspect()
        procs = {"janitor": d["supervisor"]["janitorPid"], "supervisor": d["supervisor"]["pid"],
                 "pause": d["sandbox"]["pid"]}
        running = [c for c in d.get("containers", []) if c.get("state") == "running"]
        if len(running) != 2:
            raise RuntimeError(f"minipod: expected 2 running containers, got {d['containers']}")
        return procs

    def extra_processes(self, procs: dict[str, int]) -> list[str]:
        """Any other process left behind by `run -d` (e.g. a network agent): there must be none
        besides the janitor's own children (supervisor) and the supervisor's (pause, ctrs)."""
        mine = set(procs.values())
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit() or not (cmd := _cmdline(int(p))):
                continue
            if self.work in cmd and int(p) not in mine \
                    and not cmd.startswith(("minipod-agent", "minipod-zygote")) \
                    and " -pod resident " not in cmd:  # the (**) row's second pod
                out.append(f"{p} {cmd[:100]}")
        return out

    def recover(self, env=None) -> None:
        run([MINIPOD, "rm", "-f", "bench"], env=env or self.env)

    def start_resident(self) -> None:
        run([MINIPOD, "run", "-d", self.spec("resident")], env=self.env).check()

    def stop_resident(self) -> None:
        run([MINIPOD, "rm", "-f", "resident"], env=self.env)


    def start_agent(self) -> int:
        """Start the node agent and return its PID once it answers."""
        run([MINIPOD, "daemon", "start"], env=self.env_agent).check()
        return self.agent_pid()

    def agent_pid(self) -> int:
        out = run([MINIPOD, "daemon", "status"], env=self.env_agent).check().out
        return int(out.split("pid ", 1)[1].split(",", 1)[0])

    def cleanup(self) -> list[str]:
        notes = []
        pods = os.path.join(self.work, "run", "pods")
        if os.path.isdir(pods):
            for name in sorted(os.listdir(pods)):
                r = run([MINIPOD, "rm", "-f", name], env=self.env, timeout=60)
                if r.code != 0:
                    notes.append(f"minipod rm -f {name}: {r.err.strip()}")
        run([MINIPOD, "daemon", "stop"], env=self.env, timeout=60)
        # Belt and braces, should minipod have left anything of ours behind.
        if os.path.isdir(f"/sys/fs/cgroup/memory/{self.cgroup_parent}") or os.path.isdir(
                f"/sys/fs/cgroup/{self.cgroup_parent}"):
            notes.append(f"removed leftover cgroup {self.cgroup_parent}")
            remove_cgroup_tree(self.cgroup_parent)
        for link in os.listdir("/sys/class/net"):
            if link == self.bridge:
                notes.append(f"removed leftover bridge {link}")
                delete_link(link)
        notes += [f"removed leftover {x}" for x in remove_iptables(self.bridge)]
        reap()
        return notes


class Podman:
    """podman 4.3 + runc + catatonit with its own storage, config, CNI dir and lock dir."""

    label = "podman"

    def __init__(self, work: str, tag: str, subnet: str):
        self.work = os.path.join(work, "podman")
        self.tag = tag
        self.network = f"mpn{tag}"
        self.bridge = f"mpp{tag}"
        self.subnet = subnet
        self.image = "localhost/mpb-busybox:latest"
        self.conf = os.path.join(self.work, "containers.conf")
        self.storage = os.path.join(self.work, "storage.conf")
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf,
                        CONTAINERS_STORAGE_CONF=self.storage)
        self.n = 0
        self.current = ""
        self.host_before: dict = {}

    # Host paths podman/CNI/runc create outside our --work on first use; removed at the end if
    # they did not exist before and are empty then (or hold only our network's state).
    HOST_PATHS = ["/run/runc", "/run/netns", "/var/lib/cni/networks", "/var/lib/cni/results",
                  "/var/lib/cni", "/var/lib/containers/cache", "/var/lib/containers",
                  "/dev/shm/libpod_lock"]
    CNI_CHAINS = ["CNI-FORWARD", "CNI-ADMIN"]

    def snapshot_host(self) -> None:
        ipt = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True,
                             text=True).stdout
        self.host_before = {
            "paths": {p: os.path.exists(p) for p in self.HOST_PATHS},
            "chains": {c: f":{c} " in ipt for c in self.CNI_CHAINS},
            "cgroups": sorted(self._libpod_cgroups()),
        }
        with open(os.path.join(self.work, "host-before.json"), "w") as f:
            json.dump(self.host_before, f)

    @staticmethod
    def _libpod_cgroups() -> set[str]:
        """podman's cgroupfs parent and its children on every hierarchy. runc also creates
        them in name=systemd and the (empty) unified tree, where podman never removes them."""
        out = set()
        for h in os.listdir("/sys/fs/cgroup"):
            top = os.path.join("/sys/fs/cgroup", h, "libpod_parent")
            if os.path.isdir(top) and not os.path.islink(os.path.join("/sys/fs/cgroup", h)):
                out.add(top)
                out |= {os.path.join(top, d) for d in os.listdir(top)
                        if os.path.isdir(os.path.join(top, d))}
        return out

    def _remove_new_cgroups(self, before: list[str]) -> list[str]:
        new = self._libpod_cgroups() - set(before)
        gone = []
        for d in sorted(new, key=len, reverse=True):  # children first
            for sub, _, _ in sorted(os.walk(d), key=lambda x: -len(x[0])):
                if rmdir_retry(sub):
                    gone.append(sub)
        return gone

    def setup(self) -> None:
        os.makedirs(os.path.join(self.work, "cni"), exist_ok=True)
        os.makedirs(os.path.join(self.work, "tmp"), exist_ok=True)
        self.snapshot_host()
        with open(self.conf, "w") as f:
            f.write(f"""# minipod bench: podman 4.3 on this hybrid-cgroup host (see
# shared/reference/images-and-machine.md). Used through CONTAINERS_CONF only.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_backend = "cni"
network_config_dir = "{self.work}/cni"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = "{self.work}/tmp"
lock_type = "file"
""")
        with open(self.storage, "w") as f:
            f.write(f"""[storage]
driver = "overlay"
graphroot = "{self.work}/root"
runroot = "{self.work}/run"
""")
        # A busybox rootfs tarball from busybox-static: no registry needed.
        rootfs = os.path.join(self.work, "rootfs")
        os.makedirs(os.path.join(rootfs, "bin"), exist_ok=True)
        shutil.copy2("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
        applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True,
                                 text=True).stdout.split()
        for a in applets:
            link = os.path.join(rootfs, "bin", a)
            if a != "busybox" and not os.path.lexists(link):
                os.symlink("busybox", link)
        for d in ("proc", "sys", "dev", "etc", "tmp", "root"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        tar = os.path.join(self.work, "busybox.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
        # No image config in a tarball: give it the PATH Docker's busybox has (`kube play`,
        # unlike `run`, adds none).
        self.podman("import", "--change",
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    tar, self.image).check()
        self.podman("network", "create", "--subnet", self.subnet, self.network).check()
        # podman 4.3 has no --interface-name: name the CNI bridge ourselves (cni-podmanN could
        # be anyone's), so cleanup knows exactly which link is ours.
        conflist = os.path.join(self.work, "cni", f"{self.network}.conflist")
        with open(conflist) as f:
            cfg = json.load(f)
        for plugin in cfg["plugins"]:
            if plugin.get("type") == "bridge":
                plugin["bridge"] = self.bridge
        with open(conflist, "w") as f:
            json.dump(cfg, f, indent=3)
        with open(os.path.join(self.work, "pod.yaml"), "w") as f:
            f.write(POD_YAML.format(name=f"mpk{self.tag}", image=self.image))

    def podman(self, *args: str, timeout: float = 180) -> Result:
        return run(["podman", *args], env=self.env, timeout=timeout)

    def up(self) -> float:
        self.n += 1
        pod = self.current = f"mpp{self.tag}-{self.n}"
        t = self.podman("pod", "create", "--name", pod, "--network", self.network).check().seconds
        t += self.podman("run", "-d", "--pod", pod, "--name", f"{pod}-web", self.image,
                         "httpd", "-f", "-p", "80", "-h", "/").check().seconds
        t += self.podman("run", "-d", "--pod", pod, "--name", f"{pod}-sleep", self.image,
                         "sleep", "3600").check().seconds
        return t

    def down(self) -> float:
        return self.podman("pod", "rm", "-f", "-t", "0", self.current).check().seconds

    def recover(self, env=None) -> None:
        if self.current:
            self.podman("pod", "rm", "-f", "-t", "0", self.current)

    def processes(self) -> dict[str, int]:
        info = json.loads(self.podman("pod", "inspect", self.current).check().out)
        if isinstance(info, list):
            info = info[0]
        infra = info.get("InfraContainerID", "")
        procs = {}
        ids = [c["Id"] for c in info.get("Containers", [])]
        fmt = "{{.Id}} {{.Name}} {{.State.ConmonPid}} {{.State.Pid}} {{.State.Status}}"
        out = self.podman("inspect", "--format", fmt, *ids).check().out
        running = 0
        for line in out.splitlines():
            cid, name, conmon, pid, status = line.split()
            short = "infra" if cid == infra else name.rsplit("-", 1)[-1]
            procs[f"conmon({short})"] = int(conmon)
            if cid == infra:
                procs["catatonit(infra)"] = int(pid)
            elif status == "running":
                running += 1
        if running != 2:
            raise RuntimeError(f"podman: expected 2 running containers:\n{out}")
        return procs


    def cleanup(self) -> list[str]:
        notes = []
        if not os.path.exists(self.conf) or not shutil.which("podman"):
            return notes
        self.podman("pod", "rm", "-a", "-f", "-t", "0", timeout=120)
        self.podman("rm", "-a", "-f", "-t", "0", timeout=120)
        self.podman("network", "rm", "-f", self.network, timeout=60)
        self.podman("rmi", "-a", "-f", timeout=60)
        reap()
        delete_link(self.bridge)
        before = self.host_before
        if not before:
            try:
                with open(os.path.join(self.work, "host-before.json")) as f:
                    before = json.load(f)
            except OSError:
                before = {}
        # The CNI firewall plugin creates CNI-FORWARD/CNI-ADMIN (+ a FORWARD jump) on first use
        # and never removes them. Ours iff absent before and now holding nothing but that.
        ipt = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True,
                             text=True).stdout
        if before and not any(before.get("chains", {}).values()) and ":CNI-FORWARD " in ipt:
            fwd = [ln for ln in ipt.splitlines() if ln.startswith("-A CNI-FORWARD ")]
            if all("CNI-ADMIN" in ln for ln in fwd):
                subprocess.run(["iptables", "-D", "FORWARD", "-m", "comment", "--comment",
                                "CNI firewall plugin rules", "-j", "CNI-FORWARD"],
                               capture_output=True)
                for c in self.CNI_CHAINS:
                    subprocess.run(["iptables", "-F", c], capture_output=True)
                    subprocess.run(["iptables", "-X", c], capture_output=True)
                notes.append("removed iptables chains CNI-FORWARD, CNI-ADMIN (created by the "
                             "CNI firewall plugin during this run)")
        if before:
            gone = self._remove_new_cgroups(before.get("cgroups", []))
            if gone:
                notes.append(f"removed {len(gone)} cgroup(s) podman/runc left under "
                             "libpod_parent (name=systemd and unified hierarchies)")
        shutil.rmtree(f"/var/lib/cni/networks/{self.network}", ignore_errors=True)
        for p in self.HOST_PATHS:
            if before and not before.get("paths", {}).get(p, True) and os.path.exists(p):
                if p == "/var/lib/containers/cache":
                    shutil.rmtree(p, ignore_errors=True)  # the blob-info cache of our import
                elif p == "/dev/shm/libpod_lock":
                    continue  # not ours: we use lock_type=file
                else:
                    if p == "/run/netns" and not os.listdir(p) and _is_mountpoint(p):
                        # CNI bind-mounts /run/netns onto itself (as `ip netns add` does)
                        subprocess.run(["umount", p], capture_output=True)
                    try:
                        os.rmdir(p)
                    except OSError as e:
                        notes.append(f"left {p}: {e.strerror}")
        umount_under(self.work)
        return notes


class PodmanKube:
    """The same pod from the same kind of manifest: `podman kube play` (one command, like
    `minipod run -d`), removed with `pod rm -f -t 0` (`kube down` waits for SIGTERM, which
    sleep ignores). Shares Podman's set-up (storage, image, network)."""

    label = "podman kube play"

    def __init__(self, pm: Podman):
        self.pm = pm
        self.pod = f"mpk{pm.tag}"

    def up(self) -> float:
        self.pm.current = self.pod
        return self.pm.podman("kube", "play", "--network", self.pm.network,
                              os.path.join(self.pm.work, "pod.yaml")).check().seconds

    def down(self) -> float:
        return self.pm.podman("pod", "rm", "-f", "-t", "0", self.pod).check().seconds

    def processes(self) -> dict[str, int]:
        self.pm.current = self.pod
        return self.pm.processes()

    def recover(self, env=None) -> None:
        self.pm.podman("pod", "rm", "-f", "-t", "0", self.pod)

    def cleanup(self) -> list[str]:
        return []  # Podman.cleanup removes every pod in our storage


class Floor:
    """bench/floor.sh: the same pod with unshare/nsenter/ip and nothing else."""

    label = "shell floor"

    def __init__(self, work: str, tag: str, subnet: str, lower: str, pause: str):
        self.work = os.path.join(work, "floor")
        self.tag = tag
        self.bridge = f"mpf{tag}"
        net = ipaddress.ip_network(subnet)
        self.gw = f"{net.network_address + 1}/{net.prefixlen}"
        self.ip = str(net.network_address + 2)
        self.lower = lower
        self.pause = pause
        self.pod = f"{tag}"
        self.env = dict(os.environ)

    def setup(self) -> None:
        os.makedirs(self.work, exist_ok=True)
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", self.gw, "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)

    def up(self) -> float:
        return run([os.path.join(HERE, "floor.sh"), "up", os.path.join(self.work, "pod"),
                    self.pod, self.bridge, self.gw, self.ip, self.lower, self.pause],
                   env=self.env).check().seconds

    def down(self) -> float:
        return run([os.path.join(HERE, "floor.sh"), "down", os.path.join(self.work, "pod"),
                    self.pod], env=self.env).check().seconds

    def processes(self) -> dict[str, int]:
        with open(os.path.join(self.work, "pod", "sandbox.pid")) as f:
            return {"pause": int(f.read())}

    def recover(self, env=None) -> None:
        run([os.path.join(HERE, "floor.sh"), "down", os.path.join(self.work, "pod"), self.pod],
            env=self.env)

    def cleanup(self) -> list[str]:
        notes = []
        if os.path.isdir(os.path.join(self.work, "pod")):
            run([os.path.join(HERE, "floor.sh"), "down", os.path.join(self.work, "pod"),
                 self.pod], env=self.env)
        remove_cgroup_tree(f"mpf-{self.pod}.slice")
        delete_link(f"mfv{self.pod[-8:]}")
        delete_link(self.bridge)
        reap()
        return notes


# --- the benchmark ----------------------------------------------------------------------------

def machine() -> dict:
    def read(p):
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            return ""

    cpu = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cg = "v2 (unified)" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else \
        "v1/hybrid: " + ",".join(sorted(d for d in os.listdir("/sys/fs/cgroup")
                                       if not os.path.islink(f"/sys/fs/cgroup/{d}")))
    mem = read("/proc/meminfo").splitlines()[0].split()[1]
    pyv = subprocess.run([PY, "-c", "import sys; print(sys.version.split()[0])"],
                         capture_output=True, text=True).stdout.strip()
    pid1 = read("/proc/1/comm")

    def ver(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    return {"nproc": os.cpu_count(), "kernel": os.uname().release, "cpu": cpu,
            "mem_total_kb": int(mem), "cgroups": cg, "pid1": pid1, "python": pyv,
            "podman": ver(["podman", "--version"])
            if shutil.which("podman") else "",
            "runc": ver(["runc", "--version"]).split("\n")[0] if shutil.which("runc") else "",
            "conmon": ver(["conmon", "--version"]).split("\n")[0]
            if shutil.which("conmon") else ""}


def minipod_source(source: str, label: str) -> str:
    if source:
        return label or source
    def git(*args):
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True,
                              text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--", "minipod")
    return f"working tree at {git('rev-parse', '--short', 'HEAD')}" + (
        " (+ uncommitted changes to minipod/)" if dirty else "")


class Load:
    """Is the other session's qemu running, and how much CPU did it take during our run?"""

    def __init__(self):
        self.samples: list[dict] = []

    def sample(self) -> dict:
        procs = {}
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/comm") as f:
                    comm = f.read().strip()
                if not comm.startswith("qemu"):
                    continue
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                procs[int(p)] = int(fields[11]) + int(fields[12])  # utime + stime, ticks
            except (OSError, IndexError, ValueError):
                continue
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        s = {"t": time.monotonic(), "qemu": procs, "loadavg1": float(load)}
        self.samples.append(s)
        return s

    def summary(self) -> dict:
        if len(self.samples) < 2:
            return {}
        hz = os.sysconf("SC_CLK_TCK")
        busy = secs = 0.0
        for a, b in zip(self.samples, self.samples[1:]):
            common = set(a["qemu"]) & set(b["qemu"])
            if common:  # an interval with the VM running throughout
                busy += sum(b["qemu"][p] - a["qemu"][p] for p in common) / hz
                secs += b["t"] - a["t"]
        first, last = self.samples[0], self.samples[-1]
        return {"samples": len(self.samples),
                "samples_with_qemu": sum(1 for x in self.samples if x["qemu"]),
                "qemu_cpu_cores_while_running": round(busy / secs, 2) if secs else 0,
                "loadavg1_start": first["loadavg1"], "loadavg1_end": last["loadavg1"],
                "seconds": round(last["t"] - first["t"], 1)}


MAX_FAILURES = 3  # per runtime; more and the run stops (something is broken, not flaky)


def safe_cycle(rt, res: dict, sample_mem: bool, env=None) -> None:
    """cycle(), but a failed cycle is recorded (with its error) and undone, not fatal: one
    flaky start must not throw away every other runtime's numbers."""
    try:
        cycle(rt, res, sample_mem, env)
    except RuntimeError as e:
        res.setdefault("failures", []).append(str(e)[:500])
        log(f"{rt.label}: cycle failed ({len(res['failures'])}): {str(e)[:300]}")
        rt.recover(env)
        reap()
        if len(res["failures"]) >= MAX_FAILURES:
            raise


def cycle(rt, res: dict, sample_mem: bool, env=None) -> None:
    up = rt.up(env) if env is not None else rt.up()
    procs = {}
    if sample_mem:
        time.sleep(SETTLE)
        procs = rt.processes()
        mem = {role: smaps(pid) for role, pid in procs.items()}
        res.setdefault("mem", []).append(mem)
        if isinstance(rt, Minipod):
            extra = rt.extra_processes(procs)
            if extra:
                res.setdefault("extra_processes", []).append(extra)
    down = rt.down(env) if env is not None else rt.down()
    res.setdefault("up", []).append(up)
    res.setdefault("down", []).append(down)
    res.setdefault("cycle", []).append(up + down)
    reap()


def density(mp: Minipod, n: int, env: dict) -> dict:
    """n one-container pods started one after another (`run -d` each, timed), the memory of
    all of minipod's processes at 1 and at n pods, then all removed."""
    names = [f"dense{i}" for i in range(n)]
    ups: list[float] = []
    mem_1: dict = {}
    try:
        for i, name in enumerate(names):
            check_stop()
            path = os.path.join(mp.work, f"{name}.yaml")
            with open(path, "w") as f:
                f.write(RESIDENT_YAML.format(name=name))
            ups.append(run([MINIPOD, "run", "-d", path], env=env).check().seconds)
            if i == 0:
                time.sleep(SETTLE)
                mem_1 = _minipod_memory(mp)
        time.sleep(SETTLE)
        mem_n = _minipod_memory(mp)
        crash = agent_crash(mp, env, names) if env is mp.env_agent else None
        restart = restart_latency(mp, env, names[len(names) // 2])
        names.append("probed")
        probe = probe_latency(mp, env, "probed")
    finally:
        t0 = time.perf_counter()
        run([MINIPOD, "rm", "-f", *names], env=env, timeout=600)
        rm_s = time.perf_counter() - t0
        reap()
    return {"n": n, "up_raw": ups, "first10": stats(ups[:10]), "last10": stats(ups[-10:]),
            "ratio": statistics.median(ups[-10:]) / statistics.median(ups[:10]),
            "mem_1": mem_1, "mem_n": mem_n, "rm_s": rm_s, "agent_crash": crash,
            "restart_s": restart, "probe_s": probe,
            "marginal": {k: (mem_n[k] - mem_1[k]) / max(1, n - 1) for k in ("rss", "pss", "uss")}}


def agent_crash(mp: Minipod, env: dict, names: list[str]) -> dict:
    """SIGKILL the agent with the density pods up. Their supervisors are not its children
    (zygote.py), so there is nothing to re-adopt: what a user waits for is the next command
    -- `ps`, in-process while no agent answers; it starts a new one -- and the new agent
    answering. Both timed from the kill; `ps` must still show every pod Running."""
    root = os.path.join(mp.work, "run")
    victims = [int(p) for p in os.listdir("/proc") if p.isdigit() and
               _cmdline(int(p)).startswith(f"minipod-agent -root {root}")]
    if not victims:
        return {}
    t0 = time.perf_counter()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    while any(os.path.exists(f"/proc/{p}") and _cmdline(p) for p in victims):
        time.sleep(0.001)
    ps = run([MINIPOD, "ps"], env=env).check()
    ps_s = time.perf_counter() - t0
    running = sum(1 for line in ps.out.splitlines()[1:]
                  if line.split()[0] in names and "Running" in line)
    while run([MINIPOD, "daemon", "status"], env=env).code != 0:
        if time.perf_counter() - t0 > 60:
            raise RuntimeError("no new agent answered within 60 s of the old one's SIGKILL")
        time.sleep(0.01)
    back_s = time.perf_counter() - t0
    warm = run([MINIPOD, "ps"], env=env).check()
    return {"agents_killed": len(victims), "ps_s": ps_s, "running": running,
            "agent_back_s": back_s, "warm_ps_s": warm.seconds}


def restart_latency(mp: Minipod, env: dict, name: str) -> float:
    """With the other pods up, SIGKILL one pod's container: seconds until `inspect` shows
    its restarted process (restartPolicy Always; the first restart has no back-off).
    Polled through `inspect`, so it includes up to one command's time."""
    def pid() -> int:
        return json.loads(run([MINIPOD, "inspect", name], env=env).check().out) \
            ["containers"][0]["pid"]

    old = pid()
    t0 = time.perf_counter()
    os.kill(old, signal.SIGKILL)
    while (new := pid()) in (0, old):
        if time.perf_counter() - t0 > 60:
            raise RuntimeError(f"{name}'s container was not restarted within 60 s")
    reap()
    return time.perf_counter() - t0


def probe_latency(mp: Minipod, env: dict, name: str) -> float:
    """With the other pods up, one more pod whose readiness probe (exec, every second) passes
    once /tmp/ready exists: seconds from `exec touch` returning until the pod's container
    is ready (`get -o json`). A probe that runs on time makes this at most the period plus
    one probe's run; a stalled supervisor or agent makes it longer."""
    path = os.path.join(mp.work, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(PROBED_YAML.format(name=name))
    run([MINIPOD, "run", "-d", path], env=env).check()

    def ready() -> bool:
        pod = json.loads(run([MINIPOD, "get", "pod", name, "-o", "json"], env=env).check().out)
        return bool(pod["status"].get("containerStatuses", [{}])[0].get("ready"))

    time.sleep(1.5)  # a probe or two fail first
    if ready():
        raise RuntimeError(f"{name} is ready before /tmp/ready exists")
    run([MINIPOD, "exec", name, "-c", "c", "--", "touch", "/tmp/ready"], env=env).check()
    t0 = time.perf_counter()
    while not ready():
        if time.perf_counter() - t0 > 30:
            raise RuntimeError(f"{name} did not become ready within 30 s")
    return time.perf_counter() - t0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _minipod_memory(mp: Minipod) -> dict:
    """RSS/PSS/USS summed over every process of this minipod (agent, janitors, supervisors,
    pauses; network agents while they live), found by their titles and command lines."""
    root = os.path.join(mp.work, "run")
    tot = {"rss": 0, "pss": 0, "uss": 0, "procs": 0}
    for p in os.listdir("/proc"):
        if not p.isdigit() or not (cmd := _cmdline(int(p))):
            continue
        mine = root in cmd or (cmd.startswith(os.path.join(VENV, "libexec", "minipod", "pause"))
                               and _ppid_has_root(int(p), root))
        if mine and (m := smaps(int(p))):
            for k in ("rss", "pss", "uss"):
                tot[k] += m[k]
            tot["procs"] += 1
    return tot


def _ppid_has_root(pid: int, root: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rpartition(")")[2].split()[1])
        with open(f"/proc/{ppid}/cmdline", "rb") as f:
            return root in f.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return False


def mem_summary(mems: list[dict]) -> dict:
    """Per role: median RSS/PSS/USS; total: median of per-pod sums."""
    roles: dict[str, dict[str, list]] = {}
    totals: dict[str, list] = {"rss": [], "pss": [], "uss": []}
    for m in mems:
        sums = {"rss": 0, "pss": 0, "uss": 0}
        for role, v in m.items():
            if v is None:
                continue
            r = roles.setdefault(role, {"rss": [], "pss": [], "uss": [], "comm": v["comm"]})
            for k in sums:
                r[k].append(v[k])
                sums[k] += v[k]
        for k in sums:
            totals[k].append(sums[k])
    out = {"roles": {}, "total": {k: statistics.median(v) for k, v in totals.items() if v}}
    for role, r in roles.items():
        out["roles"][role] = {"comm": r["comm"], **{k: statistics.median(r[k])
                                                   for k in ("rss", "pss", "uss")}}
    return out


# --- tracing ----------------------------------------------------------------------------------

def _traced_cycle(mp: "Minipod", env: dict) -> dict:
    """One `run -d` + `rm -f`: each command's window of CLOCK_MONOTONIC ns."""
    windows = {}
    for phase, argv in (("up", [MINIPOD, "run", "-d", mp.spec("bench")]),
                        ("down", [MINIPOD, "rm", "-f", "bench"])):
        t0 = time.monotonic_ns()
        run(argv, env=env).check()
        windows[phase] = (t0, time.monotonic_ns())
        time.sleep(SETTLE)
        reap()
    return windows


def traced_agent_cycles(mp: Minipod, k: int, work: str) -> dict:
    """traced_cycles through the node agent: a warm agent of its own, started with the trace
    on its PYTHONPATH, so its workers, zygote and the pods' supervisors (all forks of it) write
    to the one file the agent was started with; each command's window selects its events."""
    env = dict(mp.env_agent, PYTHONPATH=os.pathsep.join(
        p for p in (os.path.join(HERE, "trace"), mp.source) if p))
    path = os.path.join(work, "trace-agent.log")
    env["MINIPOD_BENCH_TRACE"] = path
    run([MINIPOD, "daemon", "stop"], env=mp.env).check()
    run([MINIPOD, "daemon", "start"], env=env).check()
    runs = {"up": [], "down": []}
    try:
        for i in range(k + 1):  # the first cycle warms the agent's forks: not counted
            check_stop()
            windows = _traced_cycle(mp, env)
            if i:
                for phase, (t0, t1) in windows.items():
                    runs[phase].append(parse_trace(path, t0, t1))
    finally:
        run([MINIPOD, "daemon", "stop"], env=mp.env)  # the traced agent serves nothing else
    return {phase: merge_traces(v) for phase, v in runs.items()}


def traced_cycles(mp: Minipod, k: int, work: str) -> dict:
    """k traced minipod cycles; per label, median begin/end (ms) relative to spawning the
    command, for `run -d` and `rm -f` separately. One trace file per cycle: the supervisor
    keeps the environment of `run -d`, so its teardown lands in the same file; each command's
    events are those between its spawn and its return."""
    env = dict(mp.env, PYTHONPATH=os.pathsep.join(
        p for p in (os.path.join(HERE, "trace"), mp.source) if p))
    runs = {"up": [], "down": []}
    for i in range(k):
        check_stop()
        path = os.path.join(work, f"trace-{i}.log")
        for phase, (t0, t1) in _traced_cycle(mp, dict(env, MINIPOD_BENCH_TRACE=path)).items():
            runs[phase].append(parse_trace(path, t0, t1))
    return {phase: merge_traces(v) for phase, v in runs.items()}


def parse_trace(path: str, t0: int, t1: int) -> dict:
    events = []
    with open(path) as f:
        for line in f:
            parts = line.split(None, 3)
            if len(parts) == 4:
                events.append((int(parts[0]), int(parts[1]), parts[2], parts[3].strip()))
    events.sort()
    roles: dict[int, str] = {}
    for _, pid, _, label in events:  # the whole file: the supervisor was named at `run -d`
        role = {"cli.main": "cli", "net.agent._child": "agent", "janitor.watch": "janitor",
                "supervisor.Supervisor.__init__": "supervisor",
                "supervisor.Host.__init__": "supervisor",
                "supervisor.Supervisor.finish": "supervisor"}.get(label)
        if role and pid not in roles:
            roles[pid] = role
    events = [ev for ev in events if t0 <= ev[0] <= t1]
    # begin/end pairs per (pid, label), numbered by occurrence within the window
    open_: dict[tuple, list] = {}
    spans: list[tuple] = []
    for t, pid, kind, label in events:
        ms = (t - t0) / 1e6
        if kind == "B":
            open_.setdefault((pid, label), []).append(ms)
        elif kind == "E" and open_.get((pid, label)):
            b = open_[(pid, label)].pop()
            spans.append((b, ms, pid, label))
        elif kind == "I":
            spans.append((ms, ms, pid, label))
    for (pid, label), starts in open_.items():  # still running when the command returned
        for b in starts:
            spans.append((b, (t1 - t0) / 1e6, pid, label + " (still running)"))
    spans.sort()
    seen: dict[str, int] = {}
    out = {}
    for b, e, pid, label in spans:
        role = roles.get(pid, "child")
        if label.startswith("start:") and role == "child":
            role = "janitor" if ("supervisor" in label or "daemon" in label) else "cli"
        name = f"{role}:{label}"
        k = seen.get(name, 0)
        seen[name] = k + 1
        out[name if k == 0 else f"{name}#{k + 1}"] = (b, e)
    out["=:command returned"] = ((t1 - t0) / 1e6, (t1 - t0) / 1e6)
    return out


def merge_traces(runs: list[dict]) -> list[dict]:
    keys = set()
    for r in runs:
        keys |= set(r)
    rows = []
    for k in keys:
        vals = [r[k] for r in runs if k in r]
        if len(vals) < max(1, len(runs) // 2):
            continue  # occasional events (an extra _reap) are noise
        b = statistics.median(v[0] for v in vals)
        e = statistics.median(v[1] for v in vals)
        rows.append({"label": k, "begin_ms": round(b, 1), "end_ms": round(e, 1),
                     "ms": round(e - b, 1), "n": len(vals)})
    rows.sort(key=lambda r: (r["begin_ms"], -r["ms"]))
    return rows


NOISY = ("write_state", "Supervisor._reap", "Agent.close", "ImageStore.__init__",
         "_exec_supervisor", "_exec_daemon", "janitor.watch", "Supervisor.run", "Supervisor.loop",
         "net.agent._child", "rmdir_retry")


def fold_trace(rows: list[dict]) -> list[dict]:
    """One row per label: repeats (label#2, #3...) folded into the first, durations summed."""
    out: dict[str, dict] = {}
    for r in rows:
        base = r["label"].split("#", 1)[0]
        if any(x in base for x in NOISY) or base.endswith(":fork"):
            continue
        if base in out:
            o = out[base]
            o["end_ms"] = max(o["end_ms"], r["end_ms"])
            o["ms"] = round(o["ms"] + r["ms"], 1)
            o["count"] += 1
        else:
            out[base] = dict(r, label=base, count=1)
    return sorted(out.values(), key=lambda r: (r["begin_ms"], -r["ms"]))


def print_trace(rows: list[dict], title: str) -> None:
    print(f"\n{title} (median of traced runs; ms from spawning the command; "
          "xN: N calls, dur = their sum)")
    print(f"  {'begin':>7} {'end':>7} {'dur':>6}  what")
    for r in fold_trace(rows):
        n = f" x{r['count']}" if r["count"] > 1 else ""
        print(f"  {r['begin_ms']:7.1f} {r['end_ms']:7.1f} {r['ms']:6.1f}  {r['label']}{n}")


# --- report -----------------------------------------------------------------------------------

def fmt_t(s: dict) -> str:
    if not s:
        return "-"
    return f"{s['median'] * 1000:6.0f} ({s['p10'] * 1000:.0f}-{s['p90'] * 1000:.0f})"


def print_report(res: dict) -> None:
    rows = res["runtimes"]
    m = res["machine"]
    print(f"\nminipod: {res.get('minipod')}; {m['nproc']} CPUs ({m['cpu']}), kernel "
          f"{m['kernel']}, cgroups {m['cgroups']}, Python {m['python']}; {m['podman']}")
    print("\n== Pod up / down (2 busybox containers; ms: median (p10-p90)) ==")
    print(f"{'runtime':<40} {'n':>3} {'up':>18} {'down':>18} {'cycle':>18} "
          f"{'RSS MB':>7} {'PSS MB':>7} {'USS MB':>7} procs")
    for key, r in rows.items():
        m = r.get("memory", {}).get("total", {})
        nprocs = len(r.get("memory", {}).get("roles", {}))
        mem = " ".join(f"{m[k] / 1024:7.1f}" if k in m else f"{'-':>7}"
                       for k in ("rss", "pss", "uss"))
        print(f"{r['label']:<40} {r['up'].get('n', 0):>3} {fmt_t(r['up']):>18} "
              f"{fmt_t(r['down']):>18} {fmt_t(r['cycle']):>18} {mem} {nprocs or '-':>5}")
    for key, r in rows.items():
        if r.get("failures"):
            print(f"  {r['label']}: {len(r['failures'])} failed cycle(s), e.g. "
                  f"{r['failures'][0][:200]}")
        if r.get("extra_processes"):
            print(f"  {r['label']}: processes left running besides the pod's: "
                  f"{r['extra_processes'][0]}")
    print("\n== Per-process memory of each runtime's long-lived processes per pod "
          "(median, MB) ==")
    print(f"{'runtime':<40} {'process':<18} {'comm':<12} {'RSS':>6} {'PSS':>6} {'USS':>6}")
    for key, r in rows.items():
        for role, v in r.get("memory", {}).get("roles", {}).items():
            print(f"{r['label']:<40} {role:<18} {v['comm']:<12} {v['rss'] / 1024:6.2f} "
                  f"{v['pss'] / 1024:6.2f} {v['uss'] / 1024:6.2f}")
    if res.get("cli"):
        print("\n== CLI cost alone (ms: median (p10-p90)) ==")
        for name, s in res["cli"].items():
            print(f"{name:<52} {fmt_t(s):>18}")
    if res.get("agent", {}).get("memory"):
        ag = res["agent"]
        m = ag["memory"]
        print(f"\nthe agent itself (one per host, not per pod): RSS {m['rss'] / 1024:.1f} MB, "
              f"PSS {m['pss'] / 1024:.1f} MB, USS {m['uss'] / 1024:.1f} MB"
              f"{' (it was restarted during the run!)' if ag.get('restarted') else ''}")
    for how, d in res.get("density", {}).items():
        print(f"\n== density, {how}: {d['n']} pods started one after another ==")
        print(f"  up, first 10: {fmt_t(d['first10'])} ms; last 10: {fmt_t(d['last10'])} ms; "
              f"ratio of medians {d['ratio']:.2f}")
        for when, t in (("1 pod", d["mem_1"]), (f"{d['n']} pods", d["mem_n"])):
            print(f"  minipod's processes at {when}: RSS {t['rss'] / 1024:.1f} MB, "
                  f"PSS {t['pss'] / 1024:.1f} MB, USS {t['uss'] / 1024:.1f} MB "
                  f"({t['procs']} processes{', the agent included' if how == 'agent' else ', no agent'})")
        mg = d["marginal"]
        print(f"  marginal per pod: PSS {mg['pss'] / 1024:.2f} MB, USS {mg['uss'] / 1024:.2f} MB;"
              f" rm -f of all: {d['rm_s']:.1f} s")
        print(f"  a container SIGKILLed with {d['n']} pods up: restarted after "
              f"{d['restart_s'] * 1000:.0f} ms (seen by polling `inspect`)")
        print(f"  a readiness probe (exec, periodSeconds 1) with {d['n']} pods up: ready "
              f"{d['probe_s'] * 1000:.0f} ms after its file appeared (at most ~1000 + one "
              f"probe's run when on time)")
        if c := d.get("agent_crash"):
            print(f"  agent SIGKILLed with {d['n']} pods up: the next `ps` (in-process) "
                  f"answered {c['ps_s'] * 1000:.0f} ms after the kill, {c['running']} pods "
                  f"Running; a new agent answered after {c['agent_back_s'] * 1000:.0f} ms; "
                  f"`ps` through it {c['warm_ps_s'] * 1000:.0f} ms")
    if res.get("podman_skipped"):
        print(f"\npodman: not measured: {res['podman_skipped']}")
    for which, how in (("trace", "in-process"), ("trace_agent", "via the agent")):
        for key in ("up", "down"):
            if res.get(which, {}).get(key):
                print_trace(res[which][key], f"== minipod {'run -d' if key == 'up' else 'rm -f'}"
                            f" timeline, {how} ==")
    ld = res.get("load", {})
    if ld:
        print(f"\nbackground: a qemu VM was running at {ld.get('samples_with_qemu')} of "
              f"{ld.get('samples')} samples (one per iteration; using "
              f"{ld.get('qemu_cpu_cores_while_running')} cores while it ran); run took "
              f"{ld.get('seconds')} s; loadavg {ld.get('loadavg1_start')} -> "
              f"{ld.get('loadavg1_end')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("-n", "--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cli-iterations", type=int, default=10)
    ap.add_argument("--trace", type=int, default=5, help="traced minipod cycles (0: none)")
    ap.add_argument("--no-podman", metavar="REASON", default="")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--no-kube", action="store_true", help="skip the podman kube play row")
    ap.add_argument("--no-resident", action="store_true",
                    help="skip the minipod row with a second pod keeping the bridge up")
    ap.add_argument("--no-nocache", action="store_true",
                    help="skip the minipod row without bytecode cache")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--density", type=int, default=0, metavar="N",
                    help="also start N one-container pods one after another (issue 11)")
    ap.add_argument("--source", default="",
                    help="import minipod from this directory (a snapshot) instead of the "
                         "working tree")
    ap.add_argument("--source-label", default="", help="what --source is (for the results)")
    ap.add_argument("--cleanup-only", action="store_true")
    a = ap.parse_args(argv)

    if os.geteuid() != 0:
        print("bench: run as root (bench/run.sh)", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    os.makedirs(a.work, exist_ok=True)
    # A neutral cwd: `python -m` puts the cwd first on sys.path, so from the repo a supervisor or
    # agent would import the working tree even when --source names a snapshot. minipod runs its
    # interpreters with -P now (minipod.python_m); revisions before that, measured with --rev,
    # do not.
    os.chdir(a.work)

    subnets_path = os.path.join(a.work, "subnets.json")
    if os.path.exists(subnets_path):
        with open(subnets_path) as f:
            subnets = json.load(f)
    else:
        s1 = free_subnet()
        s2 = free_subnet([s1])
        s3 = free_subnet([s1, s2])
        subnets = {"minipod": s1, "podman": s2, "floor": s3}
        with open(subnets_path, "w") as f:
            json.dump(subnets, f)
    mp = Minipod(a.work, a.tag, subnets["minipod"], a.source)
    pm = Podman(a.work, a.tag, subnets["podman"])
    floor_lower = os.path.join(pm.work, "rootfs")
    pause = os.path.join(VENV, "libexec", "minipod", "pause")
    fl = Floor(a.work, a.tag, subnets["floor"], floor_lower,
               pause if os.path.exists(pause) else "/bin/busybox sleep 2147483647")

    def cleanup() -> None:
        notes = []
        for rt in (mp, pm, fl):
            try:
                notes += rt.cleanup()
            except Exception as e:  # noqa: BLE001 - go on with the others
                notes.append(f"{rt.label} cleanup: {type(e).__name__}: {e}")
        for n in notes:
            log(n)

    if a.cleanup_only:
        cleanup()
        return 0

    res: dict = {"machine": machine(), "minipod": minipod_source(a.source, a.source_label),
                 "iterations": a.iterations, "warmup": a.warmup,
                 "settle_s": SETTLE, "runtimes": {}, "cli": {}, "trace": {}}
    load = Load()
    load.sample()
    host_before = host_snapshot()
    code = 0
    try:
        log("setting up minipod (isolated config, busybox image)")
        mp.setup()
        podman_ok = not a.no_podman
        res["podman_skipped"] = a.no_podman
        if podman_ok:
            log("setting up podman (own storage/config/CNI dir, imported busybox)")
            try:
                pm.setup()
            except Exception as e:  # noqa: BLE001 - minipod's numbers alone, and why
                res["podman_skipped"] = f"podman set-up failed: {e}"
                log(res["podman_skipped"])
                podman_ok = False
        floor_ok = not a.no_floor and os.path.isdir(floor_lower)
        if not a.no_floor and not floor_ok:
            # the floor overlays the rootfs made for podman: make it without podman
            try:
                os.makedirs(os.path.join(floor_lower, "bin"), exist_ok=True)
                shutil.copy2("/bin/busybox", os.path.join(floor_lower, "bin", "busybox"))
                for ap_ in subprocess.run(["/bin/busybox", "--list"], capture_output=True,
                                          text=True).stdout.split():
                    if ap_ != "busybox" and not os.path.lexists(
                            os.path.join(floor_lower, "bin", ap_)):
                        os.symlink("busybox", os.path.join(floor_lower, "bin", ap_))
                for d in ("proc", "dev", "tmp"):
                    os.makedirs(os.path.join(floor_lower, d), exist_ok=True)
                floor_ok = True
            except OSError as e:
                log(f"floor skipped: {e}")
        if floor_ok:
            fl.setup()

        # (key, label, runtime, env) -- cycle order within an iteration
        plan = [("minipod", "minipod run -d / rm -f", mp, mp.env),
                ("minipod_agent", "minipod via the agent (***)", mp, mp.env_agent)]
        agent_pid = mp.start_agent()
        if not a.no_nocache:
            plan.append(("minipod_nocache", "minipod, no bytecode cache (*)", mp,
                         mp.env_nocache))
        if podman_ok:
            plan.append(("podman", "podman pod create + 2x run -d / pod rm", pm, None))
        if podman_ok and not a.no_kube:
            plan.append(("podman_kube", "podman kube play / pod rm", PodmanKube(pm), None))
        if floor_ok:
            plan.append(("floor", "shell floor (unshare/nsenter/ip)", fl, None))
        for key, label, _, _ in plan:
            res["runtimes"][key] = {"label": label}

        log(f"warm-up: {a.warmup} cycle(s) each")
        for _ in range(a.warmup):
            for key, _, rt, env in plan:
                check_stop()
                safe_cycle(rt, {}, sample_mem=False, env=env)
        raw = {key: {} for key, *_ in plan}
        for i in range(a.iterations):
            check_stop()
            log(f"iteration {i + 1}/{a.iterations}")
            for key, _, rt, env in plan:
                check_stop()
                safe_cycle(rt, raw[key], sample_mem=key != "minipod_nocache", env=env)
            load.sample()

        if not a.no_resident:
            log("minipod with a resident pod (bridge + NAT already up)")
            mp.start_resident()
            try:
                r: dict = {}
                ra: dict = {}
                for _ in range(a.warmup):
                    cycle(mp, {}, sample_mem=False, env=mp.env)
                    cycle(mp, {}, sample_mem=False, env=mp.env_agent)
                for i in range(a.iterations):  # interleaved, as the main rows are
                    check_stop()
                    safe_cycle(mp, r, sample_mem=True, env=mp.env)
                    safe_cycle(mp, ra, sample_mem=True, env=mp.env_agent)
                    load.sample()
                raw["minipod_resident"] = r
                res["runtimes"]["minipod_resident"] = {
                    "label": "minipod, bridge already up (**)"}
                raw["minipod_agent_resident"] = ra
                res["runtimes"]["minipod_agent_resident"] = {
                    "label": "minipod via the agent, bridge up (**)"}
            finally:
                mp.stop_resident()
            load.sample()

        for key, r in raw.items():
            out = res["runtimes"][key]
            for k in ("up", "down", "cycle"):
                out[k] = stats(r.get(k, []))
                out[k + "_raw"] = r.get(k, [])
            if r.get("mem"):
                out["memory"] = mem_summary(r["mem"])
            if r.get("extra_processes"):
                out["extra_processes"] = r["extra_processes"][:3]
            out["failures"] = r.get("failures", [])
        # keep the table order: minipod rows first
        order = ["minipod", "minipod_agent", "minipod_resident", "minipod_agent_resident",
                 "minipod_nocache", "podman", "podman_kube", "floor"]
        res["runtimes"] = {k: res["runtimes"][k] for k in order if k in res["runtimes"]}

        log("CLI cost alone")
        cli_runs = [("python -c pass (interpreter floor)", [PY, "-c", "pass"], mp.env),
                    ("python -I -S -c pass", [PY, "-I", "-S", "-c", "pass"], mp.env),
                    ("minipod version", [MINIPOD, "version"], mp.env),
                    ("minipod ps (no pods)", [MINIPOD, "ps"], mp.env),
                    ("minipod ps (no pods), agent warm", [MINIPOD, "ps"], mp.env_agent),
                    ("minipod validate pod.yaml", [MINIPOD, "validate", mp.spec("bench")],
                     mp.env),
                    ("minipod validate pod.yaml, agent warm",
                     [MINIPOD, "validate", mp.spec("bench")], mp.env_agent),
                    ("minipod version, no bytecode cache (*)", [MINIPOD, "version"],
                     mp.env_nocache),
                    ("minipod validate, no bytecode cache (*)",
                     [MINIPOD, "validate", mp.spec("bench")], mp.env_nocache)]
        if podman_ok:
            cli_runs += [("podman version", ["podman", "version"], pm.env),
                         ("podman ps", ["podman", "ps"], pm.env)]
        for name, argv_, env in cli_runs:
            xs = []
            for _ in range(a.cli_iterations + 1):
                check_stop()
                xs.append(run(argv_, env=env).check().seconds)
            res["cli"][name] = stats(xs[1:])
        mp.start_resident()
        try:
            xs = []
            for _ in range(a.cli_iterations + 1):
                xs.append(run([MINIPOD, "ps"], env=mp.env).check().seconds)
            res["cli"]["minipod ps (1 pod)"] = stats(xs[1:])
            xs = []
            for _ in range(a.cli_iterations + 1):
                xs.append(run([MINIPOD, "ps"], env=mp.env_agent).check().seconds)
            res["cli"]["minipod ps (1 pod), agent warm"] = stats(xs[1:])
            if podman_ok:
                xs = []
                for _ in range(a.cli_iterations + 1):
                    xs.append(run(["podman", "ps"], env=pm.env).check().seconds)
                res["cli"]["podman ps (after the others, for the ratio)"] = stats(xs[1:])
        finally:
            mp.stop_resident()
        res["agent"] = {"pid": agent_pid, "restarted": mp.agent_pid() != agent_pid,
                        "memory": smaps(mp.agent_pid())}

        if a.density:
            log(f"density: {a.density} pods one after another, via the agent and without")
            res["density"] = {"agent": density(mp, a.density, mp.env_agent)}
            run([MINIPOD, "daemon", "stop"], env=mp.env).check()  # not counted in the next
            res["density"]["in-process"] = density(mp, a.density, mp.env)

        if a.trace:
            log(f"{a.trace} traced minipod cycles (attribution)")
            res["trace"] = traced_cycles(mp, a.trace, a.work)
            log(f"{a.trace} traced cycles through the agent")
            res["trace_agent"] = traced_agent_cycles(mp, a.trace, a.work)
    except Interrupted:
        log("interrupted")
        code = 130
    except Exception as e:  # noqa: BLE001 - report, clean up, fail
        log(f"failed: {type(e).__name__}: {e}")
        code = 1
    finally:
        load.sample()
        res["load"] = load.summary()
        log("cleaning up")
        cleanup()
        reap()
        diff = host_diff(host_before, host_snapshot(), a.tag)
        res["host_diff"] = diff
        if diff:
            log("the host differs from before the run (other sessions also change it):")
            for d in diff[:40]:
                log("  " + d)
        else:
            log("host state after cleanup: as before (links, iptables, mounts, cgroups, "
                "/run, /var/lib, /var/tmp, /etc/cni, /etc/containers, /dev/shm)")
    if code == 0:
        print_report(res)
        print("\n(*) PYTHONDONTWRITEBYTECODE=1, as in this machine's sessions: minipod's own "
              "modules are compiled from source on every call (site-packages have .pyc).")
        print("(**) a second pod keeps the bridge and NAT rules up, as podman's CNI bridge "
              "stays up between pods.")
        print("(***) MINIPOD_AGENT=1 with the node agent already warm: `run -d` and `rm -f` "
              "are served by a fork of it, the pod's supervisor is forked, not exec'd. The "
              "other minipod rows run with MINIPOD_AGENT=0 (in-process, as before the agent).")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
            log(f"results written to {a.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
