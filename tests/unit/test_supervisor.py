"""The supervisor's decisions without a pod: restart policy, back-off, the init/sidecar order,
the termination order and a dead sandbox, with a fake pod, cgroup driver, clock, reap and kill.
(The same behaviour against real containers: tests/integration/test_lifecycle.py.)"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from plans import container_plan

from minipod.errors import SetupError
from minipod.kubelet import supervisor as sv
from minipod.kubelet.supervisor import Phase


# --- the pure decisions ----------------------------------------------------------------------

@pytest.mark.parametrize("kind,policy,code,want", [
    ("sidecar", "Never", 0, sv.RESTART),
    ("sidecar", "OnFailure", 1, sv.RESTART),
    ("init", "Always", 0, sv.COMPLETE),
    ("init", "Never", 0, sv.COMPLETE),
    ("init", "Never", 1, sv.FAIL_POD),
    ("init", "OnFailure", 1, sv.RESTART),
    ("init", "Always", 2, sv.RESTART),   # an Always pod's init containers behave as OnFailure
    ("app", "Always", 0, sv.RESTART),
    ("app", "Always", 1, sv.RESTART),
    ("app", "OnFailure", 0, sv.STAY),
    ("app", "OnFailure", 137, sv.RESTART),
    ("app", "Never", 1, sv.STAY),
])
def test_after_exit_follows_the_restart_policy(kind, policy, code, want):
    assert sv.after_exit(kind, policy, code) == want


def test_backoff_is_immediate_then_doubles_up_to_the_maximum():
    delays, b = [], 0.0
    for _ in range(8):
        d, b = sv.backoff(b, 1.0, 10.0, 300.0)
        delays.append(d)
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300]


def test_backoff_starts_over_after_running_for_twice_the_maximum():
    assert sv.backoff(300.0, 600.0, 10.0, 300.0) == (300.0, 300.0)  # not quite: still backs off
    assert sv.backoff(300.0, 600.5, 10.0, 300.0) == (0.0, 10.0)


def ctr(name: str, kind: str, phase: Phase = Phase.WAITING, pid: int = 0,
        instance: int = -1) -> sv.Ctr:
    c = sv.Ctr(container_plan(name), kind)
    c.phase, c.pid, c.instance = phase, pid, instance
    return c


def test_to_start_runs_init_containers_one_at_a_time_and_waits_for_sidecars():
    a, s, b = ctr("a", "init"), ctr("s", "sidecar"), ctr("b", "init")
    assert sv.to_start([a, s, b], False) == ([a], False)
    a.phase, a.pid, a.instance = Phase.RUNNING, 10, 0
    assert sv.to_start([a, s, b], False) == ([], False)   # a runs: nothing else yet
    a.phase, a.pid = Phase.COMPLETED, 0
    assert sv.to_start([a, s, b], False) == ([s], False)
    s.phase, s.pid, s.instance = Phase.STARTING, 11, 0     # its postStart hook runs
    assert sv.to_start([a, s, b], False) == ([], False)
    s.phase = Phase.RUNNING
    assert sv.to_start([a, s, b], False) == ([b], False)
    b.phase = Phase.COMPLETED
    assert sv.to_start([a, s, b], False) == ([], True)    # the apps now
    assert sv.to_start([a, s, b], True) == ([], False)    # ... once


def test_to_start_does_not_restart_what_is_backing_off():
    a = ctr("a", "init", Phase.BACKOFF, instance=0)
    a.restart_at = 5.0
    assert sv.to_start([a], False) == ([], False)


def test_to_stop_stops_apps_and_inits_first_then_sidecars_newest_first():
    s1 = ctr("s1", "sidecar", Phase.RUNNING, pid=1)
    s2 = ctr("s2", "sidecar", Phase.RUNNING, pid=2)
    i = ctr("i", "init", Phase.RUNNING, pid=3)
    app = ctr("app", "app", Phase.RUNNING, pid=4)
    assert sv.to_stop([s1, s2, i, app]) == [i, app]
    i.pid = app.pid = 0
    assert sv.to_stop([s1, s2, i, app]) == [s2]
    s2.pid = 0
    assert sv.to_stop([s1, s2, i, app]) == [s1]
    s1.pid = 0
    assert sv.to_stop([s1, s2, i, app]) == []


# --- the supervisor with fakes ---------------------------------------------------------------

from minipod.pod.security import ContainerSecurity  # noqa: E402


@dataclass
class FakeContainer:
    """The fields of a ContainerPlan the supervisor reads."""
    name: str
    log_dir: str
    sidecar: bool = False
    spec: dict = field(default_factory=dict)
    cgroup: str = ""
    stop_signal: int = signal.SIGTERM
    image: str = "busybox"
    image_ref: str = "docker.io/library/busybox:latest"
    image_digest: str = "sha256:0"
    security: ContainerSecurity = field(default_factory=ContainerSecurity)
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False


class FakeDriver:
    name = "fake"

    def __init__(self, world: "World"):
        self.world = world
        self.killed: list[tuple[str, int]] = []

    def oom_kills(self, cgroup: str) -> int:
        return 0

    def kill(self, cgroup: str, sig: int) -> None:
        self.killed.append((cgroup, sig))
        if sig == signal.SIGKILL:  # everything in the cgroup dies
            for name, pid in list(self.world.pids.items()):
                if cgroup == f"cg/{name}":
                    self.world.die(name, -signal.SIGKILL)


class FakePod:
    def __init__(self, world: "World"):
        self.world = world
        self.sandbox_pid = 1
        self.network = {"ip": "10.0.0.2"}
        self.rebuilt = 0
        self.fail: set[str] = set()

    def start(self, c: dict):
        if c.name in self.fail:
            raise SetupError(f'start container "{c.name}": exec: "x": not found')
        return self.world.spawn(c.name)

    def rebuild_sandbox(self) -> None:
        self.rebuilt += 1
        self.sandbox_pid = 2

    def teardown(self) -> None:
        pass


class World:
    """Fake processes: PIDs, the exits reap() returns, the signals kill() sent, a clock."""

    def __init__(self):
        self.now = 1000.0
        self.next_pid = 100
        self.pids: dict[str, int] = {}     # running container -> pid
        self.exits: list[tuple[int, int]] = []
        self.signals: list[tuple[str, int]] = []
        self.writers: dict[str, list[int]] = {}  # running container -> its stdout/stderr
        self.started: list[str] = []

    def spawn(self, name: str):
        self.next_pid += 1
        self.pids[name] = self.next_pid
        self.started.append(name)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.writers[name] = [out_w, err_w]
        return SimpleNamespace(pid=self.next_pid, stdout=out_r, stderr=err_r, stdin=-1,
                               terminal=-1)

    def die(self, name: str, code: int) -> None:
        """Container `name` exits with `code` (negative: killed by that signal)."""
        pid = self.pids.pop(name)
        for fd in self.writers.pop(name):  # its output pipes close with it
            os.close(fd)
        status = (-code) & 0x7f if code < 0 else (code & 0xff) << 8
        self.exits.append((pid, status))

    def reap(self):
        exits, self.exits = self.exits, []
        return exits

    def kill(self, pid: int, sig: int) -> None:
        name = next(n for n, p in self.pids.items() if p == pid)
        self.signals.append((name, sig))

    def clock(self) -> float:
        return self.now

    def close(self) -> None:
        for fds in self.writers.values():
            for fd in fds:
                os.close(fd)


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()


def make(tmp_path, world: World, apps=("web",), inits=(), policy="Always", grace=30,
         specs=None) -> sv.Supervisor:
    specs = specs or {}

    def plan_c(name, sidecar=False):
        return FakeContainer(name, str(tmp_path / "logs" / name), sidecar,
                             specs.get(name, {}), f"cg/{name}")

    plan = SimpleNamespace(
        name="p", restart_policy=policy, grace_seconds=grace, share_pid=False, host_pid=False,
        init_containers=[plan_c(n.removesuffix("+"), n.endswith("+")) for n in inits],
        containers=[plan_c(n) for n in apps])
    host = SimpleNamespace(cfg=SimpleNamespace(backoff_initial=10.0, backoff_max=300.0),
                           driver=None, pause=SimpleNamespace(kind="c", path="/pause", argv=[]),
                           janitor_kind="c", guard=None)
    host.driver = FakeDriver(world)
    world.driver = host.driver
    sup = sv.Supervisor(str(tmp_path), False, host, plan=plan, pod=FakePod(world),
                        clock=world.clock, reap=world.reap, kill=world.kill)
    return sup


def begin(sup: sv.Supervisor) -> None:
    """What run() does after pod setup, minus the pipes to the CLI."""
    first = sup._first_batch()
    for c in first:
        sup._running(c, sup.pod.start(c.c))
    sup.apps_started = first == sup.apps
    sup.advance()


def step(sup: sv.Supervisor) -> None:
    """One turn of the loop, without select: exits, output, timers, termination."""
    sup._reap()
    for c in sup.ctrs.values():
        for fd in list(c.fds):
            sup._output(c, fd)  # EOF once the fake process has died
    sup._timers()
    if sup.stopping:
        sup._terminate_step()


def status(sup, name: str) -> dict:
    return sup.ctrs[name].status()


def test_always_restarts_at_once_then_backs_off(tmp_path, world):
    sup = make(tmp_path, world)
    begin(sup)
    web = sup.ctrs["web"]
    assert web.phase == Phase.RUNNING and world.started == ["web"]
    world.now += 5
    world.die("web", 1)
    step(sup)
    assert world.started == ["web", "web"]  # the first restart is immediate
    assert web.restarts == 1 and web.phase == Phase.RUNNING
    assert web.last_state["terminated"]["exitCode"] == 1
    world.die("web", 1)
    step(sup)
    assert web.phase == Phase.BACKOFF and web.restart_at == world.now + 10
    assert web.state["waiting"]["reason"] == "CrashLoopBackOff"
    assert any(e["reason"] == "BackOff" for e in sup.events)
    world.now += 9.9
    step(sup)
    assert world.started == ["web", "web"]
    world.now += 0.2
    step(sup)
    assert world.started == ["web", "web", "web"] and web.restarts == 2
    assert sup._next_timeout() is None  # nothing timed is pending


def test_on_failure_pod_completes_when_its_apps_exit_0(tmp_path, world):
    sup = make(tmp_path, world, apps=("a", "b"), policy="OnFailure")
    begin(sup)
    world.die("a", 0)
    step(sup)
    assert sup.ctrs["a"].phase == Phase.TERMINATED and not sup.stopping
    world.die("b", 3)
    step(sup)
    assert sup.ctrs["b"].phase == Phase.RUNNING  # restarted: it failed
    world.die("b", 0)
    step(sup)
    assert sup.stopping and sup.finished
    assert sup.finish() == 0 and sup.phase == "Succeeded"


def test_never_pod_fails_when_an_app_fails(tmp_path, world):
    sup = make(tmp_path, world, policy="Never")
    begin(sup)
    world.die("web", 2)
    step(sup)
    assert sup.finished and world.started == ["web"]
    assert sup.finish() == 1 and sup.phase == "Failed"


def test_init_containers_then_sidecar_then_apps_in_order(tmp_path, world):
    sup = make(tmp_path, world, apps=("web",), inits=("a", "side+", "b"))
    begin(sup)
    assert world.started == ["a"]
    world.die("a", 1)  # an Always pod's init container is retried
    step(sup)
    assert world.started == ["a", "a"]
    world.die("a", 0)
    step(sup)
    # The sidecar is started at once (no postStart, no startup probe): b follows it.
    assert world.started == ["a", "a", "side", "b"]
    assert sup.ctrs["a"].phase == Phase.COMPLETED and not sup.apps_started
    world.die("b", 0)
    step(sup)
    assert world.started[-1] == "web" and sup.apps_started and sup.phase == "Running"
    world.die("side", 1)  # a sidecar is restarted whatever the policy; apps are not touched
    step(sup)
    assert world.started[-1] == "side" and sup.ctrs["web"].phase == Phase.RUNNING


def test_init_failure_under_never_fails_the_pod(tmp_path, world):
    sup = make(tmp_path, world, inits=("a",), policy="Never")
    begin(sup)
    world.die("a", 1)
    step(sup)
    assert sup.phase == "Failed" and sup.finished and "web" not in world.started


def test_start_error_is_a_terminated_state_and_backs_off(tmp_path, world):
    sup = make(tmp_path, world)
    begin(sup)
    sup.pod.fail.add("web")
    world.die("web", 1)
    step(sup)  # the immediate restart fails to start
    web = sup.ctrs["web"]
    assert web.last_state["terminated"]["reason"] == "StartError"
    assert web.state["waiting"]["reason"] == "CrashLoopBackOff"
    assert web.phase == Phase.BACKOFF and web.restart_at == world.now + 10
    assert any(e["reason"] == "Failed" for e in sup.events)


def test_termination_stops_apps_then_sidecars_newest_first_and_kills_at_the_deadline(
        tmp_path, world):
    sup = make(tmp_path, world, apps=("web", "api"), inits=("s1+", "s2+"), grace=5)
    begin(sup)
    assert world.started == ["s1", "s2", "web", "api"]
    sup.begin_termination(5)
    assert world.signals == [("web", signal.SIGTERM), ("api", signal.SIGTERM)]
    assert sup.ctrs["web"].phase == Phase.STOPPING
    assert sup.ctrs["s1"].phase == Phase.RUNNING  # sidecars wait for the apps
    world.die("web", 0)
    step(sup)
    assert len(world.signals) == 2  # api still runs: no sidecar is stopped yet
    world.now += 5  # the grace period is over: SIGKILL through the cgroup
    step(sup)
    assert ("cg/api", signal.SIGKILL) in world.driver.killed
    step(sup)  # api's exit is reaped: now the newest sidecar
    assert sup.ctrs["api"].phase == Phase.TERMINATED
    assert world.signals[-1] == ("s2", signal.SIGKILL)  # (the deadline has passed)
    world.die("s2", -9)
    step(sup)
    assert world.signals[-1] == ("s1", signal.SIGKILL)
    assert not sup.finished
    world.die("s1", -9)
    step(sup)
    assert sup.finished
    assert world.started == ["s1", "s2", "web", "api"]  # nothing restarted while stopping


def test_second_ctrl_c_kills_everything_now(tmp_path, world):
    sup = make(tmp_path, world, apps=("web",), inits=("side+",))
    begin(sup)
    sup.request_stop(signal.SIGINT)
    assert world.signals == [("web", signal.SIGTERM)]
    sup.request_stop(signal.SIGINT)
    step(sup)
    assert {("cg/web", signal.SIGKILL), ("cg/side", signal.SIGKILL)} <= set(world.driver.killed)
    step(sup)
    assert sup.finished


def test_dead_sandbox_kills_the_containers_rebuilds_and_reruns_init(tmp_path, world):
    sup = make(tmp_path, world, apps=("web",), inits=("a",))
    begin(sup)
    world.die("a", 0)
    step(sup)
    assert world.started == ["a", "web"] and sup.ctrs["a"].phase == Phase.COMPLETED
    world.exits.append((sup.pod.sandbox_pid, 9))  # pause was killed
    sup._reap()
    assert ("cg/web", signal.SIGKILL) in world.driver.killed
    assert sup.pod.rebuilt == 1
    assert any(e["reason"] == "SandboxChanged" for e in sup.events)
    # The init container runs again, and the app waits for it.
    assert world.started == ["a", "web", "a"]
    assert sup.ctrs["web"].state == {"waiting": {"reason": "PodInitializing"}}
    assert not sup.apps_started
    world.die("a", 0)
    step(sup)
    assert world.started[-1] == "web" and sup.ctrs["web"].restarts == 1


def test_dead_sandbox_that_cannot_be_rebuilt_fails_the_pod(tmp_path, world):
    sup = make(tmp_path, world)
    begin(sup)

    def broken():
        raise SetupError("set up the network: no address left")
    sup.pod.rebuild_sandbox = broken
    world.exits.append((sup.pod.sandbox_pid, 9))
    sup._reap()
    assert sup.phase == "Failed" and sup.stopping
    assert any(e["reason"] == "FailedCreatePodSandBox" for e in sup.events)


def test_state_json_records_the_containers(tmp_path, world):
    sup = make(tmp_path, world)
    begin(sup)
    sup.write_state()
    import json
    st = json.loads((tmp_path / "state.json").read_text())
    assert st["containers"]["web"]["state"].keys() == {"running"}
    assert st["containers"]["web"]["pid"] == world.pids["web"]
