"""The orchestrator: the one place that knows the order of the steps that build and remove a pod.

    setup:    directories -> volumes -> cgroups -> sandbox (pause, or pinned namespaces) ->
              its netns named (/run/netns) -> the containers' processes, up to their exec ->
              network (in a helper process: its lease, bridge and NAT from the start, its veth
              once the netns exists) -> /etc files -> release the containers (with the pod IP
              their env may name)
    teardown: kill everything in the pod's cgroup -> netns name -> pins -> network ->
              cgroups -> directories

Why this order: the sandbox must exist before the network (the veth goes into its netns) and
before the containers (they setns into it); the containers' processes must wait for the network
(the kubelet runs CNI ADD before it creates containers) but their mount work need not, so it
overlaps with the slow part, the network; and the sandbox's namespaces are complete before its
pause is in its cgroup and exec'd, so the veth and the containers need not wait for that.
Teardown kills first because the cgroups can only be removed empty and the veth dies with the
netns -- once its name, which holds it, is gone. It is idempotent (gone = done), so it serves a
normal stop, a rollback, the janitor after a crash, and `rm` alike.

In pinned mode (pod/pinned.py) the sandbox step pins net/ipc/uts by bind mounts and no pause
runs (unless shareProcessNamespace needs one for the PID namespace, started after the pins and
joining them); every later step is the same, given the pins' files where it was given pause's
PID. Teardown unpins after the name, for the same reason: the pins hold the netns.

Volumes come before the sandbox because its mount namespace is private: a tmpfs (a secret's)
mounted on the host later would never reach the containers. The containers' env is planned
before the network exists, so status.podIP travels with the go that releases each process to
exec (pod/volumes/env.py): the one point where the IP is known and nothing has run yet.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import time

from minipod import explain, stepping, trace
from minipod.cgroups import CgroupBusy, Driver, Limits
from minipod.errors import MinipodError, SetupError
from minipod.kernel import pidfd
from minipod.kernel.lock import flock
from minipod.pod import child, container, pinned, sandbox
from minipod.pod.plan import ContainerPlan, PodPlan, host_network_hosts_file, hosts_file
from minipod.pod.volumes import setup as volsetup
from minipod.rollback import Rollback


class Pod:
    def __init__(self, plan: PodPlan, driver: Driver, pause_argv: list[str]):
        self.plan = plan
        self.driver = driver
        self.pause_argv = pause_argv
        self.sandbox_pid = 0
        self.network: dict = {}
        self.pinned: pinned.Pinned | None = None  # pinned mode: what holds the namespaces

    # --- setup -----------------------------------------------------------------------------

    def setup(self, agent, first: list[ContainerPlan]) -> list[tuple[ContainerPlan, container.Started]]:
        """Build the pod and start the containers `first`. Rolls back on failure."""
        # With --explain or --step the stages stay one after another, so that what each one says
        # is what it did. Otherwise work that does not depend on each other overlaps (below).
        overlap = not (explain.ON or stepping.ON)
        with Rollback() as rb:
            rb.push("pod directories", self.remove_dirs)
            # The network agent (another process) makes the lease, the bridge and the NAT while
            # we build the pod: they need no netns (the veth will). The undo is pushed first:
            # teardown is idempotent, and the agent answers before it is asked to undo.
            rb.push("network", lambda: self._net_teardown(agent))
            if overlap:
                self._send_lease(agent)
            self._make_dirs()
            # Volumes before the sandbox: its mount namespace is private, so a tmpfs mounted
            # after it would never be seen by the containers (copies of that namespace).
            self._run("set up volumes", lambda: volsetup.make(
                self.plan.volumes, rb.push))
            self._run("give the volumes to the fsGroup", self._apply_fs_group)
            rb.push("cgroups", self.remove_cgroups)
            explain.stage("cgroups")
            self._make_cgroups()
            trace.mark("pod: cgroups")
            if stepping.ON:
                self._stop_after("cgroups")
            rb.push("sandbox", self.kill_all)
            explain.stage("sandbox")
            # The sandbox's namespaces exist before pause is in its cgroup and has exec'd. The
            # agent plugs the veth into its netns, and the containers' processes join it and
            # build their root filesystems, while we put pause in its cgroup (on cgroup v1 the
            # first move waits for an RCU grace period, ~10 ms) and then take the containers:
            # none of these needs another until the containers exec, and they wait for that.
            starting = self._begin_sandbox(rb.push)
            if starting is not None:  # its pipes, and pause if it never gets to exec
                rb.push("the sandbox's start", starting.abort)
            if not overlap:
                self._finish_sandbox(starting)
            rb.push("netns name", self._unpin_netns)
            self._pin_netns()
            pending: list = []  # container.Forked, then container.Pending
            rb.push("containers", lambda: [x.abort() for x in pending])
            if overlap:
                self._send_network(agent, leased=True)
                for c in first:  # each in the list as soon as it exists: its abort's
                    pending.append(self.fork_container(c))
                self._finish_sandbox(starting)
            elif stepping.ON:
                self._stop_after("sandbox")
            for i, c in enumerate(first):
                explain.stage(f"container {c.name}: namespaces and root filesystem")
                if not overlap:
                    pending.append(self.fork_container(c))
                pending[i] = self.prepare(c, forked=pending[i])
            trace.mark("pod: containers prepared")
            explain.stage("network")
            if not overlap:
                self._send_network(agent)
            self._finish_network(agent, leased=overlap)
            trace.mark("pod: network")
            if stepping.ON:
                self._stop_after("network")
            # Released only now: status.podIP in their env is the address just leased. They
            # exec side by side, and are then waited for in order.
            ip = self.network.get("ip", "")
            if overlap:
                for c, x in zip(first, pending):
                    self._run(f'start container "{c.name}"', lambda x=x: x.go(ip))
            started = []
            for c, x in zip(first, pending):
                explain.stage(f"container {c.name}: start")
                if not overlap:
                    self._run(f'start container "{c.name}"', lambda x=x: x.go(ip))
                started.append((c, self._run(f'start container "{c.name}"', x.wait)))
                if explain.ON:
                    self._explain_started(c, started[-1][1].pid)
                if stepping.ON:
                    self._stop_after(f"container {c.name}", c, started[-1][1].pid)
            pending.clear()
            rb.commit()
        return started

    def rebuild_sandbox(self) -> None:
        """After pause died (and took the netns and the veth with it): release what is left of
        the old network, then a new sandbox and network, as the kubelet re-creates a sandbox."""
        from minipod.net import agent as agentmod

        agent = agentmod.start()  # never pyroute2 in the supervisor: it forks after this
        try:
            self._unpin_netns()  # the pin keeps the old netns (and its veth end) alive
            self._unpin_sandbox()  # and so do the pinned namespaces (pinned mode)
            self._net_teardown(agent)
            self._start_sandbox()
            self._pin_netns()
            self._send_network(agent)
            self._finish_network(agent)
        finally:
            agent.close()

    def _start_sandbox(self, push=None) -> None:
        self._finish_sandbox(self._begin_sandbox(push))

    def _begin_sandbox(self, push=None):
        """pause (pause mode), or the pinned namespaces and, if the pod needs one for its PID
        namespace, a pause that joins them (pinned mode), up to pause's exec: the sandbox's
        namespaces are complete and sandbox_pid is known (sandbox.begin), or None when no
        pause runs. `push`: the rollback's, for the pins' undo steps (a rebuild has none: on
        failure the supervisor tears down)."""
        p = self.plan
        if p.sandbox_mode == "pinned":
            if push is None:
                push = lambda what, undo: None  # noqa: E731 - teardown removes the pins
            self.pinned = self._run("pin the sandbox's namespaces", lambda: pinned.pin(p, push))
            if not p.keeps_pause:
                return None
        starting = self._run("start the sandbox", lambda: sandbox.begin(
            p, self.pause_argv, self.pinned))
        self.sandbox_pid = starting.pid  # kill_all's, should anything fail from here on
        return starting

    def _finish_sandbox(self, starting) -> None:
        """pause into the sandbox's cgroup, and exec'd."""
        if starting is None:
            return
        p = self.plan
        self._run("start the sandbox", lambda: starting.finish(
            lambda pid: self.driver.join(p.sandbox_cgroup, pid)))
        trace.mark("pod: sandbox")
        if explain.ON:
            held = explain.inodes(self.sandbox_pid, ["net", "ipc", "uts"])
            why = (" (only for the pod's PID namespace: shareProcessNamespace)"
                   if self.pinned is not None else "")
            explain.say(f"pause runs as PID {self.sandbox_pid}{why}, holding "
                        + " ".join(f"{t}:[{i}]" for t, i in held.items()),
                        f"execve({self.pause_argv[0]!r})",
                        f"exec {' '.join(self.pause_argv)}", pid=self.sandbox_pid,
                        inodes=held)

    def _unpin_sandbox(self) -> None:
        if self.plan.pin_dir:
            pinned.unpin(self.plan.pin_dir)
        self.pinned = None

    def held(self) -> dict[str, int]:
        """The pod's net/ipc/uts inodes, from what holds them (pins or pause)."""
        if self.pinned is not None:
            return {t: i for t, i in self.pinned.inodes().items() if i}
        return explain.inodes(self.sandbox_pid, ["net", "ipc", "uts"]) if self.sandbox_pid \
            else {}

    def netns_file(self) -> str:
        """The file that names the pod's netns for the network's set-up and views."""
        if self.pinned is not None and "net" in self.pinned.files:
            return self.pinned.files["net"]
        return f"/proc/{self.sandbox_pid}/ns/net"

    def _stop_after(self, stage: str, c: ContainerPlan | None = None, pid: int = 0) -> None:
        """`run --step`: what the stage made, and commands that show it."""
        p, sb = self.plan, self.sandbox_pid
        if stage == "cgroups":
            def main(g: str) -> str:  # v1: one controller's tree stands for all of them
                paths = self.driver.paths(g)
                return paths.get("memory") or paths.get("unified") or next(iter(paths.values()))

            groups = [p.pod_cgroup, p.sandbox_cgroup, *(x.cgroup for x in p.all_containers())]
            d = main(p.pod_cgroup)
            others = sorted(set(self.driver.paths(p.pod_cgroup)) - {"memory", "unified"})
            exists = [f"cgroup {main(g)}" for g in groups]
            if others:
                exists.append(f"and the same groups under the {', '.join(others)} hierarchies")
            exists.append("no process in them yet")
            look = [f"ls {d}", f"cat {d}/cgroup.procs",
                    f"find {os.path.dirname(d)} -maxdepth 2 -type d"]
        elif stage == "sandbox" and self.pinned is not None:
            pn = self.pinned
            held = " ".join(f"{t}:[{i}]" for t, i in self.held().items())
            exists = [f"no process: {held} pinned by bind mounts in {pn.dir}"
                      + (f", the pod's /dev/shm a tmpfs on {pn.shm}" if pn.shm else "")]
            if sb:
                exists.append(f"pause, PID {sb}, only for the pod's PID namespace "
                              "(shareProcessNamespace)")
            exists.append("no container yet, and no network: only lo, down")
            look = [f"findmnt -R {pn.dir}", f"ls -li {pn.dir}"]
            if "net" in pn.files:
                look.append(f"nsenter --net={pn.files['net']} ip link")
            if "uts" in pn.files:
                look.append(f"nsenter --uts={pn.files['uts']} hostname")
        elif stage == "sandbox":
            held = explain.inodes(sb, ["net", "ipc", "uts"])
            exists = [f"pause, PID {sb}, holding " + " ".join(f"{t}:[{i}]" for t, i in
                                                               held.items()),
                      "no container yet, and no network: only lo, down"]
            look = [f"ls -l /proc/{sb}/ns", f"lsns -p {sb}",
                    f"nsenter --target {sb} --net ip link", f"nsenter --target {sb} --uts hostname"]
        elif stage == "network":
            net = self.network
            exists = [f"veth {p.host_veth} on bridge {p.bridge}, its peer eth0 in net:"
                      f"[{self.held().get('net')}] with {net.get('ip')}/"
                      f"{net.get('prefixlen')}, default via {net.get('gateway')}",
                      "the containers' processes in their cgroups, their roots mounted, each "
                      "waiting before exec"]
            enter_net = (f"--net={self.netns_file()}" if self.pinned is not None
                         else f"--target {sb} --net")
            look = [f"ip link show {p.host_veth}", f"ip addr show {p.bridge}",
                    f"nsenter {enter_net} ip addr show eth0",
                    f"ping -c 1 {net.get('ip')}"]
        else:
            assert c is not None
            own = explain.inodes(pid, ["pid", "mnt"])
            held_by = (f"pinned in {self.pinned.dir}" if self.pinned is not None
                       else f"of pause {sb}")
            exists = [f'container "{c.name}": {" ".join(c.argv)!r} as PID {pid} (PID 1 of '
                      f"pid:[{own.get('pid')}]), own mnt:[{own.get('mnt')}], net/ipc/uts "
                      f"{held_by}"]
            look = [f"grep NSpid /proc/{pid}/status", f"ls -l /proc/{pid}/ns",
                    f"nsenter --target {pid} --pid --mount ps",
                    f"cat /proc/{pid}/cgroup"]
        stepping.stop(stage, exists, look)

    def _explain_started(self, c: ContainerPlan, pid: int) -> None:
        """A container's process has exec'd: what it is now, as /proc shows it."""
        try:
            with open(f"/proc/{pid}/status") as f:
                nspid = next(ln.split()[1:] for ln in f if ln.startswith("NSpid:"))
        except (OSError, StopIteration):
            nspid = []
        inodes = explain.inodes(pid, ["net", "ipc", "uts", "pid", "mnt"])
        explain.say(f'container "{c.name}" runs {" ".join(c.argv)!r} as PID {pid} '
                    f"(PID {nspid[-1] if nspid else '?'} in its pid namespace), "
                    + " ".join(f"{t}:[{i}]" for t, i in inodes.items()),
                    f"execve({c.argv[0]!r}, ...)", "exec " + " ".join(c.argv), pid=pid,
                    nspid=[int(x) for x in nspid], inodes=inodes)

    def _pin_netns(self) -> None:
        """Name the pod's netns for `ip netns` (none with hostNetwork: the node's is not ours)."""
        if self.plan.netns:
            from minipod.net import netns

            self._run("name the network namespace", lambda: netns.pin(
                self.sandbox_pid, self.plan.netns, source=self.netns_file()))

    def _unpin_netns(self) -> None:
        from minipod.net import netns

        netns.unpin(self.plan.netns)

    def _send_lease(self, agent) -> None:
        """Ask the network agent for the pod's lease, bridge and NAT (net.lease_pod), which
        need no netns; _send_network(leased=True) asks for the rest."""
        if not self.plan.host_network:
            self._run("set up the network", lambda: agent.send_lease_pod(
                self.net_config(), self.plan.uid))

    def _send_network(self, agent, leased: bool = False) -> None:
        """Ask the network agent for the veth into the sandbox's netns and an IP (or with
        `leased`, the address _send_lease asked for); the answer is _finish_network's."""
        p = self.plan
        if p.host_network:  # no veth, no lease: the pod's IP is the node's, as the kubelet says
            return
        # pause's PID, or in pinned mode the pin's file (no process is in the netns).
        where = self.sandbox_pid if self.pinned is None else self.netns_file()
        self._run("set up the network", lambda: agent.send_setup_pod(
            self.net_config(), p.uid, where, p.host_veth, leased=leased))

    def _finish_network(self, agent, leased: bool = False) -> None:
        """The network's answer (the IP); the hostPorts; then the /etc files that name the IP."""
        p = self.plan
        if p.host_network:
            from minipod.net import node_ip

            self.network = {"ip": node_ip(), "host_network": True}
            self.write_etc_files()
            return
        if leased:  # the lease's answer comes first, and its failure is the one to report
            self._run("set up the network", agent.lease_pod_reply)
        att = self._run("set up the network", agent.setup_pod_reply)
        self.network = dataclasses.asdict(att)
        if p.host_ports:  # reserved by the CLI before the pod was created; now they lead here
            from minipod.net import hostport

            self._run("forward the hostPorts", lambda: hostport.attach(
                p.hostport_dir, p.uid, att.bridge, p.subnet, att.ip))
        self.write_etc_files()

    def _make_dirs(self) -> None:
        p = self.plan
        etc = os.path.join(p.run_dir, "etc")
        os.makedirs(etc, exist_ok=True)
        for f in ("hosts", "hostname", "resolv.conf"):
            # Created now, filled once the IP is known: the containers bind these very inodes,
            # so they are rewritten in place, never replaced.
            open(os.path.join(etc, f), "a").close()
        for c in p.all_containers():
            for d in (c.rootfs, c.upper, c.work, c.log_dir):
                os.makedirs(d, exist_ok=True)
        # (Volumes are made by volsetup.make; a volume's subPath on first use, inside it, by
        # rootfs.py: made here, a subPath of a configMap would hide the key's symlink.)
        for m in {m.source for c in p.all_containers() for m in c.mounts
                  if m.kind == "bind" and not m.source_root}:
            os.makedirs(m, exist_ok=True)

    def _apply_fs_group(self) -> None:
        p = self.plan
        if p.security.fs_group is None:
            return
        # After the volumes exist, before any container starts: the workload finds its volumes
        # writable by group. The volumes the pod owns (emptyDir on disk or in memory, a claim);
        # never a hostPath (the node's files, which the kubelet leaves alone too), nor the
        # read-only content volumes, whose modes are the manifest's (defaultMode, items).
        from minipod.pod import fsgroup

        for v in p.volumes:
            if v["kind"] in ("emptyDir", "memory", "claim"):
                fsgroup.apply(v["dir"], p.security.fs_group, p.security.fs_group_change_policy)

    def _make_cgroups(self) -> None:
        p = self.plan

        def create() -> None:
            # Under the lock until our pod slice exists: from then on the parent is busy and
            # no other pod's teardown can remove it (see remove_cgroups).
            with flock(p.cgroup_lock):
                self.driver.create(p.pod_cgroup, Limits(**p.pod_limits))
            self.driver.create(p.sandbox_cgroup)
            for c in p.all_containers():
                self.driver.create(c.cgroup, Limits(**c.limits))

        self._run("create cgroups", create)

    def net_config(self):
        from minipod.net import NetConfig

        return NetConfig(self.plan.bridge, self.plan.subnet, self.plan.net_state_dir)

    def write_etc_files(self) -> None:
        p = self.plan
        etc = os.path.join(p.run_dir, "etc")
        if p.host_network:
            with open("/etc/hosts") as f:  # the node's, as the kubelet reads it
                hosts = host_network_hosts_file(f.read(), p.host_aliases)
        else:
            hosts = hosts_file(self.network.get("ip", ""), p.hostname, p.subdomain,
                               p.namespace, p.host_aliases)
        files = {
            "hosts": hosts,
            "hostname": p.hostname + "\n",
            "resolv.conf": p.resolv_conf,
        }
        for name, text in files.items():
            with open(os.path.join(etc, name), "r+") as f:  # in place: see _make_dirs
                f.truncate(0)
                f.write(text)

    def fork_container(self, c: ContainerPlan) -> container.Forked:
        """Fork container `c`'s process, which builds its root while we go on (prepare())."""
        p = self.plan
        return self._run(f'create container "{c.name}"', lambda: container.fork(
            c, self.sandbox_pid, p.share_pid, host_pid=p.host_pid, cgroupfs=self.cgroupfs(),
            pinned=self.pinned, sandboxes_dir=p.sandboxes_dir))

    def prepare(self, c: ContainerPlan, forked: container.Forked | None = None) -> container.Pending:
        """Container `c` (forked now, or by fork_container before) ready to exec."""
        forked = forked or self.fork_container(c)
        return self._run(f'create container "{c.name}"', lambda: forked.ready(
            lambda pid: self.driver.join(c.cgroup, pid)))

    def cgroupfs(self):
        """The host's cgroup layout the containers' /sys/fs/cgroup follows (read once)."""
        if not hasattr(self, "_cgroupfs"):
            from minipod.cgroups import nsmount
            from minipod.cgroups.v1 import CONTROLLERS

            self._cgroupfs = nsmount.layout(getattr(self.driver, "root", nsmount.TARGET),
                                            CONTROLLERS)
        return self._cgroupfs

    def start(self, c: ContainerPlan) -> container.Started:
        """(Re)start one container in the running pod."""
        pending = self.prepare(c)
        return self._run(f'start container "{c.name}"',
                         lambda: pending.release(self.network.get("ip", "")))

    @staticmethod
    def _run(what: str, fn):
        """Name the step in the error. Anything else than our errors or the kernel's is a bug
        and keeps its traceback."""
        try:
            return fn()
        except MinipodError as e:
            raise SetupError(f"{what}: {e}") from None
        except OSError as e:
            raise SetupError(f"{what}: {child.describe(e)}") from None

    # --- teardown ----------------------------------------------------------------------------

    def teardown(self, agent=None, remove_data: bool = False) -> None:
        """Remove everything the pod holds on the host. Safe to run any number of times."""
        self.kill_all()
        volsetup.unmount_all(self.plan.volumes)  # the tmpfs of secrets and memory emptyDirs
        # The name first: it holds the netns, and with it the pod's end of the veth; then the
        # pins (pinned mode), which hold it too.
        self._unpin_netns()
        self._unpin_sandbox()
        self._net_teardown(agent)
        # The reservation outlives a re-created sandbox (rebuild_sandbox), not the pod.
        from minipod.net import hostport

        hostport.release(self.plan.hostport_dir, self.plan.uid)
        self.remove_cgroups()
        shutil.rmtree(os.path.join(self.plan.run_dir, "rootfs"), ignore_errors=True)
        if remove_data:
            self.remove_dirs()

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every process in the pod's cgroup and reap those that are our children."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.driver.procs(self.plan.pod_cgroup)
            if self.sandbox_pid:
                pids = pids or ([self.sandbox_pid] if _alive(self.sandbox_pid) else [])
            if not pids:
                break
            # Held before the kill: we then wake the moment the last of them has exited,
            # instead of sleeping and listing the cgroup again and again.
            held = [fd for fd in map(pidfd.open_, pids) if fd is not None]
            try:
                self.driver.kill(self.plan.pod_cgroup, signal.SIGKILL)
                if self.sandbox_pid:
                    _signal(self.sandbox_pid, signal.SIGKILL)
                pidfd.wait_exited(held, 0.1)
            finally:
                for fd in held:
                    os.close(fd)
            reap()
            if time.monotonic() > deadline:
                raise SetupError(f"processes {pids} of pod {self.plan.name} would not die")
        reap()

    def _net_teardown(self, agent=None) -> None:
        cfg, p = self.net_config(), self.plan
        # The DNATs first: they point at the address the network teardown gives back.
        from minipod.net import hostport

        hostport.detach(p.hostport_dir, p.uid)
        if p.host_network:
            return  # nothing was made
        if agent is not None:
            try:
                agent.teardown_pod(cfg, p.uid, p.host_veth)
                return
            except Exception as e:  # noqa: BLE001 - the agent may be gone: do it ourselves
                print(f"minipod: network agent: {e}; tearing down in-process", file=sys.stderr)
        from minipod import net

        net.teardown_pod(cfg, p.uid, p.host_veth)

    def remove_cgroups(self) -> None:
        p = self.plan
        for c in p.all_containers():
            self.driver.remove(c.cgroup)
        self.driver.remove(p.sandbox_cgroup)
        self.driver.remove(p.pod_cgroup)
        # The parent goes with the last pod. Checking "empty" and removing it is not atomic
        # (systemd's StopUnit of a slice would stop a pod slice created in between), so pod
        # creation holds the same lock until its slice exists.
        with flock(p.cgroup_lock):
            try:
                self.driver.remove(p.cgroup_parent)
            except CgroupBusy:
                pass  # other pods live in it

    def remove_dirs(self) -> None:
        shutil.rmtree(self.plan.data_dir, ignore_errors=True)
        shutil.rmtree(os.path.join(self.plan.run_dir, "rootfs"), ignore_errors=True)
        shutil.rmtree(os.path.join(self.plan.run_dir, "etc"), ignore_errors=True)


def reap() -> list[tuple[int, int]]:
    """Reap every exited child without blocking; [(pid, status)]."""
    out = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append((pid, status))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
