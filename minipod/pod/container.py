"""Start one container: fork -> join the sandbox -> unshare -> rootfs -> wait -> exec.

Two processes, as in runc: A joins the sandbox's namespaces and unshares mnt (+pid), but
unshare(CLONE_NEWPID) only applies to A's children, so A forks B -- PID 1 of the new PID
namespace -- and exits. The supervisor is a child subreaper, so B becomes its child and the
supervisor reaps it like any other. B builds the root filesystem, reports ready, waits for the
go (the network must be up before the workload runs, as with the kubelet's CNI ADD), makes its
own cgroup namespace and /sys/fs/cgroup (it is in its cgroup by then), and execs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from dataclasses import dataclass

from minipod.cgroups import nsmount
from minipod.kernel import mounts, ns, nspin
from minipod.net import netns
from minipod.pod import child, enter, rootfs
from minipod.pod.volumes.podip import fill_pod_ip

if TYPE_CHECKING:
    from minipod.pod.plan import ContainerPlan


@dataclass
class Started:
    pid: int     # the container's PID 1, as the host sees it
    stdout: int  # read ends of its output pipes
    stderr: int


class Pending:
    """A container whose process is ready to exec and waits for release()."""

    def __init__(self, name: str, handle: child.Handle, pid: int, out: int, err: int):
        self.name = name
        self.handle = handle
        self.pid = pid
        self.out = out
        self.err = err

    def release(self, pod_ip: str = "") -> Started:
        """Let it exec; raise ChildError if exec fails (missing binary, bad user...). `pod_ip`
        goes with the go: status.podIP in its env and argv is only known now (volumes/env.py)."""
        try:
            self.handle.go(pod_ip)
            line = self.handle.read()
            if line is not None:
                raise child.ChildError(f"unexpected report {line!r}")
            return Started(self.pid, self.out, self.err)
        except BaseException:
            self.abort()
            raise
        finally:
            self.handle.close()

    def abort(self) -> None:
        self.handle.close()  # a child blocked in wait_go() exits on EOF
        for fd in (self.out, self.err):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass


def prepare(c: ContainerPlan, sandbox_pid: int, share_pid: bool, join_cgroup, *,
            host_pid: bool, cgroupfs: list | None, pinned=None,
            sandboxes_dir: str = "") -> Pending:
    """Fork container `c` up to just before exec. `cgroupfs`: cgroups.nsmount.layout().

    `pinned` (pod/pinned.Pinned, with `sandboxes_dir` where every pod's pins are): the pod's
    net/ipc/uts are joined from their pins, and `sandbox_pid` (0 if none) holds only the PID
    namespace shareProcessNamespace joins."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # shareProcessNamespace joins the sandbox's PID namespace (the node's with hostPID: the
    # node's wins, as with the kubelet); hostPID alone stays in ours, the node's.
    join = ["ipc", "uts", "net"] + (["pid"] if share_pid else [])
    own_pid = not share_pid and not host_pid

    def stage_a(ch: child.Channel) -> None:
        os.setsid()  # containers never get the terminal's signals (Ctrl-C is for minipod)
        os.close(out_r)
        os.close(err_r)
        if pinned is None:
            ch.stage = "join the sandbox's namespaces"
            # mnt last: setns(mnt) changes our root, and the others are opened through /proc
            # first. Joining the sandbox's mount namespace before unsharing our own gives us a
            # copy of it, which holds the pod's /dev/shm. Non-dumpable first (see enter.py):
            # with shareProcessNamespace, the pod's other containers see us until we exec.
            enter.join(sandbox_pid, join + ["mnt"])
        else:
            ch.stage = "join the pinned namespaces"
            enter.before_join()
            files = [(t, pinned.files[t]) for t in ("ipc", "uts", "net") if t in pinned.files]
            if share_pid and sandbox_pid:  # pause holds the pod's PID namespace
                files.append(("pid", f"/proc/{sandbox_pid}/ns/pid"))
            if files:
                ns.join_files(files)
        ch.stage = "unshare mnt" + (",pid" if own_pid else "")
        ns.unshare("mnt", "pid") if own_pid else ns.unshare("mnt")
        if pinned is not None:
            # No sandbox mount namespace to copy: ours is a copy of the host's. Private first,
            # or our mounts would propagate to the host through a shared /; then without the
            # copies of every pod's pins (our own pod's stay: /dev/shm is bound from there), or
            # a recursive bind of a hostPath could keep another pod's namespaces alive.
            ch.stage = "make the mount namespace private"
            mounts.make_private("/")
            ch.stage = "detach the copies of other pods' pins"
            netns.detach_copies()
            nspin.detach_copies(sandboxes_dir, keep=pinned.dir)
        pid = os.fork()
        if pid == 0:
            stage_b(ch)
            return
        ch.send(f"P {pid}")
        os._exit(0)

    def stage_b(ch: child.Channel) -> None:
        ch.stage = "set up the root filesystem"
        rootfs.build(c, shm=pinned.shm if pinned is not None and pinned.shm else "/dev/shm")
        ch.stage = f"working directory {c.cwd}"
        os.makedirs(c.cwd, exist_ok=True)  # as runc does: a missing cwd is created
        ch.stage = "set up stdio"
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        ch.send("R")
        pod_ip = ch.wait_go_payload()
        # The parent has put us in the container's cgroup (it does so only after "R", so that
        # the set-up above is not charged to the container). Only now can our cgroup namespace
        # have that cgroup as its root, and only inside it does a cgroup mount show that root:
        # so unshare and mount here, after the go -- a few syscalls charged to the container --
        # and before become() drops CAP_SYS_ADMIN.
        ch.stage = "unshare cgroup"
        ns.unshare("cgroup")
        ch.stage = "mount /sys/fs/cgroup"
        nsmount.mount(cgroupfs, readonly=not c.privileged)
        ch.stage = "enter the container"
        env = enter.become(c, ch.keep_fds(), pod_ip)
        argv = fill_pod_ip(c.argv, pod_ip)
        ch.stage = f"exec {argv[0]}"
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            ch.send("E " + child.exec_error(c.argv[0], e))
            os._exit(127)

    h = child.fork(stage_a)
    os.close(out_w)
    os.close(err_w)
    try:
        # "P <pid>" (from A) and "R" (from B) race each other: B may be ready before A,
        # which forked it, gets to report its PID.
        got: dict[str, str] = {}
        while len(got) < 2:
            line = h.read()
            if line is None:
                raise child.ChildError("the process exited before it was ready")
            got[line[:1]] = line[2:]
        pid = int(got["P"])
        os.waitpid(h.pid, 0)  # A is done; B is ours now (subreaper) and may set its death signal
        # Only now into the container's cgroup, with the root built and B waiting to exec: the
        # set-up above is the runtime's work, and a pod limited to `cpu: 1n` (1 ms per 100 ms)
        # took seconds to start when it was charged to the container.
        join_cgroup(pid)
        return Pending(c.name, h, pid, out_r, err_r)
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        h.close()
        try:
            os.kill(h.pid, 9)
            os.waitpid(h.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
