"""`minipod port-forward POD [LOCAL:]REMOTE ...`, as kubectl port-forward behaves.

    $ minipod port-forward web 8080:80
    Forwarding from 127.0.0.1:8080 -> 80
    Forwarding from [::1]:8080 -> 80
    Handling connection for 8080

Each local port listens on every --address (default `localhost`: 127.0.0.1 and ::1, the
command fails only if neither can be had, as kubectl's does); each connection gets a socket
made in the pod's network namespace (net/nssocket.py) that dials localhost:REMOTE there, as
containerd's PortForward does -- so no hostPort is needed and the pod IP does not matter --
and bytes are relayed both ways, half-closes included, one thread per connection. `LOCAL`
empty (`:80`) picks a free port; REMOTE may be a container port's name. Ctrl-C (SIGINT) or
SIGTERM stops it, exit 0; so does the pod going away (exit 1, "lost connection to pod").
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading

from minipod import state
from minipod.errors import Conflict, MinipodError, UsageError

BUFFER = 1 << 16


def parse(specs: list[str], ports_by_name: dict[str, int]) -> list[tuple[int, int]]:
    """['8080:80', '9090', ':http'] -> [(8080, 80), (9090, 9090), (0, 80)]"""
    out = []
    for s in specs:
        local, sep, remote = s.rpartition(":")
        if not sep:
            local = remote
        rport = _port(remote, s, ports_by_name)
        lport = 0 if sep and not local else _port(local, s, {} if sep else ports_by_name)
        out.append((lport, rport))
    return out


def _port(text: str, spec: str, names: dict[str, int]) -> int:
    if text in names:
        return names[text]
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"port-forward: {spec!r}: {text!r} is not a port number or the name "
                         "of a container port of the pod") from None
    if not 0 < n < 65536:
        raise UsageError(f"port-forward: {spec!r}: port {n} out of range (1-65535)")
    return n


def addresses(values: list[str]) -> list[tuple[str, bool]]:
    """[(address, required)]: 'localhost' means both loopbacks, either one may fail."""
    out: list[tuple[str, bool]] = []
    for v in values or ["localhost"]:
        for a in (x.strip() for x in v.split(",") if x.strip()):
            if a == "localhost":
                out += [("127.0.0.1", False), ("::1", False)]
            else:
                out.append((a, True))
    return out


def _show(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _listen(addr: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port))
        s.listen(128)
    except OSError:
        s.close()
        raise
    return s


def pod_netns(rec) -> str:
    """The path of a running pod's network namespace: pause's, or (pinned mode) its pin; a
    pinned hostNetwork pod's is the node's. Conflict (kubectl's words) if it is not running."""
    st = rec.state
    phase = st.get("phase") or "Unknown"
    pause = st.get("sandbox_pid")
    pinned = st.get("sandbox_mode") == "pinned"
    pin = ((st.get("pins") or {}).get("files") or {}).get("net")
    nspath = pin or (f"/proc/{pause}/ns/net" if pause else
                     "/proc/self/ns/net" if pinned and rec.plan.get("host_network") else "")
    if not rec.active or phase != state.RUNNING or not nspath:
        raise Conflict(f"unable to forward port because pod is not running. Current "
                       f"status={phase if rec.active or phase in state.FINAL else 'Unknown'}")
    return nspath


def dial(sockets, port: int) -> tuple[socket.socket | None, list[str]]:
    """Connect to localhost:port in the pod, IPv4 first, then IPv6 (as containerd does);
    (socket, []) or (None, what each attempt said)."""
    problems = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = sockets.socket(family, socket.SOCK_STREAM)
        try:
            s.connect((host, port))
            return s, []
        except OSError as e:
            problems.append(f"{_show(host, port)}: {e.strerror}")
            s.close()
    return None, problems


def run(rec, specs: list[str], address: list[str], out=sys.stdout, err=sys.stderr) -> int:
    from minipod.net.nssocket import NetnsSockets

    rec.require()
    nspath = pod_netns(rec)
    names = {p["name"]: p["containerPort"] for c in rec.plan["containers"]
             for p in c.get("spec", {}).get("ports", []) if p.get("name")}
    pairs = parse(specs, names)
    try:
        netns = os.open(nspath, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise MinipodError(f'pod "{rec.name}": its network namespace: {e.strerror}') from None
    # Fork the helper before any thread exists (fork + threads deadlock); it holds the netns.
    try:
        sockets = NetnsSockets(netns, f'pod "{rec.name}"')
    finally:
        os.close(netns)
    listeners: dict[socket.socket, tuple[int, int]] = {}
    try:
        for lport, rport in pairs:
            bound, problems = 0, []
            for addr, required in addresses(address):
                try:
                    s = _listen(addr, lport)
                except OSError as e:
                    if required:
                        raise MinipodError(f"unable to listen on {_show(addr, lport)}: "
                                           f"{e.strerror}") from None
                    problems.append(f"{_show(addr, lport)}: {e.strerror}")
                    continue
                lport = lport or s.getsockname()[1]  # `:80`: ::1 takes the port 127.0.0.1 got
                listeners[s] = (lport, rport)
                bound += 1
                print(f"Forwarding from {_show(addr, lport)} -> {rport}", file=out, flush=True)
            if not bound:
                raise MinipodError(f"unable to listen on any of the requested ports: "
                                   f"{'; '.join(problems)}")
        return _serve(rec, sandbox_alive(rec), listeners, sockets, out, err)
    finally:
        for s in listeners:
            s.close()
        sockets.close()


def sandbox_alive(rec):
    """A check that the running pod's sandbox is still there (for a forwarder: it must let go
    of the namespace when the pod goes)."""
    st = rec.state
    return _sandbox_alive(st.get("sandbox_pid"),
                          ((st.get("pins") or {}).get("files") or {}).get("net"))


def _sandbox_alive(pause: int, pin: str | None):
    """What says the pod's sandbox is still there: its pin (pinned mode: the same namespace
    mounted on the same file), else its pause process."""
    if pin:
        first = os.stat(pin).st_ino

        def pinned() -> bool:
            try:
                return os.stat(pin).st_ino == first
            except OSError:
                return False
        return pinned
    if not pause:  # a pinned hostNetwork pod: the node's netns does not go away
        return lambda: True
    start = state.proc_start_time(pause)
    return lambda: state.process_alive(pause, start)


def _serve(rec, alive, listeners, sockets, out, err) -> int:
    stop_r, stop_w = os.pipe()

    def stop(*_):
        os.write(stop_w, b"x")

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            ready, _, _ = select.select([stop_r, *listeners], [], [], 1.0)
            if stop_r in ready:
                return 0
            if not alive():
                print("error: lost connection to pod", file=err, flush=True)
                return 1
            for lst in ready:
                try:
                    conn, _ = lst.accept()
                except OSError:
                    continue
                lport, rport = listeners[lst]
                print(f"Handling connection for {lport}", file=out, flush=True)
                threading.Thread(target=_forward, args=(conn, rec.name, rport, sockets, err),
                                 daemon=True).start()
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        os.close(stop_r)
        os.close(stop_w)


def _forward(conn: socket.socket, pod: str, port: int, sockets, err) -> None:
    remote = None
    try:
        remote, problems = dial(sockets, port)
        if remote is None:
            print(f"error: an error occurred forwarding {port} in pod \"{pod}\": "
                  f"{'; '.join(problems)}", file=err, flush=True)
            return
        _relay(conn, remote)
    except MinipodError as e:
        print(f"error: {e}", file=err, flush=True)
    finally:
        conn.close()
        if remote is not None:
            remote.close()


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both sides have finished sending; a half-close is passed on."""
    peer = {a: b, b: a}
    reading = {a, b}
    while reading:
        ready, _, _ = select.select(list(reading), [], [])
        for s in ready:
            try:
                data = s.recv(BUFFER)
            except OSError:
                return  # reset: both go
            if data:
                try:
                    peer[s].sendall(data)
                except OSError:
                    return
                continue
            reading.discard(s)
            try:
                peer[s].shutdown(socket.SHUT_WR)
            except OSError:
                pass
