"""A forked helper that does a pod's network work, so pod start never waits on pyroute2's import.

`import pyroute2` costs ~100 ms here and ~200 ms on small VMs. Forking this agent first thing
lets the import run on the other core while the caller reads the spec, makes cgroups and starts
the pause process; by the time the caller asks for setup_pod the agent is (nearly) ready.

Protocol: one JSON object per line over a unix socketpair, one reply per request, in order (the
caller may work between the two, and send more than one request before reading: send(), then
reply()).
    -> {"op": "setup_pod", "cfg": {...}, "owner": "...", "pause_pid": 123, "host_veth": "mp-..."}
    <- {"ok": true, "result": {"ip": "10.244.0.2", ...}}
    <- {"ok": false, "type": "IPAMError", "error": "no free address in ..."}
setup_pod also comes in two halves: lease_pod (cfg, owner), which a pod sends before its
sandbox exists, and attach_pod (the same fields as setup_pod), which plugs in the lease this
agent made for that owner.
The agent exits when it reads EOF, i.e. when every holder of the other end has closed it or
died, so it cannot outlive its users. A request that fails is answered, never fatal.

Handing it on: `Agent.from_fd(fd)` in another program adopts an agent started elsewhere. Pass
the fd explicitly (subprocess `pass_fds=[agent.fileno()]`; the fd is close-on-exec otherwise)
and close the starter's copy if it does not call the agent any more, or the agent will see EOF
only when both are closed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
from typing import Any

from minipod.net import Attachment, NetConfig, NetError

OPS = ("ping", "setup_pod", "lease_pod", "attach_pod", "teardown_pod")
PR_SET_NAME = 15


class AgentError(NetError):
    """The agent is gone or answered something that is not a reply."""


def start() -> "Agent":
    """Fork the agent. Call it while the process is single-threaded (fork + threads deadlock)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the agent: never returns into the caller's code
        code = 1
        try:
            ours.close()
            _child(theirs)
            code = 0
        except BaseException as e:  # noqa: BLE001 - say why on stderr, then leave
            try:
                sys.stderr.write(f"minipod network agent {os.getpid()}: {type(e).__name__}: {e}\n")
                sys.stderr.flush()
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    theirs.close()
    return Agent(ours, pid)


class Agent:
    """The caller's end of an agent: call(op, **kw) -> result dict, or raises its error."""

    def __init__(self, sock: socket.socket, pid: int | None = None) -> None:
        self._sock = sock
        self._rfile = sock.makefile("rb")
        self.pid = pid  # set when the agent is our child (we reap it on close)
        self._broken: str | None = None
        self._pending: list[str] = []  # the ops sent and not yet answered, oldest first

    @classmethod
    def from_fd(cls, fd: int, pid: int | None = None) -> "Agent":
        """Adopt an agent whose socket this process inherited as `fd`."""
        return cls(socket.socket(fileno=fd), pid)

    def fileno(self) -> int:
        return self._sock.fileno()

    def call(self, op: str, **kw: Any) -> dict:
        """send() and reply(), after the answers to requests still unread (a rollback's
        teardown_pod after a setup_pod whose answer nobody will read any more)."""
        self._drain()
        self.send(op, **kw)
        return self.reply()

    def send(self, op: str, **kw: Any) -> None:
        """The request alone: the caller works on while the agent does it, then reads reply()."""
        if self._broken:
            raise AgentError(f"network agent unusable: {self._broken}")
        request = {"op": op}
        for key, value in kw.items():
            request[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as e:
            self._broken = f"{op} not sent ({e.strerror or e})"
            raise AgentError(f"network agent: {op}: {e.strerror or e}") from None
        self._pending.append(op)

    def reply(self) -> dict:
        """The answer to the oldest request unanswered: its result, or its error raised."""
        if not self._pending:
            raise AgentError("network agent: a reply read with no request sent")
        op = self._pending.pop(0)
        try:
            line = self._rfile.readline()
        except BaseException as e:
            # Interrupted between request and reply: the stream is out of step for good.
            self._broken = f"{op} interrupted ({type(e).__name__}: {e})"
            if isinstance(e, OSError):
                raise AgentError(f"network agent: {op}: {e.strerror or e}") from None
            raise
        if not line:
            self._broken = "it exited"
            raise AgentError(f"network agent{self._who()} exited before answering {op}")
        try:
            reply = json.loads(line)
        except ValueError:
            self._broken = "garbled reply"
            raise AgentError(f"network agent: garbled reply to {op}: {line[:200]!r}") from None
        if reply.get("ok"):
            return reply.get("result") or {}
        raise _error(reply.get("type", ""), reply.get("error", "unknown error"))

    def _drain(self) -> None:
        while self._pending:
            try:
                self.reply()
            except AgentError:
                if self._broken:
                    raise
            except NetError:
                pass  # the failure of a request nobody waits for any more

    def setup_pod(self, cfg: NetConfig, owner: str, pause_pid: int | str,
                  host_veth: str) -> Attachment:
        return Attachment(**self.call("setup_pod", cfg=cfg, owner=owner, pause_pid=pause_pid,
                                      host_veth=host_veth))

    def send_setup_pod(self, cfg: NetConfig, owner: str, pause_pid: int | str,
                       host_veth: str, *, leased: bool = False) -> None:
        """setup_pod (or with `leased`, after send_lease_pod: attach_pod) without waiting for
        the answer, so that the caller prepares its containers meanwhile."""
        self.send("attach_pod" if leased else "setup_pod", cfg=cfg, owner=owner,
                  pause_pid=pause_pid, host_veth=host_veth)

    def send_lease_pod(self, cfg: NetConfig, owner: str) -> None:
        """The lease, bridge and NAT for `owner`, before its netns exists (net.lease_pod); its
        answer is read (and an error raised) before the attach_pod's: lease_pod_reply()."""
        self.send("lease_pod", cfg=cfg, owner=owner)

    def lease_pod_reply(self) -> None:
        self.reply()

    def setup_pod_reply(self) -> Attachment:
        return Attachment(**self.reply())

    def teardown_pod(self, cfg: NetConfig, owner: str, host_veth: str) -> None:
        self.call("teardown_pod", cfg=cfg, owner=owner, host_veth=host_veth)

    def close(self) -> None:
        """Close our end; if the agent is our child, wait for it (it exits on EOF)."""
        self._broken = self._broken or "closed"
        self._rfile.close()
        self._sock.close()
        if self.pid is not None:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass  # reaped by someone else (a SIGCHLD handler reaping everything)
            self.pid = None

    def _who(self) -> str:
        return f" (pid {self.pid})" if self.pid else ""

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error(kind: str, message: str) -> NetError:
    from minipod.kernel import lock
    from minipod.net import ipam, iptables, links, nat  # all cheap: pyroute2 stays unimported

    known = {
        cls.__name__: cls
        for cls in (NetError, ipam.IPAMError, links.LinkError, links.SubnetConflict,
                    nat.NatError, iptables.IptablesError, lock.LockError, AgentError)
    }
    cls = known.get(kind)
    if cls is None:
        return AgentError(f"network agent: {kind}: {message}")  # a bug, not a host condition
    return cls(message)


# ---- the agent's side -------------------------------------------------------------------------

def _child(sock: socket.socket) -> None:
    # Ctrl-C reaches the whole foreground process group. The caller decides what to undo and
    # tells us (teardown_pod); dying mid-request would leave half a veth and no reply.
    _set_signals()
    # Hold no fd of the caller's but our socket and stdio: a pipe write end held here would
    # keep the caller from ever seeing EOF on it (e.g. a container's exec-status pipe).
    from minipod import explain

    lo = 3
    for fd in sorted({sock.fileno(), explain.fileno()} - {-1}):  # and `run --explain`'s file
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 1 << 20)
    _set_name(b"minipod-net")
    preload_error = None
    try:
        import pyroute2  # noqa: F401 - the point of the agent: pay this now, in parallel

        from minipod.net import ipam, links, nat  # noqa: F401
    except BaseException as e:  # noqa: BLE001 - answer each request with it instead
        preload_error = f"cannot import the network code: {type(e).__name__}: {e}"
    rfile = sock.makefile("rb")
    for line in rfile:  # ends at EOF: every holder of the other end is gone
        if preload_error:
            reply = {"ok": False, "type": "NetError", "error": preload_error}
        else:
            reply = _handle(line)
        sock.sendall(json.dumps(reply).encode() + b"\n")


