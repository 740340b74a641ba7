"""minipod.state and the read-only commands over damaged pod records: one bad pod never breaks
the others, and a damaged record shows as Unknown with what is wrong, in one line.

The commands run in-process (cli.main) over a hand-made runtime root: nothing here needs root.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from minipod import state
from minipod.cli import cli


def plan(root: str, name: str) -> dict:
    ctr = {"name": "app", "image": "busybox", "image_ref": "docker.io/library/busybox:latest",
           "image_digest": "sha256:" + "ab" * 32, "argv": ["sleep", "1"], "caps": [],
           "cgroup": f"minipod.slice/minipod-{name}.slice/minipod-{name}-app.scope",
           "log_dir": os.path.join(root, "data", name, "logs", "app"), "spec": {}}
    return {"name": name, "namespace": "default", "uid": f"uid-{name}", "created": time.time(),
            "hostname": name, "run_dir": state.pod_dir(root, name),
            "data_dir": os.path.join(root, "data", name), "cgroup_parent": "minipod.slice",
            "pod_cgroup": f"minipod.slice/minipod-{name}.slice",
            "sandbox_cgroup": f"minipod.slice/minipod-{name}.slice/minipod-{name}.scope",
            "pod_limits": {}, "bridge": "minipod0", "subnet": "10.244.0.0/16",
            "host_veth": "mp-0123456789", "grace_seconds": 30, "qos_class": "BestEffort",
            "restart_policy": "Always", "containers": [ctr], "init_containers": [],
            "manifest": {}}


@pytest.fixture
def root(tmp_path, monkeypatch):
    from minipod.cli import status

    monkeypatch.setattr(status, "_node", lambda: "node")  # no lookups of this host's names
    monkeypatch.setattr(status, "_host_ip", lambda: "192.0.2.10")
    """A runtime root with one healthy (finished) pod "good"; returns a function to run the CLI."""
    r = str(tmp_path / "run")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'root = "{r}"\ndata_root = "{tmp_path}/data"\n')
    monkeypatch.setenv("MINIPOD_CONFIG", str(cfg))
    make(r, "good", plan(r, "good"), {"phase": "Succeeded", "final": True, "containers": {"app": {
        "name": "app", "restartCount": 0, "ready": False,
        "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}}})
    return r


def make(root: str, name: str, plan_json, state_json) -> str:
    d = state.pod_dir(root, name)
    os.makedirs(d, exist_ok=True)
    for f, v in (("plan.json", plan_json), ("state.json", state_json)):
        if v is not None:
            with open(os.path.join(d, f), "w") as fh:
                fh.write(v if isinstance(v, str) else json.dumps(v))
    return d


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


DAMAGE = {
    "truncated state": lambda p: (json.dumps(p), '{"phase": "Runn'),
    "state is an array": lambda p: (json.dumps(p), "[1,2]"),
    "state is a string": lambda p: (json.dumps(p), '"x"'),
    "state is an empty array": lambda p: (json.dumps(p), "[]"),
    "state with a bad type": lambda p: (json.dumps(p), '{"containers": [1]}'),
    "plan is an array": lambda p: ("[1,2]", "{}"),
    "plan is a string": lambda p: ('"x"', "{}"),
    "plan is empty": lambda p: ("{}", "{}"),
    "plan is truncated": lambda p: (json.dumps(p)[:40], "{}"),
    "plan lacks a field": lambda p: (json.dumps({**p, "containers": [{"name": "app"}]}), "{}"),
    "plan deleted": lambda p: (None, '{"phase": "Running", "containers": {}}'),
    "empty run directory": lambda p: (None, None),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_pod_shows_as_unknown_and_breaks_no_other(root, capsys, damage):
    plan_json, state_json = DAMAGE[damage](plan(root, "bad"))
    d = make(root, "bad", plan_json, state_json)
    old = time.time() - 2 * state.CLAIM_GRACE  # not a `run` that has just claimed the name
    os.utime(d, (old, old))

    code, out, err = run(capsys, "ps")
    assert code == 0, err
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:]}
    assert rows["good"][2] == "Completed"
    assert rows["bad"][2] == "Unknown"
    assert 'pod "bad"' in err and len(err.strip().splitlines()) == 1  # the reason, one line

    code, out, err = run(capsys, "get", "pod", "bad", "-o", "json")
    assert code == 0, err
    pod = json.loads(out)
    assert pod["status"]["phase"] == "Unknown"
    assert pod["status"]["reason"] == "Damaged" and pod["status"]["message"]
    code, out, _ = run(capsys, "get", "pods", "-o", "json")
    assert code == 0 and len(json.loads(out)["items"]) == 2

    for cmd in (["inspect", "bad"], ["logs", "bad"], ["exec", "bad", "--", "true"]):
        code, out, err = run(capsys, *cmd)
        assert code == 1 and out == ""
        assert err.startswith('error: pod "bad" is damaged: ') and err.count("\n") == 1, err
        assert "internal error" not in err
    code, out, err = run(capsys, "describe", "bad")
    assert code == 0 and out.startswith('pod "bad" is damaged: ') and out.count("\n") == 1, err
    code, out, err = run(capsys, "describe")  # all pods: the good one in full, the bad in a line
    assert code == 0 and "\nName:" in out and 'pod "bad" is damaged' in out, err
    code, _, err = run(capsys, "events")
    assert code == 0, err


def test_a_run_directory_just_claimed_is_not_listed(root, capsys):
    make(root, "new", None, None)
    code, out, err = run(capsys, "ps")
    assert code == 0 and "new" not in out and err == ""


def test_write_json_is_atomic_and_durable(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = str(tmp_path / "state.json")
    state.write_json(path, {"a": 1})
    assert state.read_json(path) == {"a": 1}
    # The temp file's data before the rename, then the directory that holds the new name.
    assert synced[0].startswith(path + ".") and synced[1] == str(tmp_path)
    assert os.listdir(tmp_path) == ["state.json"]

    def boom(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(OSError):
        state.write_json(path, {"a": 2})
    assert state.read_json(path) == {"a": 1}  # the old file, whole; no temp file left
    assert os.listdir(tmp_path) == ["state.json"]


def test_pid_1_is_never_a_live_supervisor_or_janitor():
    assert not state.process_alive(1, None)
    assert state.process_alive(os.getpid(), state.proc_start_time(os.getpid()))


@pytest.mark.parametrize("name", ["..", "../run", "a/b", ".hidden", "UPPER", "", "x..y"])
def test_a_name_that_is_no_pod_name_never_becomes_a_path(root, capsys, name):
    os.makedirs(os.path.join(root, "run"), exist_ok=True)
    for cmd in (["rm", "-f", name], ["inspect", name], ["stop", name]):
        code, _, err = run(capsys, *cmd)
        assert code == 1 and "not found" in err, err
    assert os.path.isdir(state.pod_dir(root, "good")) and os.path.isdir(os.path.join(root, "run"))


def test_the_default_container_is_kubectls_choice(root):
    """No -c: the kubectl.kubernetes.io/default-container annotation's container, else the
    first app container (kubectl's podcmd.FindOrDefaultContainerByName)."""
    p = plan(root, "two")
    p["containers"].append(dict(p["containers"][0], name="side"))
    make(root, "two", p, {"containers": {}})
    assert state.PodRecord(root, "two").container(None)[0]["name"] == "app"
    p["annotations"] = {state.DEFAULT_CONTAINER: "side"}
    make(root, "two", p, {"containers": {}})
    assert state.PodRecord(root, "two").container(None)[0]["name"] == "side"
    p["annotations"] = {state.DEFAULT_CONTAINER: "gone"}  # kubectl falls back, as we do
    make(root, "two", p, {"containers": {}})
    assert state.PodRecord(root, "two").container(None)[0]["name"] == "app"
