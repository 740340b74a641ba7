"""The per-pod supervisor: builds the pod, then reaps, logs, restarts and finally tears it down.

    python -m minipod.supervisor RUN_DIR [--ready-fd N] [--agent-fd N] [--foreground]

Two processes per pod. The first forks at once: the child is the supervisor proper, the parent
stays behind as the *janitor*: a child subreaper that only waits. If the supervisor dies
without finishing (SIGKILL, a crash), its children -- pause and the containers, which die with
it through PR_SET_PDEATHSIG -- are reparented to the janitor, which reaps them and tears the pod
down from the plan on disk. So a killed supervisor leaves nothing behind, and no zombie waits
on a PID 1 that might never reap it.

The supervisor is single-threaded and never changes its own namespaces: namespace work happens
in freshly forked children (see child.py), network work in a helper process (net/agent.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import signal
import sys
import time

from minipod import _libc, logs, state
from minipod.plan import PodPlan


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = argv[0]
    opts = dict(zip(argv[1::2], argv[2::2]))
    ready_fd = int(opts.get("--ready-fd", -1))
    agent_fd = int(opts.get("--agent-fd", -1))
    foreground = opts.get("--foreground") == "1"
    _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
    pid = os.fork()
    if pid:
        from minipod.janitor import watch

        for fd in (ready_fd, agent_fd):
            if fd >= 0:
                os.close(fd)
        return watch(run_dir, pid)
    # Both are subreapers (the flag is not inherited across fork): containers' PID 1s are
    # grandchildren (see container.py) and must be reparented to the supervisor, not lost.
    _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
    try:
        sup = Supervisor(run_dir, foreground)
        return sup.run(ready_fd, agent_fd)
    except BaseException as e:  # noqa: BLE001 - last resort: tell the CLI, let the janitor clean
        _tell(ready_fd, {"ok": False, "error": f"supervisor: {type(e).__name__}: {e}"})
        raise


def _tell(fd: int, msg: dict) -> None:
    if fd >= 0:
        try:
            os.write(fd, (json.dumps(msg) + "\n").encode())
            os.close(fd)
        except OSError:
            pass


class Ctr:
    """One container's runtime state (a kubelet containerStatus, more or less)."""

    def __init__(self, c: dict):
        self.c = c
        self.name = c["name"]
        self.pid = 0
        self.id = ""
        self.restarts = 0
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.writer: logs.Writer | None = None
        self.fds: dict[int, str] = {}
        self.oom_before = 0
        self.started_mono = 0.0
        self.backoff = 0.0
        self.restart_at: float | None = None

    def status(self) -> dict:
        return {"name": self.name, "pid": self.pid, "containerID": self.id,
                "restartCount": self.restarts, "state": self.state,
                "lastState": self.last_state, "ready": "running" in self.state,
                "instance": self.restarts, "image": self.c["image"],
                "imageID": self.c["image_digest"]}


