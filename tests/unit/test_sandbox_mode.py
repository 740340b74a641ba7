"""The sandbox mode: the `sandbox` setting, the minipod.io/sandbox annotation, what the plan
pins; and the pin primitive's reading of mountinfo."""

from __future__ import annotations

import pytest

from minipod import config
from minipod.errors import MinipodError, SpecError
from minipod.kernel import nspin
from minipod.pod import pinned
from minipod.spec.spec import loads
from tests.unit.test_plan import build

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  {annotations}
spec:
  {extra}
  containers:
  - name: app
    image: img
"""


def pod(annotations: str = "", extra: str = "") -> str:
    return POD.format(annotations=annotations, extra=extra)


@pytest.mark.parametrize("value", ["pause", "pinned"])
def test_the_annotation_takes_both_modes(value):
    loads(pod(f"annotations: {{minipod.io/sandbox: {value}}}"), "pod.yaml")


@pytest.mark.parametrize("value", ["pinns", "Pinned", "", "pinned "])
def test_another_value_is_one_line_naming_the_annotation(value):
    with pytest.raises(SpecError) as e:
        loads(pod(f"annotations: {{minipod.io/sandbox: '{value}'}}"), "pod.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (f"pod.yaml: metadata.annotations[minipod.io/sandbox]: unknown sandbox mode "
                   f"{value!r} (one of: pause, pinned)")


def test_the_setting_is_checked_when_the_file_is_read(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('sandbox = "pinnd"\n')
    with pytest.raises(MinipodError) as e:
        config.load(str(path), env={})
    assert str(e.value) == f"{path}: sandbox: unknown sandbox mode 'pinnd' (pause, pinned)"
    path.write_text('sandbox = "pinned"\n')
    assert config.load(str(path), env={}).sandbox == "pinned"
    assert config.load(str(path), env={"MINIPOD_SANDBOX": "pause"}).sandbox == "pause"
    assert config.Config().sandbox == "pause"  # containerd's design unless asked


def test_the_annotation_wins_over_the_setting():
    assert build(pod()).sandbox_mode == "pause"
    assert build(pod(), sandbox="pinned").sandbox_mode == "pinned"
    p = build(pod("annotations: {minipod.io/sandbox: pause}"), sandbox="pinned")
    assert p.sandbox_mode == "pause" and p.pin_dir == "" and pinned.expected(p) is None
    p = build(pod("annotations: {minipod.io/sandbox: pinned}"))
    assert p.sandbox_mode == "pinned" and p.pin_dir == "/r/sandboxes/web"


@pytest.mark.parametrize("extra, types, shm", [
    ("", ["net", "uts", "ipc"], "/r/sandboxes/web/shm"),
    ("hostNetwork: true", ["ipc"], "/r/sandboxes/web/shm"),   # net and uts are the node's
    ("hostIPC: true", ["net", "uts"], ""),                    # ipc and /dev/shm the node's
    ("hostNetwork: true\n  hostIPC: true", [], ""),
])
def test_only_what_is_not_the_nodes_is_pinned(extra, types, shm):
    p = build(pod(extra=extra), sandbox="pinned")
    assert p.pinned_types == types
    want = pinned.expected(p)
    assert want.files == {t: f"/r/sandboxes/web/{t}" for t in types} and want.shm == shm


@pytest.mark.parametrize("extra, pause", [
    ("", False), ("hostPID: true", False), ("shareProcessNamespace: true", True)])
def test_pause_stays_only_for_a_pod_level_pid_namespace(extra, pause):
    assert build(pod(extra=extra), sandbox="pinned").keeps_pause is pause
    assert build(pod(extra=extra)).keeps_pause  # pause mode: always


def test_the_plan_round_trips_with_its_mode():
    from minipod.pod.plan import PodPlan

    p = build(pod(), sandbox="pinned")
    again = PodPlan.from_json(p.to_json())
    assert again.sandbox_mode == "pinned" and again.pin_dir == p.pin_dir
    assert again.sandboxes_dir == "/r/sandboxes"


INFO = r"""22 1 0:20 / /run rw,nosuid - tmpfs tmpfs rw
40 22 0:20 /minipod/sandboxes/a /run/minipod/sandboxes/a rw unbindable - tmpfs tmpfs rw
41 40 0:4 net:[4026532180] /run/minipod/sandboxes/a/net rw - nsfs nsfs rw
42 40 0:44 / /run/minipod/sandboxes/a/shm rw - tmpfs shm rw
43 22 0:20 /minipod/sandboxes/b /run/minipod/sandboxes/b rw unbindable - tmpfs tmpfs rw
44 43 0:4 net:[4026532190] /run/minipod/sandboxes/b/net rw - nsfs nsfs rw
45 22 0:21 / /run/minipod/sandboxes/ab\040c rw - tmpfs tmpfs rw
46 22 0:22 / /run/minipod/sandboxesX rw - tmpfs tmpfs rw
"""


def test_mounts_under_a_directory_are_found_in_mount_order(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(INFO)
    assert nspin.mounts_under("/run/minipod/sandboxes/a", str(info)) == [
        "/run/minipod/sandboxes/a", "/run/minipod/sandboxes/a/net",
        "/run/minipod/sandboxes/a/shm"]
    # Escapes are read back; a sibling that only begins with the same letters is not below.
    assert nspin.mounts_under("/run/minipod/sandboxes", str(info))[-1] == \
        "/run/minipod/sandboxes/ab c"


def test_detach_copies_keeps_only_our_own_pins(tmp_path, monkeypatch):
    info = tmp_path / "mountinfo"
    info.write_text(INFO)
    gone = []
    monkeypatch.setattr(nspin, "_umount", gone.append)
    nspin.detach_copies("/run/minipod/sandboxes", keep="/run/minipod/sandboxes/a",
                        mountinfo=str(info))
    # Deepest first, every other pod's; never ours, nor what merely shares the prefix.
    assert gone == ["/run/minipod/sandboxes/ab c", "/run/minipod/sandboxes/b/net",
                    "/run/minipod/sandboxes/b"]


def test_unpinning_what_is_gone_is_done(tmp_path):
    nspin.unpin("")
    nspin.unpin(str(tmp_path / "gone"))
    nspin.remove_dir(str(tmp_path / "no-such-dir"))
