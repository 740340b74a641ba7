"""What `validate` accepts, `run` can do, and what `run` refuses leaves nothing behind: real
runs through the CLI, with the `mp` fixture checking that the host is as it was."""

from __future__ import annotations

import os
import tarfile

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def pod(name: str, command: str = '["sleep", "3600"]', image: str = "busybox",
        extra: str = "") -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: {image}
    imagePullPolicy: IfNotPresent
    command: {command}
{extra}"""


def host(mp) -> dict:
    """mp.host_state() without ip_forward: a global flag that other pods on this machine (other
    test runs) turn on and off."""
    return {k: v for k, v in mp.host_state().items() if k != "ip_forward"}


def running(mp) -> list[str]:
    return [ln.split()[0] for ln in mp.minipod("ps").stdout.splitlines()[1:]]


def assert_one_line_error(p) -> None:
    assert p.returncode == 1, (p.returncode, p.stderr)
    # (A foreground run also reports what its pods do, as `minipod: ...` lines.)
    errors = [ln for ln in p.stderr.splitlines() if not ln.startswith(("warning: ", "minipod: "))]
    assert len(errors) == 1 and errors[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr


# --- multi-document files: all pods or none --------------------------------------------------

@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("failure", ["name clash", "missing binary"])
def test_a_failing_second_pod_takes_the_first_down_again(mp, failure, detach):
    """The first pod started; the second fails in set-up (validation passed). The first must
    not be left running: the file runs all its pods or none."""
    mp.minipod("run", "-d", mp.write("x.yaml", pod("x")))
    before = host(mp)
    second = pod("x") if failure == "name clash" else pod("b", '["/no/such"]')
    path = mp.write("two.yaml", pod("a") + "---\n" + second)
    p = mp.minipod("run", *(["-d"] if detach else []), path, check=False)
    assert_one_line_error(p)
    assert 'pod "a" was removed again' in p.stderr, p.stderr
    assert running(mp) == ["x"]
    assert not os.path.exists(os.path.join(mp.root, "pods", "a"))
    assert host(mp) == before
    mp.minipod("rm", "-f", "x")


@pytest.mark.parametrize("bad", [
    pod("b", image="nosuch/image:1"),                    # found while planning
    pod("b").replace('"sleep"', '"sleep\\0"'),           # found while validating (a NUL)
    pod("a"),                                            # two pods of one name
])
def test_every_document_is_checked_before_any_pod_is_created(mp, bad):
    before = host(mp)
    path = mp.write("two.yaml", pod("a") + "---\n" + bad)
    p = mp.minipod("run", "-d", path, check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert running(mp) == [] and host(mp) == before


# --- names -----------------------------------------------------------------------------------

def test_a_253_character_pod_name_runs(mp):
    """A DNS subdomain may be 253 characters; the cgroup, unit and data directory names built
    from it are shortened (with a hash) to the kernel's and systemd's 255."""
    name = ("a" * 62 + ".") * 4 + "b"
    assert len(name) == 253
    p = mp.minipod("run", "-d", mp.write("long.yaml", pod(name)))
    assert p.stdout.strip() == name
    assert running(mp) == [name]
    assert mp.minipod("exec", name, "--", "echo", "hi").stdout == "hi\n"
    info = mp.inspect(name)
    assert all(c["pid"] for c in info["containers"])
    mp.minipod("rm", "-f", name)


# --- security fields -------------------------------------------------------------------------

@pytest.mark.parametrize("sc, field", [
    ("appArmorProfile: {type: RuntimeDefault}", "appArmorProfile"),
])
def test_a_refused_security_field_creates_nothing(mp, sc, field):
    path = mp.write("p.yaml", pod("p", extra=f"    securityContext: {{{sc}}}\n"))
    for cmd in (["validate", path], ["run", "-d", path]):
        p = mp.minipod(*cmd, check=False)
        assert_one_line_error(p)
        assert (f"spec.containers[0].securityContext.{field}: not supported by minipod yet: "
                "refusing to run with less protection than asked for") in p.stderr
    assert running(mp) == []


def test_the_security_fields_minipod_applies_work(mp):
    """Not refused, and really applied: uid/gid, no_new_privs, a read-only root, capabilities."""
    sc = ("    securityContext: {runAsUser: 1234, runAsGroup: 2345, allowPrivilegeEscalation: "
          "false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL], add: [NET_ADMIN]}}\n")
    p = mp.minipod("run", "-d", mp.write("p.yaml", pod("p", extra=sc)))
    assert "warning" not in p.stderr, p.stderr
    status = mp.minipod("exec", "p", "--", "cat", "/proc/self/status").stdout
    fields = dict(ln.split(":\t", 1) for ln in status.splitlines() if ":\t" in ln)
    assert fields["Uid"].split()[0] == "1234" and fields["Gid"].split()[0] == "2345"
    assert fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapBnd"], 16) == 1 << 12  # CAP_NET_ADMIN only
    w = mp.minipod("exec", "p", "--", "touch", "/x", check=False)
    assert w.returncode != 0 and "Read-only file system" in w.stderr
    mp.minipod("rm", "-f", "p")


# --- image import: one-line errors (no root needed) -------------------------------------------

def _cli(tmp_path, *args):
    import subprocess
    import sys

    conf = tmp_path / "config.toml"
    conf.write_text(f'image_root = "{tmp_path}/images"\nroot = "{tmp_path}/run"\n'
                    f'data_root = "{tmp_path}/data"\n')
    return subprocess.run([sys.executable, "-m", "minipod", *args], capture_output=True,
                          text=True, env=dict(os.environ, MINIPOD_CONFIG=str(conf)))


def _tar(path, *members: tuple[str, bytes]) -> str:
    import io

    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("text", "not a tar archive or OCI layout directory (not tar, tar.gz, tar.bz2 or tar.xz)"),
    ("empty", "not a tar archive or OCI layout directory (not tar, tar.gz, tar.bz2 or tar.xz)"),
    ("file then under it", "member 'a/b' is under 'a', which is a file in the archive"),
    ("under it then file", "member 'a' is a file and a directory in the archive"),
])
def test_image_import_errors_are_one_line(tmp_path, case, message):
    f = tmp_path / "in.tar"
    if case == "text":
        f.write_text("apiVersion: v1\nkind: Pod\n")
    elif case == "empty":
        f.write_bytes(b"")
    elif case == "file then under it":
        _tar(f, ("a", b"x"), ("a/b", b"y"))
    else:
        _tar(f, ("a/b", b"y"), ("a", b"x"))
    p = _cli(tmp_path, "image", "import", str(f))
    assert p.returncode == 1
    assert p.stderr == f"error: {f}: {message}\n"


# --- fuzzing real runs: whatever fails, nothing stays ------------------------------------------

def _failing(kind: str, name: str) -> str:
    """A pod that validates but cannot be set up."""
    return {
        "missing binary": pod(name, '["/no/such/binary"]'),
        "workingDir is a file": pod(name, extra="    workingDir: /bin/busybox/x\n"),
        "name clash": pod("x"),
        "missing image": pod(name, image="localhost:1/nosuch/image:1"),
        "volume over a file": pod(name, extra="    volumeMounts: [{name: v, mountPath: /bin/sh}]\n"
                                  "  volumes: [{name: v, emptyDir: {}}]\n"),
    }[kind]


def test_generated_failing_files_leave_nothing(mp):
    """A handful of generated multi-document files, one document of which cannot start: the
    run fails with one error line and the host is as it was (real runs: slow, so few)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    mp.minipod("run", "-d", mp.write("x.yaml", pod("x")))

    @settings(max_examples=4, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],  # no shrinking: every step is a real run
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.integers(1, 2).flatmap(lambda n: st.tuples(
        st.just(n), st.integers(0, n - 1),
        st.sampled_from(["missing binary", "workingDir is a file", "name clash",
                         "missing image", "volume over a file"]),
        st.booleans())))
    def run(case):
        n, bad, kind, detach = case
        docs = [_failing(kind, f"p{i}") if i == bad else pod(f"p{i}") for i in range(n)]
        before = host(mp)
        p = mp.minipod("run", *(["-d"] if detach else []),
                       mp.write("gen.yaml", "---\n".join(docs)), check=False)
        assert_one_line_error(p)
        assert running(mp) == ["x"], (case, p.stderr)
        assert host(mp) == before, case

    run()
    mp.minipod("rm", "-f", "x")
