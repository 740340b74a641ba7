"""The pod sandbox: a process that holds the pod's namespaces and does nothing else (pause)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NoReturn

from minipod.kernel import _libc, mounts, ns, nspin, sysctl
from minipod.kernel._libc import MS_NODEV, MS_NOEXEC, MS_NOSUID
from minipod.net import netns
from minipod.pod import child


@dataclass
class Sandbox:
    pid: int


def start(plan, pause_argv: list[str], join_cgroup, pinned=None) -> Sandbox:
    """Fork the sandbox, let it unshare, put it in its cgroup, and let it exec pause: begin()
    and Starting.finish() one after the other."""
    return begin(plan, pause_argv, pinned).finish(join_cgroup)


def begin(plan, pause_argv: list[str], pinned=None) -> "Starting":
    """Fork the sandbox and return once its namespaces are complete (its hostname, sysctls and
    /dev/shm made): pause's PID is known, and containers may join its namespaces and the
    network be set up in its netns, while it waits for Starting.finish() to put it in its
    cgroup and exec.

    `pinned` (a pod/pinned.Pinned): the pod's net/ipc/uts are pinned already, and pause only
    holds its PID namespace (shareProcessNamespace in pinned mode): it joins the pins and
    unshares pid alone -- the hostname, the sysctls and /dev/shm are the pins' already.
    """
    if pinned is not None:
        return _start_pid_holder(plan, pause_argv, pinned)
    supervisor = os.getpid()
    # The node's namespaces the pod asked for are simply not unshared (hostNetwork takes the
    # node's UTS namespace too, as containerd does). Without hostPID the sandbox gets a PID
    # namespace of its own with pause as its PID 1, as containerd gives it; containers join it
    # only with shareProcessNamespace.
    host_net, host_ipc, own_pid = plan.host_network, plan.host_ipc, not plan.host_pid
    types = (["mnt"] + ([] if host_net else ["net", "uts"]) + ([] if host_ipc else ["ipc"])
             + (["pid"] if own_pid else []))

    def body(ch: child.Channel) -> None:
        os.setsid()  # out of the terminal's process group: Ctrl-C goes to the supervisor only
        ch.stage = "unshare " + ",".join(types)
        ns.unshare(*types)
        # Our own mount namespace holds the pod's /dev/shm without a host mount: it disappears
        # with the sandbox, even if nobody cleans up. Private first, or the tmpfs would
        # propagate to the host's /dev/shm through a shared /.
        mounts.make_private("/")
        # The copy holds every pod's pinned netns (/run/netns/...); a private copy would keep
        # them alive after their pods unpinned them. They are not ours to hold.
        ch.stage = "detach the copies of pinned network namespaces"
        netns.detach_copies()
        # And of every pinned pod's namespaces and /dev/shm (pod/pinned.py), for the same reason.
        nspin.detach_copies(plan.sandboxes_dir)
        if not host_net:  # never the node's hostname
            ch.stage = "set the hostname"
            _libc.sethostname(plan.hostname)
        # The pod's sysctls, in its own net and ipc namespaces now that they exist and before
        # any container starts (what the runtime does for the sandbox, so every container sees
        # them). The names were checked against the kubelet's safe set at validation, which
        # also refuses them for a pod in the node's net or ipc namespace.
        for name, value in plan.security.sysctls:
            ch.stage = f"set sysctl {name}"
            sysctl.write(name, value)
        if not host_ipc:
            # With hostIPC the pod shares the node's /dev/shm, as containerd does.
            ch.stage = "mount the pod's /dev/shm"
            mounts.mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         f"mode=1777,size={plan.shm_size}")
        if own_pid:
            # unshare(CLONE_NEWPID) applies to children: pause must be the next child, so it
            # becomes PID 1 of the pod and reaps every container's orphans.
            pid = os.fork()
            if pid:
                ch.send(f"P {pid}")
                os._exit(0)
            ch.stage = "wait for the supervisor"
            ch.wait_go()
            child.die_with_parent(None)
        else:
            child.die_with_parent(supervisor)
        _exec_pause(ch, pause_argv)

    return _begin(child.fork(body), own_pid)


def _start_pid_holder(plan, pause_argv: list[str], pinned) -> "Starting":
    """pause as PID 1 of the pod's PID namespace, in the pinned net/ipc/uts (start())."""

    def body(ch: child.Channel) -> None:
        os.setsid()
        ch.stage = "join the pinned namespaces"
        ns.join_files(list(pinned.files.items()))
        ch.stage = "unshare pid"
        ns.unshare("pid")
        pid = os.fork()  # the next child is PID 1 of the new PID namespace
        if pid:
            ch.send(f"P {pid}")
            os._exit(0)
        ch.stage = "wait for the supervisor"
        ch.wait_go()
        child.die_with_parent(None)
        _exec_pause(ch, pause_argv)

    return _begin(child.fork(body), True)


def _exec_pause(ch: child.Channel, pause_argv: list[str]) -> NoReturn:
    """The sandbox child's last steps, in the pod's namespaces: wait in the pod's cgroup, exec."""
    child.set_oom_score_adj(-998)  # containerd's value for sandboxes
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):  # pause only warns that it is not PID 1; nobody reads it
        os.dup2(devnull, fd)
    child.close_fds_except(ch.keep_fds())
    ch.stage = "wait for the cgroup"
    ch.send("R")
    ch.wait_go()
    ch.stage = "exec pause"
    os.execv(pause_argv[0], pause_argv)


def _begin(h, intermediate: bool) -> "Starting":
    """The supervisor's side of a sandbox child's start, up to its namespaces: with an
    `intermediate` (a PID namespace of its own: pause is its child, PID 1 there) reap it once
    its "P" says pause exists; then pause's "R" says it waits to exec. Never return earlier:
    without an intermediate the child may not have unshared yet, and the netns be ours."""
    try:
        pid = h.pid
        if intermediate:
            pid = int(h.expect("P "))
            os.waitpid(h.pid, 0)  # reaped before pause may set its death signal
            h.pid = pid  # from now on the child is pause (our child: we are a subreaper)
            h.go()
        h.expect("R")
        return Starting(h, pid)
    except BaseException:
        h.close()
        h.kill()
        raise


class Starting:
    """A sandbox whose namespaces exist and whose pause has not exec'd yet (see begin())."""

    def __init__(self, h, pid: int):
        self.h = h
        self.pid = pid

    def finish(self, join_cgroup) -> Sandbox:
        """join_cgroup(pid) runs once the child's set-up is done and just before it execs: the
        pod's cgroup may be throttled hard (`cpu: 1n` is 1 ms per 100 ms), and the kubelet's
        set-up work is never charged to the pod. Only pause itself runs there."""
        h = self.h
        try:
            join_cgroup(self.pid)
            h.go()
            if h.read() is not None:
                raise child.ChildError("unexpected report from the sandbox")
            return Sandbox(self.pid)
        except BaseException:
            self.abort()
            raise
        finally:
            h.close()

    def abort(self) -> None:
        """Give up on it: closing the go pipe makes a child waiting for its go exit."""
        self.h.close()
        self.h.kill()