class Supervisor:
    def __init__(self, run_dir: str, foreground: bool):
        from minipod import cgroups, config
        from minipod import pause as pausemod
        from minipod.pod import Pod

        import prctl  # noqa: F401 - imported once here, not in every forked container

        self.run_dir = run_dir
        self.foreground = foreground
        self.plan = PodPlan.from_json(state.read_json(os.path.join(run_dir, "plan.json")))
        self.cfg = config.load()
        self.driver = cgroups.detect(self.cfg.cgroup_root, self.cfg.cgroup_driver)
        self.pause = pausemod.find(self.cfg.pause)
        self.pod = Pod(self.plan, self.driver, self.pause.argv)
        self.ctrs = {c.name: Ctr(dataclasses.asdict(c)) for c in self.plan.containers}
        self.sel = selectors.DefaultSelector()
        self.phase = state.PENDING
        self.stop_deadline: float | None = None
        self.stopping = False
        self.force = False
        self.agent = None
        self.started_at = 0.0
        self.width = max(len(n) for n in self.ctrs)

    # --- life --------------------------------------------------------------------------------

    def run(self, ready_fd: int, agent_fd: int) -> int:
        from minipod.net import agent as agentmod

        self._signals()
        self.agent = agentmod.Agent.from_fd(agent_fd) if agent_fd >= 0 else agentmod.start()
        self.write_state()
        first = [ctr.c for ctr in self.ctrs.values()]
        try:
            started = self.pod.setup(self.agent, first)
        except Exception as e:
            self.phase = state.FAILED
            _tell(ready_fd, {"ok": False, "error": str(e)})
            self.agent.close()
            self.write_state(final=True, message=str(e))
            return 1
        # The agent's work is done; keeping it would keep pyroute2's memory alive for nothing.
        # Teardown runs in-process at the very end, when no more forks follow.
        self.agent.close()
        self.agent = None
        self.started_at = time.time()
        for c, s in started:
            self._running(self.ctrs[c["name"]], s)
        self.phase = state.RUNNING
        self.write_state()
        _tell(ready_fd, {"ok": True, "ip": self.pod.network.get("ip", "")})
        self._say(f"pod {self.plan.name} is running, IP {self.pod.network.get('ip', '')}")
        self.loop()
        return self.finish()

    def loop(self) -> None:
        while not self._done():
            timeout = self._next_timeout()
            for key, _ in self.sel.select(timeout):
                key.data(key.fileobj)
            self._timers()

    def _done(self) -> bool:
        busy = any(ctr.pid or ctr.fds or ctr.restart_at is not None for ctr in self.ctrs.values())
        return not busy

    def finish(self) -> int:
        """All containers are gone for good: tear the pod down and record the outcome."""
        if self.phase != state.FAILED:
            codes = [ctr.state.get("terminated", {}).get("exitCode", 0) for ctr in self.ctrs.values()]
            self.phase = state.SUCCEEDED if all(c == 0 for c in codes) else state.FAILED
        try:
            self.pod.teardown()
        finally:
            self.write_state(final=True)
        self._say(f"pod {self.plan.name} {'stopped' if self.stopping else 'completed'} "
                  f"({self.phase})")
        return 0 if self.phase == state.SUCCEEDED or self.stopping else 1

    # --- signals, children ---------------------------------------------------------------------

    def _signals(self) -> None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self.sel.register(r, selectors.EVENT_READ, self._on_signal)
        for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, lambda *_: None)  # the wakeup fd carries the signal number

    def _on_signal(self, fd: int) -> None:
        try:
            data = os.read(fd, 256)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self.request_stop(signum)
        self._reap()

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        if self.stopping:
            if signum == signal.SIGINT:  # a second Ctrl-C: don't wait for the grace period
                self.force = True
                self._kill_all_containers(signal.SIGKILL)
            return
        self.stopping = True
        grace = self.plan.grace_seconds
        req = state.read_json(os.path.join(self.run_dir, "stop.json"))
        if req and req.get("grace") is not None:
            grace = int(req["grace"])
        self._say(f"stopping pod {self.plan.name} (grace period {grace}s)")
        for ctr in self.ctrs.values():
            ctr.restart_at = None
            if not ctr.pid:
                ctr.state = ctr.state if "terminated" in ctr.state else {
                    "terminated": {"reason": "Completed", "exitCode": 0}}
        self.stop_deadline = time.monotonic() + grace
        # All containers at once, as the kubelet does (podman stops them one after another).
        for ctr in self.ctrs.values():
            if ctr.pid:
                sig = signal.SIGKILL if grace == 0 else ctr.c["stop_signal"]
                _kill(ctr.pid, sig)
        self.write_state()

    def _kill_all_containers(self, sig: int) -> None:
        for ctr in self.ctrs.values():
            if ctr.pid:
                self.driver.kill(ctr.c["cgroup"], sig)

    def _reap(self) -> None:
        from minipod.pod import reap

        by_pid = {ctr.pid: ctr for ctr in self.ctrs.values() if ctr.pid}
        for pid, status in reap():
            if pid in by_pid:
                self._exited(by_pid[pid], status)
            elif pid == self.pod.sandbox_pid:
                self._say("the sandbox (pause) died: stopping the pod")
                self.pod.sandbox_pid = 0
                self.phase = state.FAILED
                self.request_stop(signal.SIGTERM)
                self._kill_all_containers(signal.SIGKILL)

    def _exited(self, ctr: Ctr, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as shells say
        ooms = self.driver.oom_kills(ctr.c["cgroup"])
        reason = "OOMKilled" if ooms > ctr.oom_before else ("Completed" if code == 0 else "Error")
        ctr.oom_before = ooms
        ctr.pid = 0
        ctr.state = {"terminated": {"reason": reason, "exitCode": code,
                                    "startedAt": ctr.state.get("running", {}).get("startedAt"),
                                    "finishedAt": logs.timestamp(), "containerID": ctr.id}}
        self._say(f"container {ctr.name} exited with code {code} ({reason})")
        if not self.stopping:
            self._maybe_restart(ctr, code)
        self.write_state()

    # --- restarts ---------------------------------------------------------------------------

    def _maybe_restart(self, ctr: Ctr, code: int) -> None:
        policy = self.plan.restart_policy
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            return
        # kubelet back-off: the first restart is immediate, then initial, 2x ... up to max; a
        # container that ran cleanly for 2 x max starts over.
        ran = time.monotonic() - ctr.started_mono
        if ran > 2 * self.cfg.backoff_max:
            ctr.backoff = 0.0
        delay = ctr.backoff
        ctr.backoff = (min(self.cfg.backoff_max, ctr.backoff * 2) if ctr.backoff
                       else self.cfg.backoff_initial)
        ctr.restart_at = time.monotonic() + delay
        if delay:
            ctr.last_state, ctr.state = ctr.state, {"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:g}s restarting failed container={ctr.name}"}}
            self._say(f"container {ctr.name}: back-off {delay:g}s before restarting")

    def _timers(self) -> None:
        now = time.monotonic()
        for ctr in self.ctrs.values():
            if ctr.restart_at is not None and ctr.restart_at <= now and not ctr.fds:
                ctr.restart_at = None
                self._restart(ctr)
        if self.stop_deadline is not None and now >= self.stop_deadline:
            self.stop_deadline = None
            self._kill_all_containers(signal.SIGKILL)

    def _next_timeout(self) -> float | None:
        times = [c.restart_at for c in self.ctrs.values() if c.restart_at is not None]
        if self.stop_deadline is not None:
            times.append(self.stop_deadline)
        if not times:
            return None
        return max(0.0, min(times) - time.monotonic())

    def _restart(self, ctr: Ctr) -> None:
        from minipod.errors import SetupError

        if "terminated" in ctr.state:
            ctr.last_state = ctr.state
        ctr.restarts += 1
        try:
            started = self.pod.start(ctr.c)
        except SetupError as e:
            ctr.state = {"terminated": {"reason": "StartError", "exitCode": 128,
                                        "message": str(e), "finishedAt": logs.timestamp()}}
            self._say(str(e))
            self._maybe_restart(ctr, 128)
            self.write_state()
            return
        self._running(ctr, started)
        self.write_state()

    # --- running containers and their output -------------------------------------------------

    def _running(self, ctr: Ctr, s) -> None:
        ctr.pid = s.pid
        ctr.id = os.urandom(32).hex()
        ctr.started_mono = time.monotonic()
        ctr.state = {"running": {"startedAt": logs.timestamp()}}
        echo = self._echo(ctr.name) if self.foreground else None
        ctr.writer = logs.Writer(ctr.c["log_dir"], ctr.restarts, echo)
        for fd, stream in ((s.stdout, "stdout"), (s.stderr, "stderr")):
            os.set_blocking(fd, False)
            ctr.fds[fd] = stream
            self.sel.register(fd, selectors.EVENT_READ, lambda f, c=ctr: self._output(c, f))

    def _output(self, ctr: Ctr, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        stream = ctr.fds[fd]
        if data:
            ctr.writer.feed(stream, data)
            return
        ctr.writer.flush(stream)
        self.sel.unregister(fd)
        os.close(fd)
        del ctr.fds[fd]
        if not ctr.fds:
            ctr.writer.close()

    def _echo(self, name: str):
        out = sys.stdout.buffer
        prefix = f"{name:<{self.width}} | ".encode()

        def echo(stream: str, line: bytes) -> None:
            try:
                out.write(prefix + line + b"\n")
                out.flush()
            except OSError:
                pass
        return echo

    def _say(self, msg: str) -> None:
        if self.foreground:
            try:
                print(f"minipod: {msg}", file=sys.stderr, flush=True)
            except OSError:
                pass

    # --- state -------------------------------------------------------------------------------

    def write_state(self, final: bool = False, message: str = "") -> None:
        st = {
            "phase": self.phase,
            "final": final,
            "stopping": self.stopping and not final,
            "message": message,
            "supervisor_pid": os.getpid(),
            "supervisor_start": state.proc_start_time(os.getpid()),
            "janitor_pid": os.getppid(),
            "cgroup_driver": self.driver.name,
            "pause": {"kind": self.pause.kind, "path": self.pause.path},
            "sandbox_pid": self.pod.sandbox_pid if not final else 0,
            "network": self.pod.network,
            "started_at": self.started_at,
            "finished_at": time.time() if final else 0,
            "containers": {n: c.status() for n, c in self.ctrs.items()},
        }
        state.write_json(os.path.join(self.run_dir, "state.json"), st)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
