"""A real pod, observed as a user would: /proc/PID/ns inodes, HTTP over the pod IP, exec,
restarts, cgroup files, and a host left exactly as it was (the `mp` fixture checks that)."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

WEB = """
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      mkdir -p /www && echo "hello from $HOSTNAME" > /www/index.html
      exec httpd -f -p 80 -h /www
    ports:
    - containerPort: 80
    resources:
      limits: {memory: 64Mi, cpu: 500m}
  - name: shell
    image: busybox
    command: ["sleep", "3600"]
"""


def ns_inode(pid: int, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_two_container_pod(mp):
    path = mp.write("web.yaml", WEB)
    out = mp.minipod("run", "-d", path)
    assert out.stdout.strip() == "web"
    info = mp.inspect("web")
    sandbox = info["sandbox"]["pid"]
    pids = {c["name"]: c["pid"] for c in info["containers"]}
    assert sandbox and all(pids.values())

    # The pause-container design: net/ipc/uts shared through the sandbox, pid/mnt per container.
    for kind in ("net", "ipc", "uts"):
        assert ns_inode(pids["web"], kind) == ns_inode(sandbox, kind)
        assert ns_inode(pids["shell"], kind) == ns_inode(sandbox, kind)
        assert ns_inode(sandbox, kind) != ns_inode(os.getpid(), kind)  # not the host's
    for kind in ("pid", "mnt"):
        inodes = {ns_inode(sandbox, kind), ns_inode(pids["web"], kind),
                  ns_inode(pids["shell"], kind)}
        assert len(inodes) == 3, kind
    # inspect reports the same inodes the kernel shows.
    web = next(c for c in info["containers"] if c["name"] == "web")
    assert web["namespaces"]["net"] == ns_inode(sandbox, "net")

    # Each container is PID 1 of its own PID namespace.
    assert mp.minipod("exec", "web", "-c", "shell", "--", "cat", "/proc/1/cmdline"
                      ).stdout.startswith("sleep")

    # localhost inside the pod, and the pod IP from the host.
    ip = mp.pod("web")["status"]["podIP"]
    body = mp.wait(lambda: _try(lambda: mp.minipod(
        "exec", "web", "-c", "shell", "--", "wget", "-q", "-O-", "http://localhost/").stdout),
        what="httpd on localhost")
    assert body == "hello from web\n"
    assert http_get(f"http://{ip}/") == "hello from web\n"
    assert mp.minipod("exec", "web", "--", "hostname").stdout == "web\n"

    # Kill the web container's PID 1 from the host: it comes back, the pod keeps IP and netns.
    netns = ns_inode(sandbox, "net")
    os.kill(pids["web"], signal.SIGKILL)
    new = mp.wait(lambda: _restarted(mp, "web", pids["web"]), what="the restart")
    assert new["restartCount"] == 1
    assert mp.pod("web")["status"]["podIP"] == ip
    info = mp.inspect("web")
    assert info["sandbox"]["pid"] == sandbox
    assert ns_inode(new["pid"], "net") == netns
    assert mp.wait(lambda: _try(lambda: http_get(f"http://{ip}/")), what="httpd again")

    # The cgroup files say what the manifest asked for (v1 names on a v1 host).
    cg = web["cgroup"]
    if os.path.exists(f"/sys/fs/cgroup/memory/{cg}"):
        assert _read(f"/sys/fs/cgroup/memory/{cg}/memory.limit_in_bytes") == "67108864"
        assert _read(f"/sys/fs/cgroup/cpu/{cg}/cpu.cfs_quota_us") == "50000"
        assert str(new["pid"]) in _read(f"/sys/fs/cgroup/memory/{cg}/cgroup.procs").split()
    elif os.path.exists(f"/sys/fs/cgroup/{cg}/cgroup.controllers"):
        assert _read(f"/sys/fs/cgroup/{cg}/memory.max") == "67108864"
        assert _read(f"/sys/fs/cgroup/{cg}/cpu.max") == "50000 100000"
    else:
        pytest.fail(f"the container's cgroup {cg} is neither in /sys/fs/cgroup/memory (v1) "
                    "nor a v2 cgroup under /sys/fs/cgroup")

    rows = mp.minipod("ps").stdout.splitlines()
    assert rows[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    assert rows[1].split()[:4] == ["web", "2/2", "Running", "1"] and rows[1].split()[5] == ip
    mp.minipod("rm", "-f", "web")
    assert mp.minipod("ps").stdout == ""


def test_container_runtime_defaults(mp):
    path = mp.write("web.yaml", WEB)
    mp.minipod("run", "-d", path)
    ex = lambda *cmd: mp.minipod("exec", "web", "-c", "shell", "--", *cmd).stdout  # noqa: E731
    # PID 1 holds only stdin, stdout and stderr.
    assert ex("ls", "/proc/1/fd").split() == ["0", "1", "2"]
    # containerd's 14 default capabilities, nothing more.
    assert "CapBnd:\t00000000a80425fb" in ex("cat", "/proc/1/status")
    # Kubernetes-managed /etc/hosts with the pod IP and hostname.
    ip = mp.pod("web")["status"]["podIP"]
    hosts = ex("cat", "/etc/hosts")
    assert hosts.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert hosts.endswith(f"{ip}\tweb\n")
    # Masked and read-only paths, a minimal /dev, the pod's /dev/shm.
    # (/proc/kcore is not in every kernel; /proc/timer_list and /proc/keys usually are.)
    masked = [path for path in ("/proc/timer_list", "/proc/keys", "/proc/kcore")
              if mp.minipod("exec", "web", "--", "test", "-e", path, check=False).returncode == 0]
    assert masked, "none of the masked paths exists: the check below would check nothing"
    for path in masked:
        assert ex("cat", path) == "", path
    p = mp.minipod("exec", "web", "-c", "shell", "--", "sh", "-c",
                   "echo x > /proc/sys/kernel/domainname", check=False)
    assert p.returncode != 0 and "Read-only" in p.stderr, p.stderr
    devs = set(ex("ls", "/dev").split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue"} <= devs
    mounts = ex("cat", "/proc/mounts")
    assert " /dev/shm tmpfs " in mounts and " /sys sysfs ro," in mounts
    # eth0 with the pod IP, lo up, default route through the bridge's gateway.
    addrs = ex("ip", "-o", "-4", "addr").splitlines()
    assert any(" eth0 " in f" {ln} ".replace("\t", " ") and f"inet {ip}/" in ln for ln in addrs)
    assert any(" lo " in f" {ln} " and "inet 127.0.0.1/8" in ln for ln in addrs)
    assert ex("ip", "route").startswith("default via ")


def test_misspelt_field_creates_nothing(mp):
    path = mp.write("bad.yaml", WEB.replace("    image: busybox\n    command: [\"sleep\"",
                                            "    imagee: busybox\n    command: [\"sleep\""))
    for cmd in (["validate", path], ["run", "-d", path]):
        p = mp.minipod(*cmd, check=False)
        assert p.returncode != 0
        assert "spec.containers[1].imagee: unknown field (did you mean 'image'?)" in p.stderr
        assert "Traceback" not in p.stderr
    assert not os.path.exists(os.path.join(mp.root, "pods", "web"))


@pytest.mark.parametrize("case", ["bad image", "missing binary", "bad workdir user"])
def test_failed_start_rolls_back(mp, case):
    text = {
        "bad image": WEB.replace("image: busybox\n    command: [\"sleep\"",
                                 "image: nosuch/image:1\n    command: [\"sleep\""),
        "missing binary": WEB.replace('command: ["sleep", "3600"]', 'command: ["/no/such"]'),
        "bad workdir user": WEB.replace('command: ["sleep", "3600"]',
                                        'command: ["sleep", "3600"]\n    securityContext:\n'
                                        '      runAsUser: 0\n    workingDir: /proc/1/x'),
    }[case]
    p = mp.minipod("run", "-d", mp.write("pod.yaml", text), check=False)
    assert p.returncode == 1, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    assert mp.minipod("ps").stdout == ""
    pods = os.path.join(mp.root, "pods")
    assert not os.path.isdir(pods) or not os.listdir(pods)
    data = os.path.join(mp.data, "pods")
    assert not os.path.isdir(data) or not os.listdir(data)


def test_ip_exhausted_rolls_back(mp, tmp_path):
    from conftest import free_subnet

    mp.subnet = free_subnet(30)  # a /30 has one address for pods after the gateway
    mp.write_config(subnet=mp.subnet)
    one = mp.write("one.yaml", WEB.replace("name: web\nspec", "name: one\nspec"))
    two = mp.write("two.yaml", WEB.replace("name: web\nspec", "name: two\nspec"))
    mp.minipod("run", "-d", one)
    p = mp.minipod("run", "-d", two, check=False)
    assert p.returncode == 1 and "no free address" in p.stderr, p.stderr
    assert [ln.split()[0] for ln in mp.minipod("ps").stdout.splitlines()[1:]] == ["one"]
    mp.minipod("rm", "-f", "one")


@pytest.mark.parametrize("janitor, kind", [("", "c"), ("python", "python")])
def test_killed_supervisor_leaves_nothing(mp, janitor, kind):
    """The C janitor (pause/janitor.c, what setup builds) and the Python one (no compiler)."""
    mp.write_config(janitor=janitor)
    mp.minipod("run", "-d", mp.write("web.yaml", WEB))
    info = mp.inspect("web")
    assert info["supervisor"]["janitorKind"] == kind
    comm = _read(f"/proc/{info['supervisor']['janitorPid']}/comm")
    assert comm == "mp-jan:web", comm  # both janitors name their pod (kubelet/titles.py)
    pids = [info["sandbox"]["pid"]] + [c["pid"] for c in info["containers"]]
    os.kill(info["supervisor"]["pid"], signal.SIGKILL)
    # The janitor reaps, tears down and records the pod as failed.
    mp.wait(lambda: mp.pod("web")["status"]["phase"] == "Failed", what="the janitor")
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in _read(f"/proc/{pid}/stat").split()[2]
    assert "supervisor died" in mp.pod("web")["status"].get("message", "")
    mp.minipod("rm", "web")


def test_foreground_run_and_ctrl_c(mp):
    import subprocess
    import sys

    # httpd and sleep as PID 1 ignore SIGTERM: a short grace period keeps the test short.
    path = mp.write("web.yaml", WEB.replace("spec:\n", "spec:\n  terminationGracePeriodSeconds: 3\n", 1))
    p = subprocess.Popen([sys.executable, "-m", "minipod", "run", path], env=mp.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        mp.wait(lambda: _try(lambda: mp.inspect("web")["phase"] == "Running"),
                what="the pod")
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C does: the whole process group
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "stopping pod web" in err
    assert mp.pod("web")["status"]["phase"] in ("Failed", "Succeeded")
    mp.minipod("rm", "web")


def test_stop_then_logs_then_rm(mp):
    spec = WEB.replace('command: ["sleep", "3600"]',
                       'command: ["sh", "-c", "echo one; echo two >&2; exec sleep 3600"]')
    mp.minipod("run", "-d", mp.write("web.yaml", spec))
    mp.wait(lambda: "two" in mp.minipod("logs", "web", "-c", "shell").stdout, what="logs")
    assert mp.minipod("logs", "web", "-c", "shell").stdout == "one\ntwo\n"
    assert mp.minipod("rm", "web", check=False).returncode == 1  # running: needs -f
    t = time.monotonic()
    mp.minipod("stop", "--grace", "1", "web")
    assert time.monotonic() - t < 20
    assert mp.minipod("logs", "web", "-c", "shell").stdout == "one\ntwo\n"
    assert mp.minipod("ps").stdout.splitlines()[1].split()[2] in ("Error", "Completed")
    mp.minipod("rm", "web")


def test_share_process_namespace(mp):
    spec = WEB.replace("spec:\n", "spec:\n  shareProcessNamespace: true\n", 1)
    mp.minipod("run", "-d", mp.write("web.yaml", spec))
    info = mp.inspect("web")
    pids = [c["pid"] for c in info["containers"]]
    assert ns_inode(pids[0], "pid") == ns_inode(pids[1], "pid") == \
        ns_inode(info["sandbox"]["pid"], "pid")
    ps = mp.minipod("exec", "web", "-c", "shell", "--", "ps", "-o", "pid,args").stdout
    lines = [ln.split(None, 1) for ln in ps.splitlines()[1:]]
    assert lines[0][0] == "1" and "pause" in lines[0][1]  # pause is PID 1 of the pod
    assert any("httpd" in ln[1] for ln in lines)


def test_empty_dir_shared(mp):
    spec = """
