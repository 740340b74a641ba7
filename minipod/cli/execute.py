"""`minipod exec`: run a command inside a running container (like `kubectl exec`).

The command joins the container's cgroup and all its namespaces, gets its environment, working
directory and capabilities, and -- with -t -- a terminal allocated *inside* the container's own
devpts, so `tty` there names a real /dev/pts/N (a host pty would not exist in the container).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import sys
import termios
import tty as ttymod

from minipod.errors import Conflict, MinipodError
from minipod.pod import child, enter  # enter imports what the child needs after joining
from minipod.pod.plan import ContainerPlan


def run(rec, container: str | None, argv: list[str], stdin: bool, tty: bool, driver) -> int:
    spec, st = rec.container(container)
    c = ContainerPlan.from_json(spec)  # the plan, typed again, all the way into the child
    pid = st.get("pid")
    if not rec.active or not pid or "running" not in (st.get("state") or {}):
        raise Conflict(f'container "{c.name}" in pod "{rec.name}" is not running')
    if tty and not os.isatty(0):
        print("Unable to use a TTY - input is not a terminal or the right kind of file",
              file=sys.stderr)
        tty = False
    term = os.environ.get("TERM", "xterm")
    pod_ip = (rec.state.get("network") or {}).get("ip", "")  # status.podIP in the env
    sock_parent, sock_child = socket.socketpair() if tty else (None, None)

    def body(ch: child.Channel) -> None:
        ch.stage = "join the container's cgroup"
        ch.wait_go()
        ch.stage = "join the container's namespaces"
        # mnt last (see ns.join); pid applies to the child we fork next.
        enter.join(pid, enter.CONTAINER_NAMESPACES)
        grandchild = os.fork()
        if grandchild:
            # Stay as the parent so the exit status travels back: mirror it. Close our copy of
            # the report pipe, so minipod sees EOF as soon as the command has exec'd.
            os.close(ch.report_w)
            _, status = os.waitpid(grandchild, 0)
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)
        ch.stage = "prepare the process"
        if tty:
            _attach_pty(sock_child)
        elif not stdin:
            fd = os.open("/dev/null", os.O_RDONLY)
            os.dup2(fd, 0)
        # The container's user, working directory and capabilities (after the pty: it is
        # opened as root), its signal dispositions, not Python's, and no fd but stdio.
        env = enter.become(c, ch.keep_fds(), pod_ip)
        if tty:
            env.setdefault("TERM", term)
        ch.stage = f'exec "{argv[0]}"'
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            ch.send("E " + child.exec_error(argv[0], e))
            os._exit(127 if isinstance(e, FileNotFoundError) else 126)

    h = child.fork(body)
    try:
        driver.join(c.cgroup, h.pid)
        h.go()
    except Exception:
        h.close()
        os.kill(h.pid, signal.SIGKILL)
        os.waitpid(h.pid, 0)
        raise
    master = None
    if tty:
        sock_child.close()
        master = _receive_fd(sock_parent)
    error = None
    try:
        h.read()
    except child.ChildError as e:
        error = str(e)
    h.close()
    if master is not None and error is None:
        _relay(master, stdin)
    _, status = os.waitpid(h.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return code if code in (126, 127) else 1
    return 128 - code if code < 0 else code


def _attach_pty(sock: socket.socket) -> None:
    """Open a pty in the container's devpts, hand the master to minipod, make the slave our
    controlling terminal and stdio."""
    master, slave = os.openpty()  # /dev/ptmx of the container's devpts (we joined its mnt ns)
    socket.send_fds(sock, [b"m"], [master])
    os.close(master)
    sock.close()
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def _receive_fd(sock: socket.socket) -> int:
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    sock.close()
    if not fds:
        raise MinipodError("exec: no terminal from the container")
    return fds[0]


def _relay(master: int, stdin: bool) -> None:
    """Copy the container's pty to our terminal until the command exits, and (-i) our
    terminal's input to it. `-t` alone, as with docker and podman, gives the command a
    terminal and no input: ours stays as it is (cooked: Ctrl-C is ours) and is not read."""
    def resize(*_):
        try:
            fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
        except OSError:
            pass

    resize()
    signal.signal(signal.SIGWINCH, resize)
    saved = termios.tcgetattr(0) if stdin else None
    if stdin:
        # TCSANOW, not setraw's default TCSAFLUSH: type-ahead is kept and sent on (as kubectl).
        ttymod.setraw(0, termios.TCSANOW)
    try:
        fds = [0, master] if stdin else [master]
        while True:
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the slave side closed, the command is done
                    break
                if not data:
                    break
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    fds.remove(0)
                    continue
                os.write(master, data)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)
