"""The orchestrator: the one place that knows the order of the steps that build and remove a pod.

    setup:    directories -> cgroups -> sandbox -> network (in a helper process, in parallel
              with the containers' rootfs work) -> /etc files -> release the containers
    teardown: kill everything in the pod's cgroup -> network -> cgroups -> directories

Why this order: the sandbox must exist before the network (the veth goes into its netns) and
before the containers (they setns into it); the containers' processes must wait for the network
(the kubelet runs CNI ADD before it creates containers) but their mount work need not, so it
overlaps with the slow part, pyroute2. Teardown kills first because the cgroups can only be
removed empty and the veth dies with the netns; it is idempotent (gone = done), so it serves a
normal stop, a rollback, the janitor after a crash, and `rm` alike.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import time

from minipod import trace
from minipod.cgroups import CgroupBusy, Driver, Limits
from minipod.errors import MinipodError, SetupError
from minipod.kernel.lock import flock
from minipod.pod import child, container, sandbox
from minipod.pod.plan import ContainerPlan, PodPlan, hosts_file
from minipod.rollback import Rollback


class Pod:
    def __init__(self, plan: PodPlan, driver: Driver, pause_argv: list[str]):
        self.plan = plan
        self.driver = driver
        self.pause_argv = pause_argv
        self.sandbox_pid = 0
        self.network: dict = {}

    # --- setup -----------------------------------------------------------------------------

    def setup(self, agent, first: list[ContainerPlan]) -> list[tuple[ContainerPlan, container.Started]]:
        """Build the pod and start the containers `first`. Rolls back on failure."""
        with Rollback() as rb:
            rb.push("pod directories", self.remove_dirs)
            self._make_dirs()
            rb.push("cgroups", self.remove_cgroups)
            self._make_cgroups()
            trace.mark("pod: cgroups")
            rb.push("sandbox", self.kill_all)
            self._start_sandbox()
            trace.mark("pod: sandbox")
            # The containers' mount work first: meanwhile the agent finishes importing pyroute2
            # (the daemon started it while the CLI was validating). They wait before exec.
            pending = []
            rb.push("containers", lambda: [x.abort() for x in pending])
            for c in first:
                pending.append(self.prepare(c))
            trace.mark("pod: containers prepared")
            rb.push("network", lambda: self._net_teardown(agent))
            self._attach_network(agent)
            trace.mark("pod: network")
            started = [(c, self._run(f'start container "{c.name}"', x.release))
                       for c, x in zip(first, pending)]
            pending.clear()
            rb.commit()
        return started

    def rebuild_sandbox(self) -> None:
        """After pause died (and took the netns and the veth with it): release what is left of
        the old network, then a new sandbox and network, as the kubelet re-creates a sandbox."""
        from minipod.net import agent as agentmod

        agent = agentmod.start()  # never pyroute2 in the supervisor: it forks after this
        try:
            self._net_teardown(agent)
            self._start_sandbox()
            self._attach_network(agent)
        finally:
            agent.close()

    def _start_sandbox(self) -> None:
        p = self.plan
        self.sandbox_pid = self._run("start the sandbox", lambda: sandbox.start(
            p, self.pause_argv, lambda pid: self.driver.join(p.sandbox_cgroup, pid))).pid

    def _attach_network(self, agent) -> None:
        """The veth into the sandbox's netns, an IP; then the /etc files that name the IP."""
        p = self.plan
        att = self._run("set up the network", lambda: agent.setup_pod(
            self.net_config(), p.uid, self.sandbox_pid, p.host_veth))
        self.network = dataclasses.asdict(att)
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
        for m in {m.source for c in p.all_containers() for m in c.mounts if m.kind == "bind"}:
            os.makedirs(m, exist_ok=True)
        if p.security.fs_group is not None:
            # Before any container starts, so the workload finds its volumes writable by group.
            from minipod.pod import fsgroup

            for root in {m.source_root for c in p.all_containers() for m in c.mounts
                         if m.source_root}:
                fsgroup.apply(root, p.security.fs_group, p.security.fs_group_change_policy)

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
        files = {
            "hosts": hosts_file(self.network.get("ip", ""), p.hostname, p.subdomain,
                                p.namespace, p.host_aliases),
            "hostname": p.hostname + "\n",
            "resolv.conf": p.resolv_conf,
        }
        for name, text in files.items():
            with open(os.path.join(etc, name), "r+") as f:  # in place: see _make_dirs
                f.truncate(0)
                f.write(text)

    def prepare(self, c: ContainerPlan) -> container.Pending:
        return self._run(f'create container "{c.name}"', lambda: container.prepare(
            c, self.sandbox_pid, self.plan.share_pid,
            lambda pid: self.driver.join(c.cgroup, pid)))

    def start(self, c: ContainerPlan) -> container.Started:
        """(Re)start one container in the running pod."""
        pending = self.prepare(c)
        return self._run(f'start container "{c.name}"', pending.release)

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
        self._net_teardown(agent)
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
            self.driver.kill(self.plan.pod_cgroup, signal.SIGKILL)
            if self.sandbox_pid:
                _signal(self.sandbox_pid, signal.SIGKILL)
            reap()
            if time.monotonic() > deadline:
                raise SetupError(f"processes {pids} of pod {self.plan.name} would not die")
            time.sleep(0.005)
        reap()

    def _net_teardown(self, agent=None) -> None:
        cfg, p = self.net_config(), self.plan
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
