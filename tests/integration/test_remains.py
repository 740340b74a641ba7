"""Whatever is left of a pod, `rm -f` removes: a running pod whose record was damaged or
deleted, an empty run directory, a pod whose run directory is gone. And one damaged pod never
hides the others. The `mp` fixture checks the host is as it was (links, leases, NAT, cgroups,
mounts, processes, data directories).

Also: each set-up step of a real pod failed in turn ($MINIPOD_TEST_FAIL_AFTER, read by
kubelet/daemon.py) leaves nothing behind, and `run` says why in one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: init
    image: busybox
    command: ["true"]
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
  - name: side
    image: busybox
    command: ["sleep", "3600"]
"""


def start(mp, name: str) -> dict:
    mp.minipod("run", "-d", mp.write(f"{name}.yaml", POD.format(name=name)))
    return mp.inspect(name)


def rows(mp) -> dict[str, list[str]]:
    out = mp.minipod("ps").stdout
    return {ln.split()[0]: ln.split() for ln in out.splitlines()[1:]}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


DAMAGE = {
    "truncated state.json": {"state.json": '{"phase": "Runn'},
    "state.json is [1,2]": {"state.json": "[1,2]"},
    "plan.json is {}": {"plan.json": "{}"},
    "plan.json deleted": {"plan.json": None},
    "empty run directory": {"plan.json": None, "state.json": None, "supervisor.log": None},
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_rm_f_removes_a_running_pod_whatever_its_record(mp, damage):
    start(mp, "good")
    info = start(mp, "bad")
    pids = [info["supervisor"]["pid"], info["sandbox"]["pid"]] + \
        [c["pid"] for c in info["containers"] if c["pid"]]
    d = os.path.join(mp.root, "pods", "bad")
    # The running supervisor rewrites state.json on every change (a probe, readiness): hold it
    # still while the damage is looked at, as if the file had been damaged after its last write.
    os.kill(info["supervisor"]["pid"], signal.SIGSTOP)
    for f, text in DAMAGE[damage].items():
        if text is None:
            os.unlink(os.path.join(d, f))
        else:
            with open(os.path.join(d, f), "w") as fh:
                fh.write(text)
    os.utime(d, (0, 0))  # an old directory: not a `run` that has just claimed the name
    r = rows(mp)
    assert r["good"][2] == "Running" and r["bad"][2] == "Unknown", r
    p = mp.minipod("ps")
    assert 'pod "bad" is Unknown' in p.stderr and p.stderr.count("\n") == 1, p.stderr
    p = mp.minipod("inspect", "bad", check=False)
    assert p.returncode == 1 and p.stderr.startswith('error: pod "bad" is damaged'), p.stderr
    assert p.stderr.count("\n") == 1
    os.kill(info["supervisor"]["pid"], signal.SIGCONT)
    mp.minipod("rm", "-f", "bad")
    for pid in pids:
        assert not alive(pid), f"process {pid} of the removed pod still runs"
    assert list(rows(mp)) == ["good"]
    assert mp.minipod("rm", "-f", "bad", check=False).returncode == 1  # nothing left: not found
    mp.minipod("rm", "-f", "good")


def test_rm_f_removes_a_running_pod_whose_run_directory_is_gone(mp):
    info = start(mp, "gone")
    # Once it runs, the supervisor has written its state; a write racing the removal would
    # make rmtree miss a just-renamed temporary file (FileNotFoundError, seen under load).
    mp.wait(lambda: rows(mp)["gone"][2] == "Running", what="the pod running")
    shutil.rmtree(os.path.join(mp.root, "pods", "gone"))
    assert "gone" not in rows(mp)
    mp.minipod("rm", "-f", "gone")  # found by its data directory, cgroup and supervisor's log
    assert not alive(info["supervisor"]["pid"]) and not alive(info["sandbox"]["pid"])


def test_rm_f_after_the_whole_runtime_root_was_removed_leaves_nothing(mp):
    """Every minipod process of the pod SIGKILLed (its containers and pause die with the
    supervisor: PR_SET_PDEATHSIG), then the runtime root deleted -- records, leases, locks:
    `rm -f` still finds the pod (its cgroup, its netns pin, its veth) and removes it, and with
    it the bridge and NAT rules nobody else uses any more."""
    before = mp.host_state()
    info = start(mp, "lost")
    mp.wait(lambda: rows(mp)["lost"][2] == "Running", what="the pod running")
    from conftest import agents

    sup = info["supervisor"]["pid"]
    with open(f"/proc/{sup}/stat") as f:
        janitor = int(f.read().rpartition(")")[2].split()[1])
    for pid in [*agents(mp.base), janitor, sup]:
        os.kill(pid, signal.SIGKILL)
    mp.wait(lambda: not alive(sup) and not alive(janitor), what="janitor and supervisor gone")
    shutil.rmtree(mp.root)
    p = mp.minipod("rm", "-f", "lost", env=dict(mp.env, MINIPOD_AGENT="0"))
    assert p.stdout == "lost\n", p.stderr
    assert mp.host_state() == before


def test_an_empty_run_directory_does_not_block_the_name(mp):
    d = os.path.join(mp.root, "pods", "left")
    os.makedirs(d)
    os.utime(d, (0, 0))  # a `run` killed between its mkdir and its first write, long ago
    assert rows(mp)["left"][2] == "Unknown"
    start(mp, "left")  # the name is free for a new pod
    # (`run -d` may return while the container still starts: PodInitializing for a moment)
    mp.wait(lambda: rows(mp)["left"][2] == "Running", what="the new pod running")
    mp.minipod("rm", "-f", "left")
    os.makedirs(d)
    os.utime(d, (0, 0))
    mp.minipod("rm", "left")  # nothing runs: a plain rm removes it
    assert not os.path.exists(d)


def run_failing(mp, path: str, step: str):
    """`minipod run -d` with set-up made to fail right after `step`."""
    env = mp.env
    mp.env = dict(env, MINIPOD_TEST_FAIL_AFTER=step)
    try:
        return mp.minipod("run", "-d", path, check=False)
    finally:
        mp.env = env


STEPS = ["dirs", "cgroups", "sandbox", "prepare:init", "network", "etc", "release:init"]


@pytest.mark.parametrize("step", STEPS)
def test_a_failed_set_up_step_leaves_nothing(mp, step):
    before = mp.host_state()
    p = run_failing(mp, mp.write("pod.yaml", POD.format(name="f")), step)
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith('error: pod "f": ') and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.endswith(f"injected failure after {step}\n"), p.stderr
    assert mp.host_state() == before
    assert not os.listdir(os.path.join(mp.root, "pods")), "a pod record was left"
    p = mp.minipod("ps")
    assert p.stdout == "" and p.stderr == "No resources found\n"


@pytest.mark.parametrize("how", ["agent", "in-process", "foreground"])
def test_a_supervisor_that_dies_before_taking_its_pod_fails_the_run(mp, how):
    """Its end of the plan pipe closed: writing the pod's directory there must fail the start,
    not raise a BrokenPipeError that the CLI takes for a closed stdout (exit 0, not a word);
    and its network agent, left to the janitor, must not outlive it."""
    before = mp.host_state()
    path = mp.write("pod.yaml", POD.format(name="f"))
    env = dict(mp.env, MINIPOD_TEST_FAIL_AFTER="start")
    if how == "agent":
        mp.minipod("daemon", "start")  # or the first command runs in-process
    else:
        env["MINIPOD_AGENT"] = "0"
    args = ["run", path] if how == "foreground" else ["run", "-d", path]
    p = mp.minipod(*args, env=env, check=False)
    assert p.returncode == 1, p.stderr
    assert p.stderr.splitlines()[-1] == 'error: pod "f": supervisor died', p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    if how == "agent":
        mp.minipod("daemon", "stop")
    assert mp.host_state() == before
    assert not os.listdir(os.path.join(mp.root, "pods")), "a pod record was left"


def test_failed_app_container_steps_leave_nothing(mp):
    """The app containers start together, after the init container (not in pod set-up)."""
    text = POD.format(name="f").replace("  initContainers:\n  - name: init\n    image: busybox\n"
                                        '    command: ["true"]\n', "")
    for step in ("prepare:app", "prepare:side", "release:side"):
        before = mp.host_state()
        p = run_failing(mp, mp.write("pod.yaml", text), step)
        assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
        assert f"injected failure after {step}" in p.stderr
        assert mp.host_state() == before, step
        assert not os.listdir(os.path.join(mp.root, "pods"))


def test_rm_f_unmounts_what_is_mounted_under_the_pod(mp):
    """A mount left under a pod's directories (a crash between mount and unmount of some
    step) would make its removal fail with EBUSY, or worse, delete through it."""
    info = start(mp, "m")
    os.unlink(os.path.join(mp.root, "pods", "m", "plan.json"))
    target = os.path.join(info["dirs"]["data"], "volumes", "leak")
    os.makedirs(target)
    subprocess.run(["mount", "-t", "tmpfs", "leak", target], check=True)
    with open(os.path.join(target, "keep"), "w") as f:
        f.write("x")
    mp.minipod("rm", "-f", "m")
    assert not os.path.exists(info["dirs"]["data"])
    with open("/proc/self/mountinfo") as f:
        assert target not in f.read()
