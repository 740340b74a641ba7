"""Start one container: fork -> join the sandbox -> unshare -> rootfs -> wait -> exec.

Two processes, as in runc: A joins the sandbox's namespaces and unshares mnt (+pid), but
unshare(CLONE_NEWPID) only applies to A's children, so A forks B -- PID 1 of the new PID
namespace -- and exits. The supervisor is a child subreaper, so B becomes its child and the
supervisor reaps it like any other. B builds the root filesystem, reports ready, waits for the
go (the network must be up before the workload runs, as with the kubelet's CNI ADD), makes its
own cgroup namespace and /sys/fs/cgroup (it is in its cgroup by then), and execs.
"""

from __future__ import annotations

import fcntl
import os
import socket
import termios
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
    """The container's PID 1 and the supervisor's ends of its stdio (-1: none)."""
    pid: int            # as the host sees it
    stdout: int         # read ends of its output pipes (-1 with a tty)
    stderr: int
    stdin: int = -1     # write end of its stdin pipe (stdin without a tty)
    terminal: int = -1  # the pty's master (tty): its output, and its input with stdin


class Pending:
    """A container whose process is ready to exec and waits for release()."""

    def __init__(self, name: str, handle: child.Handle, pid: int, fds: Started):
        self.name = name
        self.handle = handle
        self.pid = pid
        self.fds = fds

    def release(self, pod_ip: str = "") -> Started:
        """Let it exec; raise ChildError if exec fails (missing binary, bad user...). `pod_ip`
        goes with the go: status.podIP in its env and argv is only known now (volumes/env.py).
        go() and wait() in a row: a pod's containers are let go all at once, then waited for."""
        self.go(pod_ip)
        return self.wait()

    def go(self, pod_ip: str = "") -> None:
        try:
            self.handle.go(pod_ip)
        except BaseException:
            self.abort()
            raise

    def wait(self) -> Started:
        """Until it has exec'd (EOF on its report pipe) or said why it could not."""
        try:
            line = self.handle.read()
            if line is not None:
                raise child.ChildError(f"unexpected report {line!r}")
            return self.fds
        except BaseException:
            self.abort()
            raise
        finally:
            self.handle.close()

    def abort(self) -> None:
        self.handle.close()  # a child blocked in wait_go() exits on EOF
        _close(self.fds)
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass


def fork(c: ContainerPlan, sandbox_pid: int, share_pid: bool, *, host_pid: bool,
         cgroupfs: list | None, pinned=None, sandboxes_dir: str = "") -> "Forked":
    """Fork container `c`, which joins the sandbox and builds its root filesystem while the
    caller does other work; Forked.ready() waits for it. `cgroupfs`: cgroups.nsmount.layout().

    `pinned` (pod/pinned.Pinned, with `sandboxes_dir` where every pod's pins are): the pod's
    net/ipc/uts are joined from their pins, and `sandbox_pid` (0 if none) holds only the PID
    namespace shareProcessNamespace joins."""
    # stdio as containerd sets it up. A tty: one pty, opened by the container itself in its own
    # devpts (so `tty` there names /dev/pts/0, which a host pty would not be), its master sent
    # back over a socketpair -- runc's console socket. Otherwise pipes for stdout and stderr,
    # one for stdin if the container has stdin, /dev/null if not.
    ours = theirs = None
    out_r = out_w = err_r = err_w = in_r = in_w = -1
    if c.tty:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        if c.stdin:
            in_r, in_w = os.pipe()
    mine = Started(0, out_r, err_r, in_w)
    # shareProcessNamespace joins the sandbox's PID namespace (the node's with hostPID: the
    # node's wins, as with the kubelet); hostPID alone stays in ours, the node's.
    join = ["ipc", "uts", "net"] + (["pid"] if share_pid else [])
    own_pid = not share_pid and not host_pid

    def stage_a(ch: child.Channel) -> None:
        os.setsid()  # containers never get the terminal's signals (Ctrl-C is for minipod)
        _close(mine)
        if ours is not None:
            ours.close()
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
        if theirs is not None:
            # Before "R": the parent takes the master as soon as we are ready.
            _terminal(theirs, c.user)
        else:
            os.dup2(in_r if in_r >= 0 else os.open("/dev/null", os.O_RDONLY), 0)
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

    try:
        h = child.fork(stage_a)
    except BaseException:
        _close(mine)
        if ours is not None:
            ours.close()
        raise
    finally:
        for fd in (out_w, err_w, in_r):  # the child's ends
            if fd >= 0:
                os.close(fd)
        if theirs is not None:
            theirs.close()
    return Forked(c.name, h, mine, ours)


class Forked:
    """A container's process on its way to "ready" (see fork())."""

    def __init__(self, name: str, h: child.Handle, mine: Started, ours: socket.socket | None):
        self.name = name
        self.h = h
        self.mine = mine
        self.ours = ours  # a tty's console socket: the master comes over it

    def ready(self, join_cgroup) -> Pending:
        """Wait until B is ready to exec, then put it in the container's cgroup."""
        h, mine, ours = self.h, self.mine, self.ours
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
            os.waitpid(h.pid, 0)  # A is done; B is ours now (subreaper), may set its death signal
            h.pid = mine.pid = pid  # the child is B from now on (what a kill must hit)
            if ours is not None:
                mine.terminal = _receive_terminal(ours)
            # Only now into the container's cgroup, with the root built and B waiting to exec:
            # the set-up above is the runtime's work, and a pod limited to `cpu: 1n` (1 ms per
            # 100 ms) took seconds to start when it was charged to the container.
            join_cgroup(pid)
            return Pending(self.name, h, pid, mine)
        except BaseException:
            self.abort()
            raise
        finally:
            if ours is not None:
                ours.close()
            self.ours = None

    def abort(self) -> None:
        """Give up before ready(): B, waiting for its go, exits when the pipe closes."""
        _close(self.mine)
        if self.ours is not None:
            self.ours.close()
            self.ours = None
        self.h.close()
        self.h.kill()


def _terminal(sock: socket.socket, user: str) -> None:
    """In the container (pivoted): open its pty, send the master to the supervisor, and make
    the slave our controlling terminal and stdio. The slave is given to the container's user,
    as runc gives it stdio: a process that reopens /dev/pts/0 (or /proc/self/fd/0) may."""
    master, slave = os.openpty()  # the container's /dev/ptmx -> its devpts (newinstance)
    socket.send_fds(sock, [b"t"], [master])
    os.close(master)
    sock.close()
    try:
        uid, gid, _ = rootfs.lookup_user(user)
        os.fchown(slave, uid, gid)
    except OSError:
        pass  # an unknown user fails later, in enter.become(), with the right words
    os.setsid()  # B is not a group leader (A is): it can lead a session with a terminal
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def _receive_terminal(sock: socket.socket) -> int:
    """The master B sent before its "R" (so it is there: never wait for it)."""
    try:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1, socket.MSG_DONTWAIT)
    except BlockingIOError:
        fds = []
    if not fds:
        raise child.ChildError("set up stdio: no terminal from the container")
    return fds[0]


def _close(fds: Started) -> None:
    """Close our ends, once: a second abort must not close a number reused since."""
    for attr in ("stdout", "stderr", "stdin", "terminal"):
        fd = getattr(fds, attr)
        if fd >= 0:
            setattr(fds, attr, -1)
            try:
                os.close(fd)
            except OSError:
                pass