apiVersion: v1
kind: Pod
metadata: {name: share}
spec:
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: writer
    image: busybox
    command: ["sh", "-c", "echo written > /out/f; exec sleep 3600"]
    volumeMounts: [{name: data, mountPath: /out}]
  - name: reader
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts: [{name: data, mountPath: /in, readOnly: true}]
"""
    mp.minipod("run", "-d", mp.write("share.yaml", spec))
    got = mp.wait(lambda: mp.minipod("exec", "share", "-c", "reader", "--", "cat", "/in/f",
                                     check=False).stdout, what="the shared file")
    assert got == "written\n"
    p = mp.minipod("exec", "share", "-c", "reader", "--", "touch", "/in/g", check=False)
    assert p.returncode != 0 and "Read-only" in p.stderr


def test_exec_tty(mp):
    import pty

    mp.minipod("run", "-d", mp.write("web.yaml", WEB))
    import sys

    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "minipod", "exec", "-it", "web",
                                   "-c", "shell", "--", "tty"], mp.env)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert out.strip().startswith(b"/dev/pts/"), out


def _try(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return None


def _restarted(mp, name, old_pid):
    info = mp.inspect(name)
    c = next(c for c in info["containers"] if c["name"] == name)
    if c["pid"] and c["pid"] != old_pid and c["state"] == "running":
        return {"pid": c["pid"], "restartCount": c["restartCount"]}
    return None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def test_python_pause_fallback(mp):
    """Without a C pause (no compiler), the sandbox runs the Python pause; inspect says so."""
    mp.write_config(pause="python")
    spec = WEB.replace("spec:\n", "spec:\n  shareProcessNamespace: true\n", 1)
    mp.minipod("run", "-d", mp.write("web.yaml", spec))
    info = mp.inspect("web")
    assert info["sandbox"]["pause"]["kind"] == "python"
    ps = mp.minipod("exec", "web", "-c", "shell", "--", "ps", "-o", "pid,args").stdout
    first = ps.splitlines()[1].split(None, 1)
    assert first[0] == "1" and "pause_fallback.py" in first[1]
    ip = mp.pod("web")["status"]["podIP"]
    assert mp.wait(lambda: _try(lambda: http_get(f"http://{ip}/")), what="httpd")


def test_python_janitor_fallback(mp):
    """Without a C janitor (no compiler) the pod lives as with one: the supervisor still adopts
    and restarts a killed container, and `rm -f` takes the pod down at once, leaving nothing."""
    mp.write_config(janitor="python")
    mp.minipod("run", "-d", mp.write("web.yaml", WEB))
    info = mp.inspect("web")
    assert info["supervisor"]["janitorKind"] == "python"
    web = next(c["pid"] for c in info["containers"] if c["name"] == "web")
    os.kill(web, signal.SIGKILL)
    assert mp.wait(lambda: _restarted(mp, "web", web), what="the restart")["restartCount"] == 1
    mp.minipod("rm", "-f", "web", timeout=20)  # the grace period is 0: no waiting on anything
    assert mp.minipod("ps").stdout == ""


def test_subnet_overlapping_a_host_route_is_refused(mp):
    import subprocess

    routes = subprocess.run(["ip", "-4", "-o", "route", "show", "scope", "link"],
                            capture_output=True, text=True).stdout.split()
    if not routes:
        pytest.skip("no link-scope route on this host to collide with")
    mp.write_config(subnet=routes[0])
    p = mp.minipod("run", "-d", mp.write("web.yaml", WEB), check=False)
    assert p.returncode == 1 and "overlaps" in p.stderr and routes[0] in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1


def test_resolv_conf_and_hostname_files(mp):
    mp.minipod("run", "-d", mp.write("web.yaml", WEB))
    resolv = mp.minipod("exec", "web", "--", "cat", "/etc/resolv.conf").stdout
    with open("/etc/resolv.conf") as f:
        host_servers = [ln.split()[1] for ln in f if ln.startswith("nameserver")]
    if host_servers and "127.0.0.53" not in host_servers:
        assert [ln.split()[1] for ln in resolv.splitlines()
                if ln.startswith("nameserver")] == host_servers[:3]
    assert mp.minipod("exec", "web", "--", "cat", "/etc/hostname").stdout == "web\n"


def test_logs_follow_until_the_container_ends(mp):
    spec = """
