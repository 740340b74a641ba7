"""configMap, secret, downwardAPI, projected, hostPath and persistentVolumeClaim volumes, and
env from the same objects, in real pods, observed from inside the container as a user would."""

from __future__ import annotations

import base64
import os
import socket
import stat

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

SECRET_BYTES = "s3cr3t-" + os.urandom(6).hex()

OBJECTS = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-index}}
data:
  index.html: "hello from a configMap\\n"
  mode: "debug"
binaryData:
  blob: {base64.b64encode(bytes([0, 1, 2, 255])).decode()}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
type: Opaque
data:
  password: {base64.b64encode(SECRET_BYTES.encode()).decode()}
stringData:
  user: admin
  1bad: "x"
"""

POD = """
---
apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {app: web, tier: front}
  annotations: {note: hi}
spec:
  volumes:
  - name: index
    configMap: {name: web-index}
  - name: picked
    configMap:
      name: web-index
      defaultMode: 0600
      items: [{key: mode, path: conf/mode.txt, mode: 0444}]
  - name: creds
    secret: {secretName: creds, defaultMode: 0400}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - path: mem
        resourceFieldRef: {containerName: web, resource: limits.memory, divisor: 1Mi}
  - name: all
    projected:
      sources:
      - configMap: {name: web-index, items: [{key: mode, path: mode}]}
      - secret: {name: creds, items: [{key: user, path: user}]}
      - downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}
  - name: mem
    emptyDir: {medium: Memory, sizeLimit: 4Mi}
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "exec httpd -f -p 80 -h /www"]
    resources: {limits: {memory: 64Mi, cpu: 250m}}
    volumeMounts:
    - {name: index, mountPath: /www}
    - {name: picked, mountPath: /picked}
    - {name: creds, mountPath: /creds}
    - {name: info, mountPath: /info}
    - {name: all, mountPath: /all}
    - {name: mem, mountPath: /mem}
    - {name: index, mountPath: /etc/one.html, subPath: index.html}
    - {name: mem, mountPath: /per-pod, subPathExpr: $(POD_NAME)}
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: MY_IP_TOO
      value: "ip=$(POD_IP)"
    - name: APP
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}
    - name: UID
      valueFrom: {fieldRef: {fieldPath: metadata.uid}}
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: SA
      valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}
    - name: CPU_MILLI
      valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}
    - name: MODE
      valueFrom: {configMapKeyRef: {name: web-index, key: mode}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: NOPE
      valueFrom: {configMapKeyRef: {name: web-index, key: nope, optional: true}}
    envFrom:
    - {configMapRef: {name: web-index}, prefix: CM_}
    - {secretRef: {name: creds}}
"""


def sh(mp, cmd: str, pod: str = "vols") -> str:
    return mp.minipod("exec", pod, "--", "sh", "-c", cmd).stdout


@pytest.fixture
def vols(mp):
    path = mp.write("vols.yaml", OBJECTS + POD)
    p = mp.minipod("run", "-d", path)
    yield mp, p
    mp.minipod("rm", "-f", "vols")


def test_configmap_serves_and_has_the_kubelet_layout(vols):
    mp, run = vols
    pod = mp.pod("vols")
    ip = pod["status"]["podIP"]
    got = mp.wait(lambda: mp.minipod("exec", "vols", "--", "wget", "-qO-", f"http://{ip}/",
                                     check=False).stdout, what="httpd")
    assert got == "hello from a configMap\n"
    ls = sh(mp, "ls -la /www")
    assert "..data -> ..20" in ls
    assert "index.html -> ..data/index.html" in ls
    assert "blob -> ..data/blob" in ls
    assert sh(mp, "od -An -tx1 /www/blob").split() == ["00", "01", "02", "ff"]
    # Modes: defaultMode 0644, defaultMode 0600 overridden by the item's 0444; only the items.
    assert sh(mp, "stat -L -c %a /www/index.html") == "644\n"
    assert sh(mp, "ls /picked") == "conf\n"
    assert sh(mp, "stat -L -c %a /picked/conf/mode.txt; cat /picked/conf/mode.txt") == \
        "444\ndebug"
    assert sh(mp, "cat /etc/one.html") == "hello from a configMap\n"
    # Kubelet-written volumes are read-only.
    p = mp.minipod("exec", "vols", "--", "touch", "/www/x", check=False)
    assert p.returncode != 0 and "Read-only" in p.stderr
    # Warnings of the run: the invalid envFrom key is skipped, as the kubelet does.
    skipped = ("Keys [1bad] from the EnvFrom secret default/creds were skipped since they are "
               "invalid environment variable names.")
    assert f"container 'web': {skipped}" in run.stderr
    events = mp.minipod("events", "vols").stdout
    assert "InvalidEnvironmentVariableNames" in events and skipped in events, events


def test_secret_on_tmpfs_and_not_on_disk(vols):
    mp, _ = vols
    mounts = sh(mp, "cat /proc/mounts")
    line = [ln for ln in mounts.splitlines() if " /creds " in ln]
    assert line and line[0].split()[2] == "tmpfs", mounts
    assert [ln.split()[2] for ln in mounts.splitlines() if " /all " in ln] == ["tmpfs"]
    assert [ln.split()[2] for ln in mounts.splitlines() if " /info " in ln] == ["tmpfs"]
    mem = [ln for ln in mounts.splitlines() if " /mem " in ln]
    assert mem and mem[0].split()[2] == "tmpfs" and "size=4096k" in mem[0], mem
    assert sh(mp, "cat /creds/password") == SECRET_BYTES
    assert sh(mp, "stat -L -c %a /creds/password") == "400\n"
    # No secret byte anywhere under data_root (the node's disk).
    for d, _, files in os.walk(mp.data):
        for f in files:
            p = os.path.join(d, f)
            if os.path.islink(p) or not stat.S_ISREG(os.lstat(p).st_mode):
                continue
            with open(p, "rb") as fh:
                assert SECRET_BYTES.encode() not in fh.read(), p


def test_downward_api_and_projected(vols):
    mp, _ = vols
    assert sh(mp, "cat /info/labels") == 'app="web"\ntier="front"'
    assert sh(mp, "cat /info/name; echo; cat /info/mem") == "vols\n64"
    assert sh(mp, "cat /all/mode /all/user /all/ns") == "debugadmindefault"
    assert "..data -> ..20" in sh(mp, "ls -la /all")


def test_env_from_fields_and_objects(vols):
    mp, _ = vols
    pod = mp.pod("vols")
    env = dict(line.split("=", 1) for line in sh(mp, "env").splitlines() if "=" in line)
    assert env["POD_NAME"] == "vols"
    assert env["POD_IP"] == pod["status"]["podIP"] and env["POD_IP"]
    assert env["MY_IP_TOO"] == "ip=" + pod["status"]["podIP"]
    assert env["APP"] == "web"
    assert env["UID"] == pod["metadata"]["uid"]
    assert env["NODE"] == socket.gethostname()
    assert env["SA"] == "default"
    assert env["CPU_MILLI"] == "250"
    assert env["MODE"] == "debug" and env["CM_mode"] == "debug"
    assert env["PASSWORD"] == SECRET_BYTES and env["user"] == "admin"
    assert "NOPE" not in env and "1bad" not in env
    assert sh(mp, "ls /mem") == "vols\n"  # subPathExpr made $(POD_NAME) inside the volume


def test_configmap_file_option_and_missing_configmap(mp):
    pod = mp.write("pod.yaml", POD)
    for cmd in (["validate", pod], ["run", "-d", pod]):
        p = mp.minipod(*cmd, check=False)
        assert p.returncode == 1 and p.stderr.startswith("error: "), p.stderr
        assert "spec.volumes[0].configMap: FailedMount: volume 'index': configmap 'web-index' " \
            "not found" in p.stderr
        assert "Traceback" not in p.stderr
    assert mp.minipod("ps").stdout == ""
    objs = mp.write("objs.yaml", OBJECTS)
    assert "valid (1 pod: vols)" in mp.minipod("validate", pod, "--configmap", objs).stdout
    mp.minipod("run", "-d", pod, "--configmap", objs)
    assert mp.minipod("exec", "vols", "--", "cat", "/www/index.html").stdout == \
        "hello from a configMap\n"
    mp.minipod("rm", "-f", "vols")


@pytest.mark.parametrize("bad", ["missing key", "subPath ..", "subPathExpr ..", "env key"])
def test_bad_references_are_one_line_errors(mp, bad):
    text = OBJECTS + POD
    text = {
        "missing key": text.replace("items: [{key: mode, path: conf/mode.txt",
                                    "items: [{key: nokey, path: conf/mode.txt"),
        "subPath ..": text.replace("subPath: index.html", "subPath: ../../etc"),
        "subPathExpr ..": text.replace("subPathExpr: $(POD_NAME)", "subPathExpr: $(DOTS)")
        .replace("    env:\n", "    env:\n    - {name: DOTS, value: ../..}\n"),
        "env key": text.replace("key: password}", "key: passwd}"),
    }[bad]
    want = {
        "missing key": "spec.volumes[1].configMap.items[0].key: FailedMount: volume 'picked': "
                       "couldn't find key nokey in ConfigMap default/web-index",
        "subPath ..": "volumeMounts[6].subPath: must be a relative path without '..'",
        "subPathExpr ..": "volumeMounts[7].subPathExpr: expands to '../..'",
        "env key": "secretKeyRef.key: CreateContainerConfigError: couldn't find key passwd in "
                   "Secret default/creds",
    }[bad]
    p = mp.minipod("run", "-d", mp.write("bad.yaml", text), check=False)
    assert p.returncode == 1, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if not ln.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and want in errors[0], p.stderr
    assert mp.minipod("ps").stdout == ""
    data = os.path.join(mp.data, "pods")
    assert not os.path.isdir(data) or not os.listdir(data)


HOSTPATH = """
apiVersion: v1
kind: Pod
metadata: {name: hp}
spec:
  volumes:
  - name: h
    hostPath: {path: PATH, type: TYPE}
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts: [{name: h, mountPath: /h}]
"""


def _hostpath(mp, path: str, type_: str) -> str:
    return mp.write("hp.yaml", HOSTPATH.replace("PATH", path).replace("TYPE", repr(type_)))


@pytest.mark.parametrize("type_,make,check", [
    ("", None, "test -d /h"),
    ("DirectoryOrCreate", None, "test -d /h"),
    ("Directory", "dir", "test -f /h/inside"),
    ("FileOrCreate", None, "test -f /h && ! test -s /h"),
    ("File", "file", "grep -q content /h"),
    ("Socket", "socket", "test -S /h"),
    ("CharDevice", "char", "test -c /h"),
])
def test_host_path_types(mp, tmp_path, type_, make, check):
    path = str(tmp_path / "host-thing")
    sock = None
    if make == "dir":
        os.mkdir(path)
        open(os.path.join(path, "inside"), "w").close()
    elif make == "file":
        with open(path, "w") as f:
            f.write("content\n")
    elif make == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
    elif make == "char":
        path = "/dev/null"
    try:
        mp.minipod("run", "-d", _hostpath(mp, path, type_))
        assert mp.minipod("exec", "hp", "--", "sh", "-c", check, check=False).returncode == 0
        mp.minipod("rm", "-f", "hp")
    finally:
        if sock:
            sock.close()
    if type_ == "DirectoryOrCreate" or type_ == "":
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    if type_ == "FileOrCreate":
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


@pytest.mark.parametrize("type_,make,want", [
    ("Directory", None, "is not a directory (it does not exist)"),
    ("Directory", "file", "is not a directory"),
    ("File", "dir", "is not a file"),
    ("Socket", "file", "is not a socket file"),
    ("BlockDevice", "file", "is not a block device"),
    ("CharDevice", None, "is not a character device (it does not exist)"),
    ("DirectoryOrCreate", "file", "is not a directory"),
    ("FileOrCreate", "dir", "is not a file"),
])
def test_host_path_wrong_type_creates_nothing(mp, tmp_path, type_, make, want):
    path = str(tmp_path / "host-thing")
    if make == "dir":
        os.mkdir(path)
    elif make == "file":
        open(path, "w").close()
    p = mp.minipod("run", "-d", _hostpath(mp, path, type_), check=False)
    assert p.returncode == 1, p.stderr
    assert p.stderr == (f"error: {mp.base}/hp.yaml: spec.volumes[0].hostPath: hostPath type "
                        f"check failed: {path} {want}\n"), p.stderr
    assert os.path.lexists(path) == bool(make)
    assert mp.minipod("ps").stdout == ""


PVC = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: DATA}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  volumes: [{name: d, persistentVolumeClaim: {claimName: DATA}}]
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "CMD"]
    volumeMounts: [{name: d, mountPath: /data}]
"""


def test_pvc_outlives_the_pod(mp):
    claim = "data-" + os.urandom(3).hex()

    def manifest(name: str, cmd: str) -> str:
        return mp.write(f"{name}.yaml", PVC.replace("DATA", claim).replace("NAME", name)
                        .replace("CMD", cmd))

    mp.minipod("run", "-d", manifest("first", "echo kept > /data/f; exec sleep 3600"))
    mp.wait(lambda: mp.minipod("exec", "first", "--", "cat", "/data/f", check=False).stdout,
            what="the write")
    ls = mp.minipod("volume", "ls").stdout
    assert claim in ls and "first" in ls, ls
    p = mp.minipod("volume", "rm", claim, check=False)
    assert p.returncode == 1 and "in use by pod first" in p.stderr, p.stderr
    mp.minipod("rm", "-f", "first")
    assert os.path.isfile(os.path.join(mp.data, "volumes", claim, "_data", "f"))
    mp.minipod("run", "-d", manifest("second", "exec sleep 3600"))
    assert mp.minipod("exec", "second", "--", "cat", "/data/f").stdout == "kept\n"
    mp.minipod("rm", "-f", "second")
    assert mp.minipod("volume", "ls", "-q").stdout == claim + "\n"
    mp.minipod("volume", "rm", claim)
    assert mp.minipod("volume", "ls", "-q").stdout == ""
    p = mp.minipod("volume", "rm", claim, check=False)
    assert p.returncode == 1 and "not found" in p.stderr


def test_killed_supervisor_unmounts_the_secret_tmpfs(vols):
    """The janitor's teardown (not only `rm`) unmounts the pod's tmpfs volumes."""
    import signal

    mp, _ = vols
    info = mp.inspect("vols")

    def ours() -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return [ln for ln in f if os.path.join(mp.root, "pods", "vols") in ln]

    assert len(ours()) == 4  # creds, info, all, mem
    os.kill(info["supervisor"]["pid"], signal.SIGKILL)
    mp.wait(lambda: mp.pod("vols")["status"]["phase"] == "Failed", what="the janitor")
    assert ours() == []


def test_host_path_block_device(mp, disk):
    """A BlockDevice hostPath mounts the node (nodev: a non-privileged container sees it but
    cannot open it, as the device allow-list would refuse it anyway)."""
    node, major, minor = disk
    mp.minipod("run", "-d", _hostpath(mp, node, "BlockDevice"))
    out = mp.minipod("exec", "hp", "--", "stat", "-c", "%F %t:%T", "/h").stdout
    assert out == f"block special file {major:x}:{minor:x}\n"
    mp.minipod("rm", "-f", "hp")


def test_failed_volume_set_up_rolls_back_the_tmpfs(mp):
    """A hostPath that passes the plan's check but cannot be created (under /proc) fails the
    set-up after the secret's tmpfs was mounted: one line, and the tmpfs is gone again (undone
    by the set-up's rollback; the CLI's clean-up of a failed start would catch it too)."""
    text = OBJECTS + """
---
apiVersion: v1
kind: Pod
metadata: {name: rb}
spec:
  volumes:
  - {name: creds, secret: {secretName: creds}}
  - {name: h, hostPath: {path: /proc/minipod-no/such, type: DirectoryOrCreate}}
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts: [{name: creds, mountPath: /creds}, {name: h, mountPath: /h}]
"""
    p = mp.minipod("run", "-d", mp.write("rb.yaml", text), check=False)
    assert p.returncode == 1, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if not ln.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith('error: pod "rb": set up volumes: volume "h"'
                                                     ": /proc/minipod-no/such"), p.stderr
    assert mp.minipod("ps").stdout == ""
    with open("/proc/self/mountinfo") as f:
        assert not [ln for ln in f if mp.base in ln]


EMPTY_DIRS = """
apiVersion: v1
kind: Pod
metadata: {name: ed}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  volumes:
  - {name: disk, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory}}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "exec sleep 3600"]
    volumeMounts: [{name: disk, mountPath: /disk}, {name: mem, mountPath: /mem}]
"""


def test_empty_dirs_are_world_writable_as_the_kubelet_makes_them(mp):
    """A container running as any user can write to an emptyDir: 0777 on disk, 1777 on tmpfs."""
    mp.minipod("run", "-d", mp.write("ed.yaml", EMPTY_DIRS))
    out = mp.minipod("exec", "ed", "--", "sh", "-c",
                     "stat -c '%a %u' /disk /mem && touch /disk/f /mem/f && id -u").stdout
    assert out.split("\n") == ["777 0", "1777 0", "1000", ""], out
    mp.minipod("rm", "-f", "ed")
