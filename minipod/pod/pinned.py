"""The pinned sandbox (`sandbox: pinned`): the pod's net, ipc and uts namespaces held by bind
mounts in <root>/sandboxes/<pod>, as CRI-O's pinns holds them, and no pause process.

    DIR a mount of its own, unbindable -> fork a child that unshares net/ipc/uts, sets the
    hostname and the pod's sysctls -> bind /proc/CHILD/ns/{net,ipc,uts} onto DIR/{net,ipc,uts}
    -> the pod's /dev/shm, a tmpfs on DIR/shm -> the child exits

Why this order: the directory must exist, and be unbindable, before anything is mounted in it
(a pin mounted in a shared /run would propagate). The child unshares and stays until the
parent has bound its namespace files: an unshared namespace with no process and no pin is
freed at once. The hostname and the sysctls are set by the child, in the new namespaces, before
any container starts (pinns does the same); /dev/shm is a mount on the host, as CRI-O's is, since
no sandbox process keeps a mount namespace of the pod's. Only the namespaces that are not the
node's are pinned: hostNetwork takes net and uts, hostIPC takes ipc and /dev/shm.

Containers then join the pins (ns.join_files) instead of /proc/PAUSE/ns/*, unshare their mount
namespace from the host's (not from a sandbox's, there is none), and bind DIR/shm as /dev/shm.
The PID namespace is not pinned: a PID namespace whose init died takes no new process, so
shareProcessNamespace keeps a pause process for it (PodPlan.keeps_pause), as CRI-O keeps its
infra container when the pod shares a PID namespace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from minipod import explain
from minipod.kernel import _libc, mounts, ns, nspin, sysctl
from minipod.kernel._libc import MS_NODEV, MS_NOEXEC, MS_NOSUID
from minipod.pod import child


@dataclass
class Pinned:
    dir: str
    files: dict[str, str] = field(default_factory=dict)  # type -> pin file, in join order
    shm: str = ""           # the pod's /dev/shm (a tmpfs); "" with hostIPC: the node's

    def inodes(self) -> dict[str, int | None]:
        return {t: nspin.inode(p) for t, p in self.files.items()}

    def to_json(self) -> dict:
        return {"dir": self.dir, "files": self.files, "shm": self.shm}


def expected(plan) -> Pinned | None:
    """What pin() makes for this plan (paths only; nothing is read); None in pause mode. With
    hostNetwork and hostIPC nothing is pinned (no files): the containers still take their
    mounts from the host's mount namespace, as there is no pause's to copy."""
    if plan.sandbox_mode != "pinned":
        return None
    types = plan.pinned_types
    return Pinned(plan.pin_dir, {t: os.path.join(plan.pin_dir, t) for t in types},
                  "" if plan.host_ipc else os.path.join(plan.pin_dir, "shm"))


def pin(plan, push: Callable[[str, Callable[[], object]], None]) -> Pinned:
    """Make the pod's namespaces and pin them; every step pushes its undo."""
    want = expected(plan)
    assert want is not None, "pin() of a pod in pause mode"
    types = list(want.files)
    if not types:
        return want  # every namespace is the node's: nothing to make

    def body(ch: child.Channel) -> None:
        ch.stage = "unshare " + ",".join(types)
        ns.unshare(*types)
        if "uts" in types:  # never with hostNetwork: the node's hostname is not ours
            ch.stage = "set the hostname"
            _libc.sethostname(plan.hostname)
        # The names were checked against the kubelet's safe set at validation, which also
        # refuses them for a pod in the node's net or ipc namespace.
        for name, value in plan.security.sysctls:
            ch.stage = f"set sysctl {name}"
            sysctl.write(name, value)
        ch.send("R")
        ch.wait_go()  # meanwhile the parent binds our namespace files
        os._exit(0)

    # The directory first: pins are mounted in it only once it propagates nothing. Each undo
    # is pushed once its step has succeeded (a failed step undoes itself): a directory that
    # is a mount point already is a stale pod's, for `rm -f` to remove, not ours to unmount.
    nspin.make_dir(want.dir)
    push(f"pin directory {want.dir}", lambda: nspin.remove_dir(want.dir))
    h = child.fork(body)
    try:
        h.expect("R")
        for t, path in want.files.items():
            nspin.pin(f"/proc/{h.pid}/ns/{t}", path)
            push(f"{t} pin {path}", lambda path=path: nspin.unpin(path))
        if want.shm:
            os.mkdir(want.shm, 0o755)
            push(f"/dev/shm of the pod {want.shm}", lambda: nspin.unpin(want.shm))
            mounts.mount("shm", want.shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         f"mode=1777,size={plan.shm_size}")
        h.go()
        if h.read() is not None:
            raise child.ChildError("unexpected report from the pinning process")
        os.waitpid(h.pid, 0)
    except BaseException:
        h.kill()
        raise
    finally:
        h.close()
    if explain.ON:
        held = want.inodes()
        explain.say(f"PID {h.pid}, which made them, has exited: nothing runs in "
                    + " ".join(f"{t}:[{i}]" for t, i in held.items())
                    + f"; the bind mounts in {want.dir} hold them",
                    "exit_group(0) of the pinning child",
                    f"unshare {' '.join(f'--{t}={p}' for t, p in want.files.items())} true"
                    "   # the same in one command (util-linux)",
                    pid=h.pid, inodes=held, dir=want.dir)
    return want


def unpin(pin_dir: str) -> None:
    """Remove every pin and the pod's /dev/shm, and the directory. Gone = done."""
    nspin.remove_dir(pin_dir)
