"""The explain hook's pieces that need no root: off by default, mount(8) spellings, the
reader and the rendering."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from minipod import explain
from minipod.kernel import mounts
from minipod.kernel._libc import (MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY,
                                  MS_REC, MS_REMOUNT)


def test_off_unless_the_cli_asks():
    code = "from minipod import explain; print(explain.ON, explain.fileno())"
    env = {k: v for k, v in os.environ.items() if k != explain.ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "-1"]


def test_on_writes_json_lines_and_forgets_the_variable(tmp_path):
    path = tmp_path / "x.jsonl"
    path.touch()
    code = ("import os; from minipod import explain; explain.stage('s'); "
            "explain.say('did', 'sys()', 'cmd', n=1); print(os.environ.get(explain.ENV))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, MINIPOD_EXPLAIN=str(path)))
    assert out.stdout.strip() == "None"  # pause and the containers never inherit it
    recs = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert recs[0]["begin"] and recs[0]["stage"] == "s"
    assert recs[1] | {"time": 0, "pid": 0} == {"time": 0, "pid": 0, "stage": "s", "what": "did",
                                               "syscall": "sys()", "shell": "cmd",
                                               "values": {"n": 1}}
    reader = explain.Reader(str(path))
    assert [r.get("what") for r in reader.poll()] == [None, "did"]
    assert reader.poll() == []
    reader.close()
    assert explain.render(recs[1]).splitlines()[-1] == "      $ cmd"


def test_mount_spellings():
    sh = mounts.shell_command
    assert sh(None, "/", None, MS_REC | MS_PRIVATE, None) == "mount --make-rprivate /"
    assert sh("a", "b", None, MS_BIND | MS_REC, None) == "mount --rbind a b"
    assert sh("a", "b", None, MS_BIND, None) == "mount --bind a b"
    assert sh(None, "/p", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NODEV, None) == \
        "mount -o remount,bind,ro,nodev /p"
    assert sh("proc", "/r/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, None) == \
        "mount -t proc -o nosuid,nodev,noexec proc /r/proc"
    assert sh("overlay", "/r", "overlay", 0, "lowerdir=/l,upperdir=/u,workdir=/w") == \
        "mount -t overlay -o lowerdir=/l,upperdir=/u,workdir=/w overlay /r"
