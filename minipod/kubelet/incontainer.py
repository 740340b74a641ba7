"""Run a handler's command inside a running container, and kill what it leaves behind.

A probe or hook child (actions._fork) joins the container's namespaces and stays outside the
command as its watcher: it forks the command, which enters the container (minipod.pod.enter)
and execs; the watcher captures its output (the kubelet's CombinedOutput, up to 10 KiB) and
enforces the timeout, killing the command and every process it started.
"""

from __future__ import annotations

import os
import select
import signal
import time
from typing import TYPE_CHECKING, Callable, NoReturn

from minipod.kernel import pidfd
from minipod.kubelet.netprobe import gostr
from minipod.pod import child, enter

if TYPE_CHECKING:
    from minipod.pod.plan import ContainerPlan

OUTPUT_LIMIT = 10 * 1024      # the kubelet's maxReadLength for exec output


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def run(argv: tuple[str, ...], c: ContainerPlan, container_pid: int, timeout: float | None,
        go_r: int) -> tuple[bool, str]:
    """In a handler child: wait for the go (we are in the container's cgroup), join container
    `c`'s namespaces (its PID 1 is `container_pid`), run argv there (see run_command)."""
    # The host's /proc, opened before we leave the host's mount namespace: the timeout kill
    # walks the process tree by host PIDs (what fork() returned to us).
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if os.read(go_r, 1) != b"g":
        os._exit(1)  # the parent could not put us in the cgroup; it reports why
    os.close(go_r)
    try:
        enter.join(container_pid, enter.CONTAINER_NAMESPACES)
    except OSError as e:
        return False, (f"join the namespaces of container {c.name!r} "
                       f"(pid {container_pid}): {child.describe(e)}")
    return run_command(list(argv), lambda keep: enter.become(c, keep), timeout, proc_fd)


def run_command(argv: list[str], prepare: Callable[[tuple[int, ...]], dict[str, str]],
                timeout: float | None, proc_fd: int) -> tuple[bool, str]:
    """Fork, prepare(keep_fds) in the child (enter.become: it closes every fd but stdio and
    keep_fds), exec argv with the environment it returns; capture stdout+stderr; enforce the
    timeout.

    We stay outside the command (we may be outside its PID namespace) and wait on a pidfd, so
    the timeout needs no signals. On timeout the command and all its descendants are killed
    (see kill_tree); processes that had already left the tree are not ours to find.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _command_child(argv, prepare, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    deadline = _deadline(timeout)
    output = bytearray()
    handle = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    poller.register(handle, select.POLLIN)
    timed_out = False
    try:
        while True:
            wait = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = not select.select([handle], [], [], 0)[0]
                    break
                wait = int(left * 1000) + 1
            events = poller.poll(wait)
            if any(fd == handle for fd, _ in events):
                break
            if events and not _read_into(out_r, output):
                poller.unregister(out_r)
        if timed_out:
            kill_tree(pid, proc_fd)
        _, status = os.waitpid(pid, 0)
        # What the command wrote before it exited is in the pipe; don't wait for more (a
        # background process it left behind may hold the pipe open forever).
        os.set_blocking(out_r, False)
        try:
            while _read_into(out_r, output):
                pass
        except BlockingIOError:
            pass
        os.set_blocking(err_r, False)
        try:
            err = os.read(err_r, 4096).decode(errors="replace")
        except BlockingIOError:
            err = ""
    finally:
        for fd in (out_r, err_r, handle):
            os.close(fd)
    cmd = " ".join(argv)
    if timed_out:
        return False, f"command {gostr(cmd)} timed out"
    if err:
        return False, f"unable to start container process: {err}"
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as runtimes report
    if code == 0:
        return True, ""
    text = output.decode(errors="replace").rstrip("\n")
    return False, f"command '{cmd}' exited with {code}: {text}".rstrip()


def _read_into(fd: int, buf: bytearray) -> bool:
    """Read a chunk into buf (keeping at most OUTPUT_LIMIT bytes); False at EOF."""
    data = os.read(fd, 65536)
    if len(buf) < OUTPUT_LIMIT:
        buf += data[:OUTPUT_LIMIT - len(buf)]
    return bool(data)


def _command_child(argv: list[str], prepare: Callable[[tuple[int, ...]], dict[str, str]],
                   out_w: int, err_w: int) -> NoReturn:
    try:
        # Its own session: no terminal's signals, and one process group to kill on timeout.
        os.setsid()
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        env = prepare((err_w,))  # also: dies with the watcher, default signals, fds closed
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            _write_all(err_w, child.exec_error(argv[0], e).encode(errors="replace"))
    except BaseException as e:  # noqa: BLE001 - report, never return into the caller's code
        try:
            _write_all(err_w, child.describe(e).encode(errors="replace"))
        except BaseException:  # noqa: BLE001
            pass
    os._exit(127)


def kill_tree(root: int, proc_fd: int, wait: float = 2.0) -> None:
    """SIGKILL `root` and every descendant, and wait (up to `wait` s) until they have exited.

    Each found process is held by a pidfd (so a recycled PID is never signalled) and stopped
    first, and the tree walked again until nothing new appears, so a process cannot fork its
    way out between our walk and our kill. SIGKILL only starts an exit; waiting on the pidfds
    means that when we report "timed out" nothing the command started still runs.
    """
    held: dict[int, int | None] = {}
    try:
        while new := (descendants(root, proc_fd) | {root}) - held.keys():
            for pid in new:
                held[pid] = pidfd.open_(pid)
                pidfd.send(held[pid], signal.SIGSTOP)
        try:
            os.killpg(root, signal.SIGKILL)  # root is a session leader: its group goes too
        except (ProcessLookupError, PermissionError):
            pass
        for fd in held.values():
            pidfd.send(fd, signal.SIGKILL)
        pidfd.wait_exited([fd for fd in held.values() if fd is not None], wait)
    finally:
        for fd in held.values():
            if fd is not None:
                os.close(fd)


def descendants(root: int, proc_fd: int) -> set[int]:
    """PIDs below `root`, from the parent links in /proc/*/stat (proc_fd: a /proc directory)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir(proc_fd):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"{name}/stat", os.O_RDONLY, dir_fd=proc_fd)
            try:
                data = os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError:
            continue  # it exited meanwhile
        ppid = int(data.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out: set[int] = set()
    todo = [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in out:
                out.add(kid)
                todo.append(kid)
    return out
