"""The lab runner's pieces without root: loading, values, checks, a run of shell-only steps,
the README's generated sections."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from minipod.cli import lab


def write_lab(root: Path, name: str, text: str, readme: str | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "lab.yaml").write_text(textwrap.dedent(text))
    if readme is not None:
        (d / "README.md").write_text(readme)
    return d


def test_json_path():
    doc = {"sandbox": {"pid": 7}, "containers": [{"name": "a", "pid": 1}, {"name": "b", "pid": 2}]}
    assert lab.json_path(doc, ".sandbox.pid") == 7
    assert lab.json_path(doc, ".containers[b].pid") == 2
    assert lab.json_path(doc, ".containers[0].name") == "a"
    with pytest.raises(KeyError):
        lab.json_path(doc, ".containers[c].pid")
    assert lab.jq_form(".containers[b].pid") == '.containers[] | select(.name == "b") | .pid'
    assert lab.jq_form(".sandbox.pid") == ".sandbox.pid"


def test_checks_show_the_values():
    assert lab.check_line("equal", {"net of web": "net:[1]", "net of pause": "net:[1]"}) == \
        (True, "net of web = net of pause = net:[1]")
    assert lab.check_line("equal", {"a": "1", "b": "2"}) == (False, "a = 1 ≠ b = 2")
    assert lab.check_line("equal", {"phase": "Pending", "expected": "Running"}) == \
        (False, "phase = Pending, expected Running")
    assert lab.check_line("differ", {"a": "1", "b": "2"}) == (True, "a = 1 ≠ b = 2")
    assert lab.check_line("differ", {"a": "1", "b": "2", "c": "1"})[0] is False
    assert lab.check_line("contains", {"out": "hello web", "expected": "web"})[0] is True
    assert lab.check_line("absent", {"out": "hello web", "expected": "web"})[0] is False


def test_list_and_find(tmp_path):
    write_lab(tmp_path, "01-alpha", "title: first\nsteps: [{run: 'true'}]\n")
    write_lab(tmp_path, "02-beta", "title: second\npending: needs hostPID (pod-spec issue)\n")
    write_lab(tmp_path, "03-broken", "title: x\nstepz: []\n")
    table = lab.list_table(tmp_path).splitlines()
    assert table[1].split()[:2] == ["01-alpha", "ready"]
    assert table[2].split()[:2] == ["02-beta", "pending"] and "needs hostPID" in table[2]
    assert table[3].split()[:2] == ["03-broken", "broken"] and "stepz" in table[3]
    assert lab.find("1", tmp_path).name == "01-alpha"
    assert lab.find("beta", tmp_path).pending
    with pytest.raises(lab.LabError, match="no lab 'gamma'"):
        lab.find("gamma", tmp_path)
    with pytest.raises(lab.LabError, match="unknown key 'stepz'"):
        lab.find("broken", tmp_path)


def test_bad_check_is_an_error(tmp_path):
    write_lab(tmp_path, "01-x", "steps: [{run: 'true', check: [{same: {a: 1}}]}]\n")
    with pytest.raises(lab.LabError, match=r"steps\[0\]: a check is one of"):
        lab.find("1", tmp_path)


def run(tmp_path, text) -> tuple[lab.Result, str]:
    d = write_lab(tmp_path, "01-shell", text)
    out = io.StringIO()
    r = lab.Runner(lab._load(d), None, out=out, suffix="abcd").run()
    return r, out.getvalue()


def test_a_run_saves_checks_and_cleans_up(tmp_path):
    marker = tmp_path / "cleaned"
    r, out = run(tmp_path, f"""
        steps:
        - say: two lines
          run: printf 'a\\nb\\n'
          save: [A, B]
        - run: |
            printf '{{"x": {{"y": "%s"}}}}' "$A"
          save: {{X: .x.y}}
        - run: echo $X$B
          save: AB
          check:
          - equal: {{joined: $AB, expected: ab}}
          - differ: {{first: $A, second: $B}}
        cleanup: ["touch {marker}"]
        """)
    assert (r.passed, r.failed) == (2, 0), out
    assert "joined = ab ✓" in out and "first = a ≠ second = b ✓" in out
    assert "X = .x.y = a" in out
    assert marker.exists()


def test_a_failed_check_stops_the_lab(tmp_path):
    r, out = run(tmp_path, """
        steps:
        - run: echo 1
          save: N
          check: [{equal: {n: $N, expected: "2"}}]
        - run: echo never
        """)
    assert (r.passed, r.failed) == (0, 1)
    assert "n = 1, expected 2 ✗" in out and "never" not in out.split("stopping")[1]


def test_exit_status_and_wait(tmp_path):
    r, out = run(tmp_path, """
        steps:
        - run: "false"
          exit: 1
        - run: n=$(cat count 2>/dev/null || echo 0); echo $((n + 1)) > count; cat count
          save: N
          wait: 5
          check: [{equal: {tries: $N, expected: "3"}}]
        - run: exit 3
        """)
    assert (r.passed, r.failed) == (1, 1), out
    assert "tries = 3 ✓" in out and "exit status 3, expected 0 ✗" in out


def test_record_writes_steps_and_output(tmp_path):
    readme = f"# x\n{lab.STEPS_BEGIN}\nold\n{lab.STEPS_END}\n{lab.OUT_BEGIN}\nold\n{lab.OUT_END}\nWhy\n"
    d = write_lab(tmp_path, "01-rec", """
        steps:
        - say: say it
          run: echo pod-abcd pod_abcd
          save: OUT
        """, readme)
    x = lab._load(d)
    runner = lab.Runner(x, None, out=io.StringIO(), suffix="abcd")
    runner.run()
    lab.record(x, runner)
    text = (d / "README.md").read_text()
    assert "old" not in text and text.endswith("Why\n")
    assert "1. say it" in text and 'OUT=$(echo pod-abcd pod_abcd); echo "$OUT"' in text
    assert "\npod pod\n" in text   # the suffix is gone from the recorded output


def test_every_shipped_lab_loads():
    labs = lab.labs()
    assert labs and not [x.name for x in labs if (x.pending or "").startswith("broken")]
    for x in labs:
        if not x.pending:
            text = (x.path / "README.md").read_text()
            assert lab.OUT_BEGIN in text and "```console" in text, x.name


def test_a_variable_may_not_shadow_the_environment(tmp_path):
    write_lab(tmp_path, "01-x", "steps: [{run: 'echo /', save: PATH}]\n")
    write_lab(tmp_path, "02-y", "pods: {SHELL: web}\nsteps: [{run: 'true'}]\n")
    with pytest.raises(lab.LabError, match=r"steps\[0\].save: 'PATH' cannot be a lab variable"):
        lab.find("1", tmp_path)
    with pytest.raises(lab.LabError, match="pods: 'SHELL' cannot"):
        lab.find("2", tmp_path)


def test_an_empty_expected_value_never_passes():
    assert lab.check_line("contains", {"out": "anything", "expected": ""})[0] is False
    assert lab.check_line("absent", {"out": "anything", "expected": ""})[0] is False


def test_minipod_in_a_step_is_a_command_whose_pid_is_its_own(tmp_path):
    """`minipod X &` then `kill $!` stops minipod, as with the installed command: the lab's
    `minipod` is an executable that execs this interpreter, not a shell function run in a
    subshell whose PID $! would be (killing it left a backgrounded port-forward running)."""
    fake = tmp_path / "fakepy"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")        # stands for `python -m minipod ...`
    fake.chmod(0o755)
    d = write_lab(tmp_path, "01-bg", """
        steps:
        - run: |
            minipod port-forward x :80 & P=$!
            sleep 0.5; cat /proc/$P/comm; kill $P; wait $P; echo "status $?"
          save: [COMM, STATUS]
          check:
          - equal: {the process behind $!: $COMM, expected: sleep}
          - equal: {kill: $STATUS, expected: status 143}
        - run: bash -c 'type -t minipod'
          save: KIND
          check: [{equal: {minipod in a nested shell: $KIND, expected: file}}]
        """)
    runner = lab.Runner(lab._load(d), None, out=io.StringIO(), suffix="abcd")
    runner.env["MINIPOD_PY"] = str(fake)
    r = runner.run()
    assert (r.passed, r.failed) == (3, 0), "\n".join(r.lines)
