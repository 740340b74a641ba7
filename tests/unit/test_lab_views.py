"""`minipod ns`'s table and pod comparison from rows (the rows themselves are tested against
/proc in tests/integration/test_labs.py)."""

from __future__ import annotations

from minipod.cli import views


def row(pod, ctr, pid, **nss):
    return {"pod": pod, "container": ctr, "pid": pid, "comm": "x",
            "namespaces": {t: {"inode": i, "sharing": s} for t, (i, s) in nss.items()}}


A = [row("a", "(sandbox)", 10, net=(100, "own"), user=(1, "host")),
     row("a", "web", 11, net=(100, "shared-with-pause"), user=(1, "host"))]
B = [row("b", "(sandbox)", 20, net=(200, "own"), user=(1, "host"))]


def test_table_marks_each_cell():
    lines = views.table(A).splitlines()
    assert lines[0].split()[:6] == ["POD", "CONTAINER", "PID", "COMMAND", "net", "ipc"]
    web = lines[2].split()
    assert web[:3] == ["a", "web", "11"] and web[4] == "100=" and web[5] == "-"
    assert lines[1].split()[4] == "100*" and "1h" in lines[1].split()
    assert lines[-1].startswith("= shared with the pod's pause")


def test_what_two_pods_share():
    assert views.shared_between({"a": A, "b": B}) == {"shared": ["user (host)"],
                                                      "separate": ["net"]}
    assert views.shared_between({"a": A, "b": [B[0] | {"container": "web"}]}) == \
        {"shared": [], "separate": []}      # no sandbox row: nothing to compare