def _set_signals() -> None:
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # A caller's handlers (or SIG_IGN for SIGCHLD, which would break our waitpid on the
        # netns helper) must not apply here.
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass  # forked from a non-main thread: Python will not let us touch handlers


def _set_name(name: bytes) -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_NAME, name, 0, 0, 0)  # what ps/top show
    except Exception:  # noqa: BLE001 - cosmetic
        pass


def _handle(line: bytes) -> dict:
    try:
        request = json.loads(line)
        op = request.pop("op", None)
        if op not in OPS:
            raise AgentError(f"unknown op {op!r} (known: {', '.join(OPS)})")
        result = globals()[f"_op_{op}"](**request)
        return {"ok": True, "result": result}
    except Exception as e:  # noqa: BLE001 - every failure is an answer, never a crash
        return {"ok": False, "type": type(e).__name__, "error": str(e)}


def _op_ping() -> dict:
    return {"pid": os.getpid()}


def _op_setup_pod(cfg: dict, owner: str, pause_pid: int | str, host_veth: str) -> dict:
    from minipod.net import setup_pod

    return dataclasses.asdict(setup_pod(NetConfig(**cfg), owner, pause_pid, host_veth))


_LEASES: dict = {}  # owner -> ipam.Lease, made by lease_pod, for the attach_pod that follows


def _op_lease_pod(cfg: dict, owner: str) -> dict:
    from minipod.net import lease_pod
    from minipod.rollback import Rollback

    with Rollback() as rb:  # a failure undoes what this request made; success keeps it
        lease = lease_pod(NetConfig(**cfg), owner, rb.push)
        rb.commit()
    _LEASES[owner] = lease
    return dataclasses.asdict(lease)


def _op_attach_pod(cfg: dict, owner: str, pause_pid: int | str, host_veth: str) -> dict:
    from minipod.net import attach_pod

    lease = _LEASES.pop(owner, None)
    if lease is None:
        raise NetError(f"attach {host_veth}: no lease for {owner} (its lease_pod failed)")
    return dataclasses.asdict(attach_pod(NetConfig(**cfg), lease, pause_pid, host_veth))


def _op_teardown_pod(cfg: dict, owner: str, host_veth: str) -> dict:
    from minipod.net import teardown_pod

    teardown_pod(NetConfig(**cfg), owner, host_veth)
    return {}
