"""Enter a container: the one sequence every process that runs inside a container goes through.

Three kinds of process enter a container: its PID 1 (container.py), `minipod exec`
(cli/execute.py), and probe and hook commands (kubelet/incontainer.py). Each is a Python process
forked from minipod that must become, before it execs, indistinguishable from a process the
container started itself. They all do it here, in this order (as runc's nsexec.c and
init_linux.go finalizeNamespace do, for the same reasons):

  before joining (join):
    1. PR_SET_DUMPABLE 0. Until it execs, the process is minipod's Python: its /proc/PID/exe is
       the host's interpreter, its memory holds minipod. A non-dumpable process's /proc/PID
       files belong to root and the kernel refuses ptrace and /proc/PID/{exe,fd,mem,root} to
       anyone without CAP_SYS_PTRACE, so a process of the container (or of a sibling sharing
       its PID namespace) cannot open or ptrace us while we work (CVE-2019-5736: a container
       overwrote runc's binary through /proc/PID/exe). It is inherited by fork, survives setuid
       (which also clears it), and execve of the workload resets it, when there is nothing of
       the host left to reach.
    2. Open what is needed from the host (ns.join opens every namespace file first), then setns,
       mnt last.
  after joining, with stdio in place (become):
    3. chdir to the working directory, as root (it may be readable only by root); if that is
       refused, again after setuid (it may be readable only by the user: a chowned volume).
    4. oom_score_adj, while we are root (lowering it needs CAP_SYS_RESOURCE).
    5. Look up the user in the container's /etc/passwd (we are in its mount namespace).
    6. Drop the bounding set: needs CAP_SETPCAP, so before setuid. Ambient caps cleared.
    6b. The seccomp filter, if the container does not set no_new_privs: loading a filter needs
       no_new_privs or CAP_SYS_ADMIN, and Kubernetes sets no_new_privs only for
       allowPrivilegeEscalation: false (a setuid binary in the image must keep working), so it
       is loaded here, while we still hold CAP_SYS_ADMIN -- as runc does. The syscalls we make
       after it (setgroups, setuid, capset, prctl, chdir, close_range, execve) are ones the
       default profile allows; a Localhost profile must allow them too, as with runc.
    7. setgroups, setgid, setuid -- always, also for root: a root container must not keep the
       supervisor's supplementary groups. The groups: the user's own, its memberships in the
       image's /etc/group, then supplementalGroups and fsGroup (containerd's order). From
       uid 0 to another, the kernel clears permitted/effective, the parent-death signal and
       the dumpable flag.
    8. Check that the working directory is inside the container's root: getcwd() fails with
       ENOENT for a directory outside it (CVE-2024-21626: runc leaked an fd to a host cgroup
       directory, and a container set its cwd to /proc/self/fd/N).
    9. Limit permitted/effective/inheritable to the container's set; no_new_privs.
   10. The parent-death signal (after setuid, which would clear it).
   11. Default signal dispositions and an empty signal mask: Python ignores SIGPIPE and
       SIGXFSZ, minipod installs handlers, and ignored signals and the mask survive execve.
   12. Close every fd but 0, 1, 2 and the report pipe (close-on-exec). Nothing of the host
       stays open into the workload (CVE-2024-21626).
   13. With no_new_privs set, the seccomp filter comes last, after every other step: no
       capability is needed then, and the fewer syscalls of ours run under the filter, the
       less a profile has to allow for minipod rather than for the workload (runc's order).
       Privileged containers get no filter (see pod/security.py).
  then the caller execs, and reports a failed exec over its report pipe.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

# Imported here, in the parent: once a process has joined a container's mount namespace, the
# host's Python modules are no longer on its filesystem (minipod.kernel.caps uses prctl).
import prctl  # noqa: F401

from minipod.kernel import _libc, caps, ns
from minipod.kernel import seccomp  # imports libseccomp's binding now, before any setns
from minipod.pod import child, rootfs
from minipod.pod.volumes.podip import fill_pod_ip

if TYPE_CHECKING:
    from minipod.pod.plan import ContainerPlan

PR_SET_DUMPABLE = 4
# The namespaces a process joins to run inside a running container (exec, probes, hooks); mnt
# last (see ns.join); pid applies to the child forked next; cgroup, so that /proc/self/cgroup
# reads as in the container (its root is the container's cgroup, which the process joined).
CONTAINER_NAMESPACES = ["ipc", "uts", "net", "pid", "cgroup", "mnt"]


def before_join() -> None:
    """Step 1: nothing in the namespaces we are about to join may open or trace us."""
    _libc.prctl(PR_SET_DUMPABLE, 0)


def join(pid: int, types: list[str]) -> None:
    """Steps 1-2: become non-dumpable, then join `pid`'s namespaces (mnt last)."""
    before_join()
    ns.join(pid, types)


def become(c: ContainerPlan, keep_fds: tuple[int, ...] = (), pod_ip: str = "") -> dict[str, str]:
    """Steps 3-12: make the calling process container `c`'s own (its plan);
    returns its environment for exec. Call after join() and after stdio is in place (a pty is
    opened as root); `keep_fds` are close-on-exec pipes to the parent."""
    step = f"working directory {c.cwd}"
    try:
        cwd_done = _chdir(c.cwd)
        child.set_oom_score_adj(c.oom_score_adj)
        step = f"resolve user {c.user or '0'}"
        uid, gid, groups = rootfs.lookup_user(c.user or "")
        for g in rootfs.member_groups(uid, c.user or "") + c.security.groups:
            if g not in groups:
                groups.append(g)
        step = "set user and capabilities"
        caps.drop_bounding(c.caps)
        profile = c.security.seccomp
        if profile is not None and not c.no_new_privs:
            step = "load the seccomp filter"
            seccomp.load(profile)  # step 6b: while we hold CAP_SYS_ADMIN
        step = "set user and capabilities"
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
        if not cwd_done:
            step = f"working directory {c.cwd} (as uid {uid})"
            os.chdir(c.cwd)
        step = "check the working directory"
        check_cwd()
        step = "set capabilities"
        caps.limit(c.caps, c.no_new_privs)
    except OSError as e:
        raise OSError(e.errno, f"{step}: {child.describe(e)}") from None
    child.die_with_parent(None)
    default_signals()
    child.close_fds_except(keep_fds)
    env = dict(kv.split("=", 1) for kv in fill_pod_ip(c.env, pod_ip))
    if profile is not None and c.no_new_privs:
        try:
            seccomp.load(profile)  # step 13: last, under no_new_privs
        except OSError as e:
            raise OSError(e.errno, f"load the seccomp filter: {child.describe(e)}") from None
    return env


def _chdir(cwd: str) -> bool:
    """chdir as root; False if refused (try again as the user). A directory the workload removed
    since its start is "/" for a later exec, as before."""
    try:
        os.chdir(cwd)
    except PermissionError:
        return False
    except FileNotFoundError:
        os.chdir("/")
    return True


def check_cwd() -> None:
    """Raise if the working directory is not inside our root (getcwd: ENOENT, "(unreachable)")."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        raise OSError(1, "the working directory is outside the container's root") from None
    if not cwd.startswith("/"):
        raise OSError(1, f"the working directory is outside the container's root: {cwd}")


def default_signals() -> None:
    """Every catchable signal to its default action, none blocked, no wakeup fd."""
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if signal.getsignal(sig) != signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # a real-time signal Python cannot name, or one reserved by libc
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
