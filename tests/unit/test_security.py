"""pod/security.py and pod/fsgroup.py: the kubelet's resolution of securityContext, without a pod."""

from __future__ import annotations

import os
import stat

import pytest

from minipod.kernel import seccomp
from minipod.pod import fsgroup, security
from minipod.spec import spec


def test_fs_group_walks_and_sets_setgid(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("x")
    os.chmod(tmp_path / "sub" / "f", 0o600)
    os.symlink("/etc/passwd", tmp_path / "link")
    fsgroup.apply(str(tmp_path), 4321)
    for p in (tmp_path, tmp_path / "sub"):
        st = os.stat(p)
        assert st.st_gid == 4321 and st.st_mode & stat.S_ISGID and st.st_mode & 0o070 == 0o070
    f = os.stat(tmp_path / "sub" / "f")
    assert f.st_gid == 4321 and stat.S_IMODE(f.st_mode) == 0o660  # no setgid, no x on files
    assert os.stat("/etc/passwd").st_gid != 4321  # symlinks are not followed


def test_fs_group_on_root_mismatch_skips_a_matching_root(tmp_path):
    fsgroup.apply(str(tmp_path), 4321)
    (tmp_path / "new").write_text("x")
    os.chown(tmp_path / "new", -1, 0)  # (a setgid directory gave it the group already)
    fsgroup.apply(str(tmp_path), 4321, "OnRootMismatch")
    assert os.stat(tmp_path / "new").st_gid != 4321  # the root matched: not walked
    fsgroup.apply(str(tmp_path), 4321, "Always")
    assert os.stat(tmp_path / "new").st_gid == 4321


@pytest.mark.parametrize("non_root, run_as, image, want", [
    (False, None, "", ""),
    (True, None, "", "container has runAsNonRoot and image will run as root"),
    (True, None, "0:0", "container has runAsNonRoot and image will run as root"),
    (True, 0, "1000", "container's runAsUser breaks non-root policy"),
    (True, 1000, "", ""),
    (True, None, "1000", ""),
    (True, None, "app", "image has non-numeric user (app), cannot verify user is non-root"),
])
def test_verify_run_as_non_root(non_root, run_as, image, want):
    got = security.verify_run_as_non_root("p", "ns", "u1", "c", non_root, run_as, image)
    assert (want in got) if want else got == ""
    if want:
        assert got.endswith('(pod: "p_ns(u1)", container: c)'), got


def _pod(text: str):
    res = spec.loads(text)
    return res.pods[0].pod


POD = """apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  securityContext: {supplementalGroups: [5, 6], fsGroup: 7, runAsNonRoot: true,
                    seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: c
    image: busybox
    securityContext: {runAsUser: 10, seccompProfile: {type: Unconfined}}
  - name: d
    image: busybox
"""


def test_resolve_container_wins():
    pod = _pod(POD)
    c, d = pod.spec.containers
    s = security.resolve(pod, c, "spec.containers[0]", "u", ["CHOWN"], False, "", "/nope")
    assert s.groups == [5, 6, 7] and s.seccomp is None and s.seccomp_type == "Unconfined"
    assert s.config_error == ""
    s = security.resolve(pod, d, "spec.containers[1]", "u", ["CHOWN"], False, "", "/nope")
    assert s.seccomp_type == "RuntimeDefault" and s.seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    assert "image will run as root" in s.config_error
    s = security.resolve(pod, d, "spec.containers[1]", "u", ["CHOWN"], True, "", "/nope")
    assert s.seccomp is None  # privileged: no filter


def test_runtime_default_follows_capabilities():
    names = lambda p: {n for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"  # noqa: E731
                       and not r.get("args") for n in r["names"]}
    plain = seccomp.runtime_default(["CHOWN"], "amd64")
    admin = seccomp.runtime_default(["CHOWN", "SYS_ADMIN"], "amd64")
    assert "mount" not in names(plain) and "mount" in names(admin)
    assert "unshare" not in names(plain) and "keyctl" not in names(admin)
    assert "arch_prctl" in names(plain)
    assert plain["architectures"][0] == "SCMP_ARCH_X86_64"
    # clone3 is ENOSYS without CAP_SYS_ADMIN (so libc falls back to clone), as in containerd
    assert any(r["names"] == ["clone3"] and r.get("errnoRet") == 38 for r in plain["syscalls"])


@pytest.mark.parametrize("profile, problem", [
    ({"defaultAction": "SCMP_ACT_NOPE"}, "defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "bad"}]},
     "syscalls[0].action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "op": "SCMP_CMP_EQ"}]}]},
     "syscalls[0].args[0]"),
])
def test_profile_check(profile, problem):
    assert problem in seccomp.check(profile)


def test_read_profile_errors_name_the_file(tmp_path):
    with pytest.raises(seccomp.SeccompError, match="nope.json: No such file"):
        seccomp.read_profile(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(seccomp.SeccompError, match="bad.json: not valid JSON"):
        seccomp.read_profile(str(tmp_path / "bad.json"))
