"""The per-pod supervisor: builds the pod, then drives it through its life as the kubelet does.

It runs as the child of the janitor (see daemon.py for how both start). It is single-threaded
and never changes its own namespaces: namespace work happens in freshly forked children (see
child.py), network work in a helper process (net/agent.py).
The life of a pod (kubelet semantics, see the shared reference kubelet-semantics.md):
    init containers one at a time, each to exit 0 (sidecars: started, then kept running)
    -> app containers, restarted per restartPolicy with back-off
    -> termination: app containers in parallel (SIGTERM, grace, SIGKILL), then sidecars in
       reverse order -> teardown.
"""

from __future__ import annotations

import enum
import json
import os
import selectors
import signal
import sys
import time
from typing import Callable

from minipod import state
from minipod.kubelet import attach, attachproto, logs
from minipod.pod.plan import ContainerPlan, PodPlan

MAX_EVENTS = 200


def tell(fd: int, msg: dict) -> None:
    """Answer the CLI that waits on the ready pipe (once)."""
    if fd >= 0:
        try:
            os.write(fd, (json.dumps(msg) + "\n").encode())
            os.close(fd)
        except OSError:
            pass


class Host:
    """What a supervisor needs that does not depend on its pod: the configuration, the cgroup
    driver, the pause binary and the modules of the steps. The daemon prepares it while the
    CLI is still validating, so none of it is on the pod's critical path."""

    def __init__(self, janitor_kind: str = "python"):
        from minipod import cgroups, config
        from minipod.pod import pause as pausemod

        import minipod.kubelet.health  # noqa: F401
        import minipod.pod.pod  # noqa: F401
        import prctl  # noqa: F401 - imported once here, not in every forked container

        self.cfg = config.load()
        self.driver = cgroups.detect(self.cfg.cgroup_root, self.cfg.cgroup_driver)
        self.pause = pausemod.find(self.cfg.pause)
        self.janitor_kind = janitor_kind  # "c" (pause/janitor.c) or "python" (janitor.py)
        self.guard = None  # daemon.Guard: is the janitor still there?


class Phase(enum.Enum):
    """Where a container is in its life. The kubelet's status shows three states (waiting,
    running, terminated: Ctr.state, with their reasons); the supervisor needs to tell apart
    what each of those is waiting for."""

    WAITING = "waiting"          # not started yet, or again after the sandbox was re-created
    BACKOFF = "backoff"          # exited; restarts at restart_at
    STARTING = "starting"        # running; its postStart hook has not finished
    RUNNING = "running"          # running, probed
    STOPPING = "stopping"        # preStop or the stop signal sent; SIGKILL at stop_deadline
    KILLED = "killed"            # SIGKILL sent; waiting for the exit
    TERMINATED = "terminated"    # exited, not to be restarted (or not yet: the pod decides)
    COMPLETED = "completed"      # an init container that exited 0: done for good


class Ctr:
    """One container's runtime state (a kubelet containerStatus, more or less)."""

    def __init__(self, c: ContainerPlan, kind: str):
        self.c = c
        self.name = c.name
        self.kind = kind  # "init" | "sidecar" | "app"
        self.phase = Phase.WAITING
        self.pid = 0
        self.id = ""
        self.restarts = 0
        self.instance = -1  # log file number; -1 = never started
        self.state: dict = {"waiting": {"reason": "PodInitializing" if kind == "app"
                                        else "ContainerCreating"}}
        self.last_state: dict = {}
        self.writer: logs.Writer | None = None
        self.fds: dict[int, str] = {}  # output fds (pipes, or the pty's master) -> stream
        self.attach: attach.Endpoint | None = None  # from its first start to the pod's end
        self.oom_before = 0
        self.started_mono = 0.0
        self.backoff = 0.0
        self.restart_at: float | None = None      # BACKOFF: start again at this time
        self.probers: list = []
        self.stop_deadline: float | None = None  # STOPPING: SIGKILL at this time (monotonic)

    @property
    def running(self) -> bool:
        return bool(self.pid)

    @property
    def started(self) -> bool:
        """Running, past its startup probe and postStart hook (what a sidecar must be before
        the next init container may start)."""
        return self.running and self.phase != Phase.STARTING and \
            all(p.started for p in self.probers)

    @property
    def ready(self) -> bool:
        return self.started and self.kind != "init" and all(p.ready for p in self.probers)

    def exit_code(self) -> int | None:
        t = self.state.get("terminated")
        return None if t is None else t.get("exitCode")

    def status(self) -> dict:
        return {"name": self.name, "kind": self.kind, "pid": self.pid,
                "containerID": self.id, "restartCount": self.restarts, "state": self.state,
                "lastState": self.last_state, "ready": self.ready,
                "started": self.started, "instance": max(self.instance, 0),
                "image": self.c.image, "imageID": _image_id(self.c)}


