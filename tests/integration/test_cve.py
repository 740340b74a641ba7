"""Regression tests for the container-runtime CVE classes, each named after its CVE, and for the
device-node rules (nodev rootfs and volumes, no device nodes from image layers).

Each test builds what the exploit needs (an image with hostile symlinks or device nodes, a pod
whose containers race each other) and asserts what the host and the container observe. Each was
checked to fail with its protection disabled. (CVE-2019-5736 and CVE-2024-21626, the
container-entry path, are tested with that code.)
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
import tarfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))

from conftest import SUFFIX  # noqa: E402
from registry import images  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

_BASE: list[bytes] = []


def layer(members: list[tuple]) -> bytes:
    """A layer tar: (name, "dir") | (name, "symlink", target) | (name, "blk"|"chr", major,
    minor) | (name, "fifo")."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, *rest in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            info.mode = 0o755 if kind == "dir" else 0o666
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "blk": tarfile.BLKTYPE, "chr": tarfile.CHRTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind == "symlink":
                info.linkname = rest[0]
            elif kind in ("blk", "chr"):
                info.devmajor, info.devminor = rest
            tf.addfile(info)
    return buf.getvalue()


def import_image(mp, tmp_path, name: str, members: list[tuple]) -> tuple[str, str]:
    """Import busybox + a layer of `members` as localhost/<name>-<suffix>:1 with `minipod image
    import`, as a user would; return (the reference, import's stderr)."""
    if not _BASE:
        _BASE.append(images.busybox_tar())
    ref = f"localhost/{name}-{SUFFIX}:1"
    layout = tmp_path / f"layout-{name}"
    images.write_oci_layout(str(layout), {ref: images.image([_BASE[0], layer(members)])})
    archive = tmp_path / f"{name}.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(layout, arcname=".")
    p = mp.minipod("image", "import", str(archive))
    assert p.stdout == f"Loaded image: {ref}\n"
    return ref, p.stderr


def pod(name: str, ref: str, script: str, mounts: str = "", extra: str = "") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes: [{{name: v, emptyDir: {{}}}}]
  containers:
  - name: c
    image: {ref}
    imagePullPolicy: Never
    command: [sh, -c, {json.dumps(script)}]
    volumeMounts: {mounts or "[]"}
{extra}"""


def run_to_completion(mp, name: str, spec: str) -> dict[str, str]:
    """Run the pod in the foreground until its containers end; {container: its output}."""
    mp.minipod("run", mp.write(f"{name}.yaml", spec), timeout=120)
    st = mp.pod(name)["status"]
    return {c["name"]: mp.minipod("logs", name, "-c", c["name"]).stdout
            for c in st["containerStatuses"]}


def volume_dir(mp, name: str) -> str:
    return os.path.join(mp.inspect(name)["dirs"]["data"], "volumes", "v")


def host_mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln for ln in f if f" {path}" in ln]


@pytest.fixture
def host_dir(tmp_path):
    """A directory on the host that a container must never see or write: holds one marker."""
    d = tmp_path / "host-only"
    d.mkdir()
    (d / "marker").write_text("host\n")
    return d


@pytest.fixture
def absent(tmp_path):
    """A host path that does not exist, and must not exist after the test either."""
    path = f"/tmp/minipod-cve-{SUFFIX}-{random.randrange(1 << 30):x}"
    yield path
    if os.path.lexists(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)


# -- CVE-2021-30465: a mount target that is (or becomes) a symlink ---------------------------

def test_cve_2021_30465_symlinked_mount_targets_in_the_image_stay_in_the_root(mp, tmp_path,
                                                                            host_dir):
    # /data points at a host directory by an absolute path, /etc/x by enough "../" to climb out
    # of any rootfs: resolved on the host, the emptyDir would be mounted over host_dir.
    other = tmp_path / "host-two"
    other.mkdir()
    ref, _ = import_image(mp, tmp_path, "cve30465", [
        ("data", "symlink", str(host_dir)),
        ("etc/x", "symlink", "../../../../../../../../.." + str(other)),
    ])
    script = ("echo a > /data/f && echo b > /etc/x/f && ls -A /data /etc/x && "
              "awk '{print $5}' /proc/self/mountinfo")
    mounts = "[{name: v, mountPath: /data, subPath: a}, {name: v, mountPath: /etc/x, subPath: b}]"
    out = run_to_completion(mp, "symlinked", pod("symlinked", ref, script, mounts))["c"]
    vol = volume_dir(mp, "symlinked")
    # The mounts landed inside the container's root, where the symlinks lead there: the files
    # went into the volume, the host directory is untouched and has nothing mounted on it.
    assert open(os.path.join(vol, "a", "f")).read() == "a\n", out
    assert open(os.path.join(vol, "b", "f")).read() == "b\n", out
    assert "marker" not in out
    # The mount points, as the container sees them.
    assert {str(host_dir), str(other)} <= set(out.splitlines()), out
    assert os.listdir(host_dir) == ["marker"] and os.listdir(other) == []
    assert host_mounts_under(str(tmp_path)) == []


def test_cve_2021_30465_a_symlink_swapped_in_after_resolution_cannot_redirect_the_mount(
        tmp_path, host_dir):
    """The race itself, made deterministic: between resolving the target and mounting onto it,
    the target is replaced by a symlink to the host (what a container sharing the volume does in
    a loop in the published exploit). The mount must land on the object that was resolved."""
    from minipod.kernel import _libc, inroot, mounts
    from minipod.pod import rootfs
    from minipod.pod.plan import Mount

    root = tmp_path / "root"
    (root / "vol" / "sub").mkdir(parents=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "from-volume").write_text("v\n")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child in its own mount namespace: nothing it mounts reaches the host
        result: dict = {}
        try:
            os.close(r)
            _libc.unshare(_libc.CLONE_NEWNS)
            mounts.make_private("/")
            real = inroot.open_in_root

            def racing(root_fd, path, create=None):
                fd = real(root_fd, path, create)
                if create:
                    os.rename(root / "vol" / "sub", root / "vol" / "sub.old")
                    os.symlink(str(host_dir), root / "vol" / "sub")
                return fd

            inroot.open_in_root = racing
            root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
            rootfs._volume(root_fd, Mount(str(src), "/vol/sub"), 0)
            result = {"host": sorted(os.listdir(host_dir)),
                      "resolved": sorted(os.listdir(root / "vol" / "sub.old"))}
        except BaseException as e:  # noqa: BLE001 - report everything to the test
            result = {"error": repr(e)}
        finally:
            os.write(w, json.dumps(result).encode())
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        result = json.loads(f.read() or "{}")
    os.waitpid(pid, 0)
    assert result == {"host": ["marker"], "resolved": ["from-volume"]}
    assert os.listdir(host_dir) == ["marker"]


def test_cve_2017_1002101_subpath_symlink_left_in_a_volume_cannot_bind_a_host_directory(
        mp, tmp_path, host_dir):
    # The container replaces its subPath's directory in the volume by a symlink to a host
    # directory and fails; its restart binds the subPath again. Followed on the host, the
    # symlink would bind host_dir into the container.
    script = f"""