apiVersion: v1
kind: Pod
metadata: {name: counter}
spec:
  restartPolicy: Never
  containers:
  - name: count
    image: busybox
    command: ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done"]
"""
    mp.minipod("run", "-d", mp.write("c.yaml", spec))
    out = mp.minipod("logs", "-f", "counter", timeout=30).stdout
    assert out == "1\n2\n3\n"
    assert mp.minipod("logs", "counter", "--timestamps").stdout.splitlines()[0].endswith("Z 1")


def test_multi_document_manifest_runs_every_pod(mp):
    two = WEB + "---\n" + WEB.replace("name: web\nspec", "name: web2\nspec")
    out = mp.minipod("run", "-d", mp.write("two.yaml", two)).stdout
    assert out.split() == ["web", "web2"]
    ips = {mp.pod(n)["status"]["podIP"] for n in ("web", "web2")}
    assert len(ips) == 2
    # Removing one pod leaves the other -- and the slice and bridge they share -- alone.
    mp.minipod("rm", "-f", "web")
    ip2 = mp.pod("web2")["status"]["podIP"]
    assert mp.wait(lambda: _try(lambda: http_get(f"http://{ip2}/")), what="web2 still serving")
    assert os.path.isdir(f"/sys/class/net/{mp.bridge}")


@pytest.mark.systemd
@pytest.mark.skipif(not os.path.isdir("/run/systemd/system"), reason="PID 1 is not systemd")
def test_systemd_units_show_the_pod(mp):
    """With the systemd driver the pod is a real slice, its pause and containers real scopes."""
    import subprocess

    mp.minipod("run", "-d", mp.write("web.yaml", WEB))
    assert mp.inspect("web")["cgroups"]["driver"] == "systemd"
    slice_ = mp.cgroup_parent.removesuffix(".slice") + "-web.slice"
    out = subprocess.run(["systemctl", "status", "--no-pager", "-l", slice_],
                         capture_output=True, text=True).stdout
    assert "pause" in out and "httpd" in out and "sleep 3600" in out, out
    mp.minipod("rm", "-f", "web")
    units = subprocess.run(["systemctl", "list-units", "--all", "--no-legend", "--plain",
                            f"{mp.cgroup_parent.removesuffix('.slice')}*"],
                           capture_output=True, text=True).stdout
    assert units.strip() == "", units


def test_quick_start_demo(mp):
    """The README's first command ends in scripts/demo.sh: it must work as written."""
    import subprocess
    import sys

    from conftest import REPO

    env = dict(mp.env, PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
    p = subprocess.run([os.path.join(REPO, "scripts", "demo.sh")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("hello from web") == 2 and "\nweb\n" in p.stdout
    assert mp.minipod("ps").stdout == ""


def test_dry_run_prints_the_plan_and_creates_nothing(mp):
    import json

    out = mp.minipod("run", "--dry-run", mp.write("web.yaml", WEB)).stdout
    [plan] = json.loads(out)
    assert plan["name"] == "web" and [c["name"] for c in plan["containers"]] == ["web", "shell"]
    assert plan["containers"][0]["limits"]["memory_max"] == 64 << 20
    assert mp.minipod("ps").stdout == ""
    assert not os.path.isdir(os.path.join(mp.root, "pods", "web"))