# --- the kubelet's decisions, as pure functions (unit-tested with fakes) ----------------------

RESTART, COMPLETE, FAIL_POD, STAY = "restart", "complete", "fail-pod", "stay"


def after_exit(kind: str, policy: str, code: int) -> str:
    """What an exit with `code` means for a container of `kind` under the pod's restartPolicy:
    RESTART it, COMPLETE (an init container done), FAIL_POD (an init container failed under
    Never: the pod fails), or STAY terminated."""
    if kind == "sidecar":
        return RESTART  # sidecars are restarted whatever the pod's policy
    if kind == "init":
        if code == 0:
            return COMPLETE
        # An Always pod's init containers behave as OnFailure.
        return FAIL_POD if policy == "Never" else RESTART
    if policy == "Always" or (policy == "OnFailure" and code != 0):
        return RESTART
    return STAY


def backoff(previous: float, ran_for: float, initial: float, maximum: float) -> tuple[float, float]:
    """kubelet back-off: (this restart's delay, the next one's). The first restart is immediate,
    then initial, 2x ... up to maximum; a container that ran for 2 x maximum starts over."""
    if ran_for > 2 * maximum:
        previous = 0.0
    delay = previous
    return delay, (min(maximum, previous * 2) if previous else initial)


def to_start(inits: list[Ctr], apps_started: bool) -> tuple[list[Ctr], bool]:
    """The next step of the kubelet's sequence: (init containers or sidecars to start now,
    whether the app containers start now). Init containers run one at a time, each to exit 0;
    a sidecar (restartPolicy Always) is started and must be started (postStart, startup probe)
    before the next one; the apps start when every init container has completed."""
    for ctr in inits:
        if ctr.kind == "sidecar":
            if ctr.instance < 0 and ctr.restart_at is None:
                return [ctr], False
            if not ctr.started:
                return [], False  # the next step waits until the sidecar is started
            continue
        if ctr.phase == Phase.COMPLETED:
            continue
        if not ctr.running and ctr.restart_at is None:
            return [ctr], False
        return [], False
    return [], not apps_started


def to_stop(ctrs: list[Ctr]) -> list[Ctr]:
    """Termination order: app (and init) containers all at once, as the kubelet does (podman
    stops them one after another); sidecars only once those are gone, newest first, one at a
    time. `ctrs`: init containers in order, then apps."""
    first = [c for c in ctrs if c.kind != "sidecar" and c.running]
    if first:
        return first
    for ctr in reversed(ctrs):
        if ctr.kind == "sidecar" and ctr.running:
            return [ctr]
    return []


def _image_id(c: ContainerPlan) -> str:
    """As containerd reports it: repository@digest (docker.io/library/busybox@sha256:...)."""
    ref = c.image_ref.split("@", 1)[0]
    slash = ref.rfind("/")
    if ":" in ref[slash + 1:]:
        ref = ref[:slash + 1] + ref[slash + 1:].split(":", 1)[0]
    return f"{ref}@{c.image_digest}"