if [ -L /v/evil ]; then touch /mnt/from-container; ls -A /mnt; exit 0; fi
mv /v/evil /v/was-evil && ln -s {host_dir} /v/evil && exit 1
"""
    spec = f"""
apiVersion: v1
kind: Pod
metadata: {{name: subpath}}
spec:
  restartPolicy: OnFailure
  volumes: [{{name: v, emptyDir: {{}}}}]
  containers:
  - name: c
    image: busybox
    command: [sh, -c, {json.dumps(script)}]
    volumeMounts: [{{name: v, mountPath: /v}}, {{name: v, mountPath: /mnt, subPath: evil}}]
"""
    out = run_to_completion(mp, "subpath", spec)["c"]
    assert mp.pod("subpath")["status"]["containerStatuses"][0]["restartCount"] == 1
    assert out == "from-container\n"  # not the host's marker
    assert os.listdir(host_dir) == ["marker"]
    # The subPath was resolved inside the volume, as if the volume were "/".
    vol = volume_dir(mp, "subpath")
    assert os.listdir(vol + str(host_dir)) == ["from-container"]


# -- CVE-2024-45310: creating a mount point through a symlink ---------------------------------

def test_cve_2024_45310_mount_points_are_never_created_on_the_host(mp, tmp_path, absent):
    # The image's /data and /etc/hostname point at a host path that does not exist: making the
    # directory (and the file the kubelet binds /etc/hostname onto) through them on the host
    # would create it there.
    ref, _ = import_image(mp, tmp_path, "cve45310", [
        ("data", "symlink", f"{absent}/dir/sub"),
        ("etc/hostname", "symlink", f"{absent}/hostname"),
    ])
    mounts = "[{name: v, mountPath: /data}]"
    out = run_to_completion(mp, "mkdirs", pod("mkdirs", ref, "echo x > /data/f; cat /etc/hostname",
                                             mounts))["c"]
    assert out == "mkdirs\n"
    assert open(os.path.join(volume_dir(mp, "mkdirs"), "f")).read() == "x\n"
    assert not os.path.lexists(absent)


# -- CVE-2022-0492: cgroup v1 release_agent ---------------------------------------------------

def test_cve_2022_0492_release_agent_is_not_writable(mp):
    # The exploit mounts a cgroup v1 hierarchy and writes its release_agent (run as root on the
    # host when the cgroup empties). A named hierarchy with no controllers keeps this test
    # harmless even where the protection is missing.
    name = f"mpcve{SUFFIX}"
    script = f"""