class Supervisor:
    def __init__(self, run_dir: str, foreground: bool, host: "Host", *, plan=None, pod=None,
                 clock: Callable[[], float] = time.monotonic, reap=None,
                 kill: Callable[[int, int], None] = os.kill):
        """The seams for unit tests: a plan, a pod (setup/start/teardown/rebuild_sandbox), a
        monotonic clock, reap() (yields (pid, status)) and kill(pid, sig) in place of the real
        ones (the cgroup driver is host.driver)."""
        from minipod.kubelet.health import Health

        self.run_dir = run_dir
        self.foreground = foreground
        self.plan = plan or PodPlan.from_json(state.read_json(os.path.join(run_dir, "plan.json")))
        self.cfg, self.driver, self.pause = host.cfg, host.driver, host.pause
        self.janitor_kind = host.janitor_kind
        self.guard = host.guard
        if pod is None:
            from minipod.pod.pod import Pod

            pod = Pod(self.plan, self.driver, self.pause.argv)
        self.pod = pod
        if reap is None:
            from minipod.pod.pod import reap
        self.reap = reap
        self.clock = clock
        self.kill = kill
        self.inits = [Ctr(c, "sidecar" if c.sidecar else "init")
                      for c in self.plan.init_containers]
        self.apps = [Ctr(c, "app") for c in self.plan.containers]
        self.ctrs = {c.name: c for c in self.inits + self.apps}
        self.sel = selectors.DefaultSelector()
        self.phase = state.PENDING
        self.apps_started = False
        self.stopping = False    # terminating: no more starts or restarts
        self.user_stop = False
        self.stop_deadline: float | None = None
        self.finished = False
        self.started_at = 0.0
        self.events: list[dict] = []
        self.health = Health(self)
        self.dirty = False  # events or statuses changed since state.json was written
        self.stop_requested_at = 0.0
        self.stop_grace: int | None = None
        self.width = max(len(n) for n in self.ctrs)

    # --- life --------------------------------------------------------------------------------

    def run(self, ready_fd: int, agent) -> int:
        from minipod.errors import SetupError

        self._signals()
        self.write_state()
        batch = self._first_batch()
        # A container the kubelet would refuse to create (CreateContainerConfigError) is not
        # started with the others; the pod is still built, and the container waits.
        first = [c for c in batch if not c.c.security.config_error]
        try:
            started = self.pod.setup(agent, [c.c for c in first])
        except SetupError as e:
            self.phase = state.FAILED
            tell(ready_fd, {"ok": False, "error": str(e)})
            agent.close()
            self.write_state(final=True, message=str(e))
            return 1
        lost = self.guard.lost() if self.guard else None
        if lost:  # the janitor died during set-up: fail the start rather than run unguarded
            agent.close()
            self.pod.teardown()
            self.phase = state.FAILED
            tell(ready_fd, {"ok": False, "error": lost})
            self.write_state(final=True, message=lost)
            return 1
        if self.guard:  # and if it dies later, say so (the selector reports its pipe's POLLERR)
            self.sel.register(self.guard.fd, selectors.EVENT_READ, self._janitor_lost)
        self.started_at = time.time()
        self.event("Normal", "SandboxReady", f"pod sandbox {self._sandbox_words()} ready, "
                   f"IP {self.pod.network.get('ip', '')}")
        for name, reason, message in self.plan.events:  # found while planning (envFrom keys)
            self.event("Warning", reason, message,
                       self.ctrs.get(name))
        for ctr, s in zip(first, started):
            self._running(ctr, s[1])
        for ctr in batch:
            if ctr.c.security.config_error:
                self._config_error(ctr, ctr.c.security.config_error)
        self.apps_started = batch == self.apps
        self.phase = state.RUNNING if self.apps_started and first else state.PENDING
        self.write_state()  # once for the whole start (_running only marks it dirty)
        tell(ready_fd, {"ok": True, "ip": self.pod.network.get("ip", "")})
        # The network agent's work is done; keeping it would keep pyroute2's memory alive for
        # nothing. Closed after the answer: waiting for it to exit is ~3 ms nobody waits for.
        agent.close()
        self._say(f"pod {self.plan.name} is running, IP {self.pod.network.get('ip', '')}")
        self.advance()
        if self.dirty:  # advance() started something: loop() writes only after its select
            self.write_state()
        self.loop()
        return self.finish()

    def _first_batch(self) -> list[Ctr]:
        """What pod setup starts: the first init container, or all app containers."""
        return self.inits[:1] if self.inits else self.apps

    def loop(self) -> None:
        while not self.finished:
            for key, _ in self.sel.select(self._next_timeout()):
                key.data(key.fileobj)
            self._timers()
            if self.stopping:
                self._terminate_step()
            if self.dirty:
                self.write_state()

    def finish(self) -> int:
        """Every container is gone for good: tear the pod down and record the outcome."""
        if self.phase != state.FAILED:
            codes = [c.exit_code() for c in self.apps]
            ok = self.apps_started and all(code == 0 for code in codes)
            self.phase = state.SUCCEEDED if ok else state.FAILED
        for ctr in self.ctrs.values():
            if ctr.attach:
                ctr.attach.close()
        try:
            self.pod.teardown()
        finally:
            self.write_state(final=True)
        self._say(f"pod {self.plan.name} {'stopped' if self.user_stop else 'completed'} "
                  f"({self.phase})")
        return 0 if self.phase == state.SUCCEEDED or self.user_stop else 1

    # --- the kubelet's sequence: init containers, then app containers ----------------------------

    def advance(self) -> None:
        """Start whatever is due next. Called after every event that could change it."""
        while not self.stopping:
            inits, apps = to_start(self.inits, self.apps_started)
            for ctr in inits:
                self._start(ctr)
            if apps:
                self.apps_started = True
                self.phase = state.RUNNING
                for ctr in self.apps:
                    self._start(ctr)
            if not inits or not all(c.started for c in inits):
                return  # (a sidecar that is started at once lets the next step go on)

    def _start(self, ctr: Ctr) -> None:
        from minipod.errors import SetupError

        if ctr.c.security.config_error:
            self._config_error(ctr, ctr.c.security.config_error)
            return
        if ctr.instance >= 0:
            ctr.restarts += 1
            if "terminated" in ctr.state:
                ctr.last_state = ctr.state
        try:
            started = self.pod.start(ctr.c)
        except SetupError as e:
            ctr.instance += 1
            ctr.phase = Phase.TERMINATED
            ctr.state = {"terminated": {"reason": "StartError", "exitCode": 128,
                                        "message": str(e), "finishedAt": logs.timestamp()}}
            self.event("Warning", "Failed", str(e), ctr)
            self._after_exit(ctr, 128)
            return
        self._running(ctr, started)

    def _config_error(self, ctr: Ctr, message: str) -> None:
        """The kubelet's CreateContainerConfigError (runAsNonRoot with a root user): nothing is
        created; the container waits with that reason, a Failed event says why, and the kubelet
        tries again after its back-off (the same verdict, since the plan is fixed)."""
        delay, ctr.backoff = backoff(ctr.backoff, 0.0, self.cfg.backoff_initial,
                                     self.cfg.backoff_max)
        ctr.phase = Phase.WAITING
        ctr.restart_at = self.clock() + max(delay, self.cfg.backoff_initial)
        ctr.state = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
        self.event("Warning", "Failed", f"Error: {message}", ctr)
        self._say(f"container {ctr.name}: {message}")
        self.write_state()

    # --- exits and restarts ------------------------------------------------------------------

    def _exited(self, ctr: Ctr, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as shells say
        # Read the OOM counter before anything else touches the cgroup (runc does the same).
        ooms = self.driver.oom_kills(ctr.c.cgroup)
        oom = ooms > ctr.oom_before
        ctr.oom_before = ooms
        if self.plan.share_pid or self.plan.host_pid:
            # No PID namespace of its own, whose end would take the rest of its processes with
            # it: kill them, as runc does when such a container's init exits.
            self.driver.kill(ctr.c.cgroup, signal.SIGKILL)
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        if oom:
            self.event("Warning", "OOMKilling", f"memory limit reached: container {ctr.name} "
                       "was killed by the kernel's OOM killer", ctr)
        ctr.pid = 0
        ctr.phase = Phase.TERMINATED
        ctr.stop_deadline = None
        ctr.probers = []
        self.health.cancel(ctr)
        ctr.state = {"terminated": {"reason": reason, "exitCode": code,
                                    "startedAt": ctr.state.get("running", {}).get("startedAt"),
                                    "finishedAt": logs.timestamp(), "containerID": ctr.id}}
        self._say(f"container {ctr.name} exited with code {code} ({reason})")
        if ctr.attach:
            ctr.attach.exited(code)
        self._after_exit(ctr, code)

    def _after_exit(self, ctr: Ctr, code: int) -> None:
        if self.stopping:
            self.write_state()
            return
        what = after_exit(ctr.kind, self.plan.restart_policy, code)
        if what == COMPLETE:
            ctr.phase = Phase.COMPLETED
        elif what == FAIL_POD:
            self.phase = state.FAILED
            self._say(f"init container {ctr.name} failed and restartPolicy is Never")
            self.begin_termination(self.plan.grace_seconds)
            return
        if what == RESTART:
            self._schedule_restart(ctr)
        elif ctr.kind == "app" and all(not c.running and c.restart_at is None
                                       for c in self.apps):
            self.begin_termination(self.plan.grace_seconds)  # the pod has completed
            return
        self.write_state()
        self.advance()

    def _schedule_restart(self, ctr: Ctr) -> None:
        """See backoff(): the first restart is immediate, then doubling."""
        now = self.clock()
        delay, ctr.backoff = backoff(ctr.backoff, now - ctr.started_mono,
                                     self.cfg.backoff_initial, self.cfg.backoff_max)
        ctr.phase = Phase.BACKOFF
        ctr.restart_at = now + delay
        if delay:
            ctr.last_state, ctr.state = ctr.state, {"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:g}s restarting failed container={ctr.name} "
                           f"pod={self.plan.name}"}}
            self.event("Warning", "BackOff", f"Back-off restarting failed container "
                       f"{ctr.name} in pod {self.plan.name}", ctr)
            self._say(f"container {ctr.name}: back-off {delay:g}s before restarting")

    def _timers(self) -> None:
        now = self.clock()
        for ctr in self.ctrs.values():
            if ctr.restart_at is not None and ctr.restart_at <= now and not ctr.fds:
                ctr.restart_at = None
                ctr.phase = Phase.TERMINATED
                if not self.stopping:
                    self._start(ctr)
                    self.advance()
            if ctr.phase == Phase.STOPPING and ctr.stop_deadline <= now:
                ctr.phase = Phase.KILLED  # once: then we wait for the reap
                self.driver.kill(ctr.c.cgroup, signal.SIGKILL)  # the grace period is over
        if not self.stopping:
            self.health.run_due()

    def _next_timeout(self) -> float | None:
        times = [c.restart_at for c in self.ctrs.values() if c.restart_at is not None]
        times += [c.stop_deadline for c in self.ctrs.values() if c.phase == Phase.STOPPING]
        if not self.stopping and (t := self.health.next_time()) is not None:
            times.append(t)
        if not times:
            return None
        return max(0.0, min(times) - self.clock())

    # --- termination ---------------------------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        if self.stopping and self.user_stop:
            if signum == signal.SIGINT:  # a second Ctrl-C: don't wait for the grace period
                self.stop_deadline = self.clock()
                for ctr in self.ctrs.values():
                    if ctr.running:
                        ctr.stop_deadline = self.stop_deadline
                        if ctr.phase in (Phase.STARTING, Phase.RUNNING):
                            ctr.phase = Phase.STOPPING  # (a sidecar not asked yet) SIGKILL now
            return
        grace = self.plan.grace_seconds
        req = state.read_json(os.path.join(self.run_dir, "stop.json"))
        if req and req.get("grace") is not None:
            grace = int(req["grace"])
        self.user_stop = True
        self.stop_requested_at = time.time()
        self.stop_grace = grace
        self._say(f"stopping pod {self.plan.name} (grace period {grace}s)")
        self.begin_termination(grace)

    def begin_termination(self, grace: int) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = self.clock() + grace
            self.health.cancel(keep_hooks=True)  # probes stop; a running preStop goes on
        elif grace == 0:
            self.stop_deadline = self.clock()
        for ctr in self.ctrs.values():
            if ctr.phase == Phase.BACKOFF:
                ctr.phase = Phase.TERMINATED  # no restart now
            ctr.restart_at = None
            if "waiting" in ctr.state and not ctr.running:
                ctr.state = {"waiting": {"reason": ctr.state["waiting"].get("reason", "")}}
        self._terminate_step()
        self.write_state()

    def _terminate_step(self) -> None:
        """Stop what is due (see to_stop); finished once nothing runs and no handler is left."""
        for ctr in to_stop(self.inits + self.apps):
            self.stop_container(ctr, self.stop_deadline, f"Stopping container {ctr.name}")
        busy = any(c.running or c.fds for c in self.ctrs.values()) or self.health.inflight
        self.finished = not busy

    def stop_container(self, ctr: Ctr, deadline: float, message: str) -> None:
        """preStop (if any), then the stop signal; SIGKILL at the deadline (see _timers)."""
        if ctr.stop_deadline is not None:
            ctr.stop_deadline = min(ctr.stop_deadline, deadline)
            return
        ctr.stop_deadline = deadline
        ctr.phase = Phase.STOPPING
        self.event("Normal", "Killing", message, ctr)
        if not self.health.pre_stop(ctr, deadline):
            self.send_stop_signal(ctr)

    def send_stop_signal(self, ctr: Ctr) -> None:
        if not ctr.running:
            return
        late = ctr.stop_deadline is not None and ctr.stop_deadline <= self.clock()
        try:
            self.kill(ctr.pid, signal.SIGKILL if late else ctr.c.stop_signal)
        except ProcessLookupError:
            pass

    # --- signals and children ------------------------------------------------------------------

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

    def _reap(self) -> None:
        by_pid = {ctr.pid: ctr for ctr in self.ctrs.values() if ctr.pid}
        for pid, status in self.reap():
            if pid in by_pid:
                self._exited(by_pid[pid], status)
            elif pid == self.pod.sandbox_pid:
                self._sandbox_died()
            else:
                self.health.reaped(pid, status)

    def _sandbox_words(self) -> str:
        """The sandbox as the SandboxReady event names it: pause's PID, or where the pins are."""
        pins = getattr(self.pod, "pinned", None)
        if pins is None:
            return str(self.pod.sandbox_pid)
        pause = f", pause {self.pod.sandbox_pid} for the PID namespace" \
            if self.pod.sandbox_pid else ""
        return f"(namespaces pinned in {pins.dir}{pause})"

    def _sandbox_died(self) -> None:
        """The kubelet's answer to a dead sandbox: kill every container, build a new sandbox
        (a new IP is possible), and run the init containers again."""
        self.pod.sandbox_pid = 0
        self.event("Normal", "SandboxChanged",
                   "Pod sandbox changed, it will be killed and re-created.")
        self._say("the sandbox (pause) died: re-creating the pod sandbox")
        if self.stopping:
            return
        for ctr in self.ctrs.values():
            if ctr.running:
                self.driver.kill(ctr.c.cgroup, signal.SIGKILL)
        deadline = self.clock() + 10
        while any(c.running for c in self.ctrs.values()) and self.clock() < deadline:
            time.sleep(0.01)
            self._reap_only()
        from minipod.errors import SetupError

        try:
            self.pod.rebuild_sandbox()
        except SetupError as e:
            self.phase = state.FAILED
            self.event("Warning", "FailedCreatePodSandBox", str(e))
            self.begin_termination(0)
            return
        for ctr in self.ctrs.values():
            ctr.phase = Phase.WAITING if not ctr.running else ctr.phase
            ctr.restart_at = None
            if ctr.kind == "app":
                ctr.state = {"waiting": {"reason": "PodInitializing"}}
        self.apps_started = False
        self.event("Normal", "SandboxReady", f"pod sandbox {self._sandbox_words()} ready, "
                   f"IP {self.pod.network.get('ip', '')}")
        self.write_state()
        self.advance()

    def _reap_only(self) -> None:
        """Reap exits while we wait for kills, recording them without reacting."""
        stopping, self.stopping = self.stopping, True
        try:
            by_pid = {ctr.pid: ctr for ctr in self.ctrs.values() if ctr.pid}
            for pid, status in self.reap():
                if pid in by_pid:
                    self._exited(by_pid[pid], status)
                else:
                    self.health.reaped(pid, status)
        finally:
            self.stopping = stopping

    # --- running containers and their output -------------------------------------------------

    def _running(self, ctr: Ctr, s) -> None:
        ctr.pid = s.pid
        ctr.id = os.urandom(32).hex()
        ctr.instance += 1
        ctr.started_mono = self.clock()
        ctr.phase = Phase.RUNNING
        ctr.state = {"running": {"startedAt": logs.timestamp()}}
        self.event("Normal", "Created", f"Created container {ctr.name}", ctr)
        self.event("Normal", "Started", f"Started container {ctr.name}", ctr)
        self.health.started(ctr)
        echo = self._echo(ctr.name) if self.foreground else None
        ctr.writer = logs.Writer(ctr.c.log_dir, ctr.instance, echo)
        # A tty's one stream is logged as stdout, as the kubelet and containerd log it.
        outs = [(s.terminal, "stdout")] if s.terminal >= 0 else \
            [(s.stdout, "stdout"), (s.stderr, "stderr")]
        for fd, stream in outs:
            os.set_blocking(fd, False)
            ctr.fds[fd] = stream
            self.sel.register(fd, selectors.EVENT_READ, lambda f, c=ctr: self._output(c, f))
        self._attach(ctr, s)
        self.dirty = True  # written by our caller's loop (or run()), once for all of a batch

    def _attach(self, ctr: Ctr, s) -> None:
        """Give the new instance's stdin (and a tty's resizes) to the container's attach
        endpoint, made at its first start (kubelet/attach.py)."""
        # The master stays the output fd; a dup of it takes stdin and resizes.
        fd = os.dup(s.terminal) if s.terminal >= 0 else s.stdin
        if ctr.attach is None:
            try:
                ctr.attach = attach.Endpoint(
                    self.sel, attachproto.socket_path(self.run_dir, ctr.name), ctr.name,
                    tty=ctr.c.tty, stdin=ctr.c.stdin, stdin_once=ctr.c.stdin_once)
            except OSError as e:  # the container runs; only attach is not there
                self.event("Warning", "FailedAttach", f"no attach socket for container "
                           f"{ctr.name}: {e.strerror or e}", ctr)
                if fd >= 0:
                    os.close(fd)
                return
        ctr.attach.started(fd)

    def _output(self, ctr: Ctr, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every end of a pty's slave is closed, the terminal is over
            data = b""
        stream = ctr.fds[fd]
        if data:
            ctr.writer.feed(stream, data)
            if ctr.attach:
                ctr.attach.output(stream, data)
            return
        ctr.writer.flush(stream)
        self.sel.unregister(fd)
        os.close(fd)
        del ctr.fds[fd]
        if not ctr.fds:
            ctr.writer.close()
            if ctr.attach:
                ctr.attach.output_done()

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

    def _janitor_lost(self, fd: int) -> None:
        self.sel.unregister(fd)
        self.event("Warning", "JanitorLost", self.guard.lost() or "the janitor has died")

    def _say(self, msg: str) -> None:
        if self.foreground:
            try:
                print(f"minipod: {msg}", file=sys.stderr, flush=True)
            except OSError:
                pass

    # --- state and events ----------------------------------------------------------------------

    def event(self, kind: str, reason: str, message: str, ctr: Ctr | None = None) -> None:
        """Record a kubelet-style event; repeats of the last one are counted, not appended."""
        now = time.time()
        self.dirty = True
        field = "initContainers" if ctr and ctr.kind != "app" else "containers"
        obj = f"spec.{field}{{{ctr.name}}}" if ctr else ""
        last = self.events[-1] if self.events else None
        if last and (last["type"], last["reason"], last["message"], last["object"]) == \
                (kind, reason, message, obj):
            last["count"] += 1
            last["lastTimestamp"] = now
        else:
            self.events.append({"type": kind, "reason": reason, "message": message,
                                "object": obj, "count": 1, "firstTimestamp": now,
                                "lastTimestamp": now})
            del self.events[:-MAX_EVENTS]

    def write_state(self, final: bool = False, message: str = "") -> None:
        self.dirty = False
        st = {
            "phase": self.phase,
            "final": final,
            "stopping": self.stopping and not final,
            "message": message,
            "supervisor_pid": os.getpid(),
            "supervisor_start": state.proc_start_time(os.getpid()),
            # Never a PID that is not the janitor (after its death our parent is PID 1).
            "janitor_pid": self.guard.pid if self.guard and not self.guard.lost() else 0,
            "janitor_start": self.guard.start if self.guard else None,
            "janitor_kind": self.janitor_kind,
            "cgroup_driver": self.driver.name,
            "pause": {"kind": self.pause.kind, "path": self.pause.path},
            "sandbox_pid": self.pod.sandbox_pid if not final else 0,
            # pinned mode: the files that hold the namespaces (pod/pinned.py), gone when final
            "sandbox_mode": getattr(self.plan, "sandbox_mode", "pause"),
            "pins": pins.to_json() if (pins := getattr(self.pod, "pinned", None)) and not final
            else {},
            "network": self.pod.network,
            "started_at": self.started_at,
            "finished_at": time.time() if final else 0,
            "apps_started": self.apps_started,
            "stop_requested_at": self.stop_requested_at,
            "stop_grace": self.stop_grace,
            "containers": {n: c.status() for n, c in self.ctrs.items()},
            "events": self.events,
        }
        state.write_json(os.path.join(self.run_dir, "state.json"), st)