exec 2>&1
for f in /sys/fs/cgroup/release_agent /sys/fs/cgroup/*/release_agent; do
  [ -e "$f" ] && echo "FOUND $f"
  echo /bin/true > "$f" && echo "WROTE $f"
done
mkdir -p /tmp/cg
mount -t cgroup -o none,name={name} cgroup /tmp/cg && echo MOUNTED \\
  && echo /bin/true > /tmp/cg/release_agent && echo WROTE-MOUNTED
# The published exploit: a user namespace gives CAP_SYS_ADMIN there.
unshare -Urm sh -c 'mount -t cgroup -o none,name={name}u cgroup /tmp/cg && echo MOUNTED-USERNS \\
  && echo /bin/true > /tmp/cg/release_agent && echo WROTE-USERNS'
echo done
"""
    spec = pod("agent", "busybox", script).replace("    imagePullPolicy: Never\n", "")
    out = run_to_completion(mp, "agent", spec)["c"]
    assert out.splitlines()[-1] == "done", out
    # The container's /sys/fs/cgroup is read-only and rooted at its own cgroup (release_agent
    # is only in a hierarchy's real root); no CAP_SYS_ADMIN to mount one.
    for word in ("FOUND", "WROTE", "MOUNTED"):
        assert word not in out, out
    assert "mount: permission denied" in out, out


# -- device nodes -----------------------------------------------------------------------------

def test_device_nodes_from_layers_are_dropped_and_rootfs_and_volumes_are_nodev(mp, tmp_path):
    ref, warning = import_image(mp, tmp_path, "devices", [
        ("srv", "dir"),
        ("srv/loop0", "blk", 7, 0),
        ("srv/null", "chr", 1, 3),
        ("srv/fifo", "fifo"),
    ])
    assert "dropped 2 device node(s) (srv/loop0, srv/null)" in warning
    # 1:3 (/dev/null) is a device every device cgroup allows: only nodev can refuse it here.
    script = """
exec 2>&1
echo srv: $(ls -A /srv)
mknod /tmp/null c 1 3 && echo x > /tmp/null && echo ROOTFS-OPENED
mknod /v/null c 1 3 && echo x > /v/null && echo VOLUME-OPENED
echo x > /dev/null && echo zero: $(head -c 3 /dev/zero | wc -c)
cut -d' ' -f5,6 /proc/self/mountinfo | grep -E '^/(|v|dev|dev/pts) ' | sed 's/^/mount: /'
"""
    extra = f"""  - name: privileged
    image: {ref}
    imagePullPolicy: Never
    securityContext: {{privileged: true}}
    command: [sh, -c, "mknod /tmp/null c 1 3 && echo x > /tmp/null && echo ROOTFS-OPENED"]
  - name: readonly
    image: {ref}
    imagePullPolicy: Never
    securityContext: {{readOnlyRootFilesystem: true}}
    command: [sh, -c, "cut -d' ' -f5,6 /proc/self/mountinfo | grep '^/ '"]
"""
    out = run_to_completion(mp, "devices", pod("devices", ref, script,
                                               "[{name: v, mountPath: /v}]", extra))
    c = out["c"]
    lines = c.splitlines()
    assert "srv: fifo" in lines, c  # FIFOs are kept; the block and char devices are not
    # mknod works (CAP_MKNOD is a default), opening the node does not.
    assert "OPENED" not in c, c
    assert c.count("/tmp/null: Permission denied") == 1 and "/v/null: Permission denied" in c, c
    # The container's own /dev is a mount of its own, not nodev: its nodes work, as does pts.
    assert "zero: 3" in lines, c
    mnt = {k: v.split(",") for k, v in (ln.split()[1:3] for ln in lines
                                         if ln.startswith("mount: "))}
    assert set(mnt) == {"/", "/v", "/dev", "/dev/pts"}, c
    assert "nodev" in mnt["/"] and "nodev" in mnt["/v"], c
    assert "nodev" not in mnt["/dev"], c
    # A read-only rootfs is remounted, and the remount keeps nodev.
    ro = out["readonly"].split()
    assert ro[0] == "/" and {"ro", "nodev"} <= set(ro[1].split(",")), out["readonly"]
    # Kubernetes gives privileged containers the host's devices: their rootfs is not nodev.
    assert out["privileged"] == "ROOTFS-OPENED\n"
