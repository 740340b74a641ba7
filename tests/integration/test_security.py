"""securityContext in a real pod, observed from inside as a user would: `id`, `ls -ln`, the
Seccomp: line of /proc/PID/status, a syscall the default profile denies, /proc/sys values, and
the kubelet's CreateContainerConfigError for runAsNonRoot."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = [pytest.mark.root, pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def pod(name: str, pod_sc: str = "", ctr_sc: str = "", extra: str = "",
        command: str = '["sleep", "3600"]') -> str:
    """A one-container busybox pod; `pod_sc`/`ctr_sc` are flow-style securityContext bodies."""
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n"
            + (f"  securityContext: {{{pod_sc}}}\n" if pod_sc else "")
            + f"  containers:\n  - name: app\n    image: busybox\n    command: {command}\n"
            + (f"    securityContext: {{{ctr_sc}}}\n" if ctr_sc else "") + extra)


def run(mp, name: str, text: str):
    mp.minipod("run", "-d", mp.write(f"{name}.yaml", text))


def ex(mp, name: str, *cmd: str, check: bool = True):
    return mp.minipod("exec", name, "--", *cmd, check=check)


def app_pid(mp, name: str) -> int:
    info = mp.inspect(name)
    return next(c["pid"] for c in info["containers"] if c["name"] == "app")


# --- runAsNonRoot ------------------------------------------------------------------------------

@pytest.mark.parametrize("pod_sc, ctr_sc, want", [
    ("runAsNonRoot: true", "", "container has runAsNonRoot and image will run as root"),
    ("runAsNonRoot: true", "runAsUser: 0", "container's runAsUser breaks non-root policy"),
    ("runAsNonRoot: false", "runAsNonRoot: true", "image will run as root"),  # container wins
])
def test_run_as_non_root_refused(mp, pod_sc, ctr_sc, want):
    run(mp, "nonroot", pod(f"nonroot", pod_sc, ctr_sc))

    def waiting():
        st = mp.pod("nonroot")["status"].get("containerStatuses") or [{}]
        w = (st[0].get("state") or {}).get("waiting") or {}
        return w if w.get("reason") == "CreateContainerConfigError" else None

    try:
        w = mp.wait(waiting, what="CreateContainerConfigError")
    except AssertionError:
        raise AssertionError(json.dumps(mp.pod("nonroot")["status"])
                             + mp.minipod("events", "nonroot").stdout) from None
    assert want in w["message"] and "container: app" in w["message"], w
    desc = mp.minipod("describe", "pod", "nonroot").stdout
    assert "CreateContainerConfigError" in desc and want in desc, desc
    assert not any(c.get("pid") for c in mp.inspect("nonroot")["containers"])


def test_run_as_non_root_with_a_user_starts(mp):
    run(mp, "nonroot", pod("nonroot", "runAsNonRoot: true, runAsUser: 1000"))
    assert ex(mp, "nonroot", "id", "-u").stdout == "1000\n"


def named_user_image(mp) -> str:
    """busybox with `USER nobody`, in a store of this test's own (the session's is shared)."""
    from minipod.images import busybox
    from minipod.images.store import ImageStore

    store = ImageStore(os.path.join(mp.base, "images"))
    img = busybox.provision(store)
    manifest = store.read_json(img.digest)
    config = store.read_json(manifest["config"]["digest"])
    config["config"]["User"] = "nobody"
    digest, size = store.put_json(config)
    manifest["config"] = {**manifest["config"], "digest": digest, "size": size}
    ref = "localhost/busybox-nobody:1"
    store.tag(ref, store.put_json(manifest)[0])
    mp.write_config(image_root=store.root)
    return ref


def test_run_as_non_root_non_numeric_image_user(mp):
    """An image whose USER is a name: the kubelet cannot verify it (it does not read the
    image's /etc/passwd), and says so."""
    ref = named_user_image(mp)
    text = pod("named", "runAsNonRoot: true").replace("image: busybox", f"image: {ref}\n"
                                                      "    imagePullPolicy: Never")
    run(mp, "named", text)

    def waiting():
        st = mp.pod("named")["status"].get("containerStatuses") or [{}]
        return ((st[0].get("state") or {}).get("waiting") or {}).get("message")

    msg = mp.wait(waiting, what="the waiting message")
    assert msg.startswith("container has runAsNonRoot and image has non-numeric user (nobody),"
                          " cannot verify user is non-root (pod: \"named_default("), msg
    mp.minipod("rm", "-f", "named")
    # With a numeric runAsUser the kubelet needs no image user: it starts.
    run(mp, "named", text.replace("runAsNonRoot: true", "runAsNonRoot: true, runAsUser: 65534"))
    assert ex(mp, "named", "id", "-u").stdout == "65534\n"


# --- groups ------------------------------------------------------------------------------------

def test_supplemental_groups_and_fs_group(mp):
    text = pod("groups", "runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000,"
               " supplementalGroups: [4000, 5000]",
               extra="    volumeMounts: [{name: data, mountPath: /data}]\n"
                     "  volumes: [{name: data, emptyDir: {}}]\n")
    run(mp, "groups", text)
    ids = ex(mp, "groups", "id").stdout.split()
    assert ids[0] == "uid=1000" and ids[1] == "gid=3000", ids
    groups = {int(g.split("(")[0]) for g in ids[2].removeprefix("groups=").split(",")}
    assert {3000, 2000, 4000, 5000} <= groups, ids
    # The emptyDir belongs to group fsGroup, group-writable, setgid: a file made by the user
    # inherits the group.
    ls = ex(mp, "groups", "ls", "-lnd", "/data").stdout.split()
    assert ls[3] == "2000" and ls[0][4:7] == "rws", ls
    ex(mp, "groups", "touch", "/data/f")
    ls = ex(mp, "groups", "ls", "-ln", "/data/f").stdout.split()
    assert ls[2] == "1000" and ls[3] == "2000", ls
    status = open(f"/proc/{app_pid(mp, 'groups')}/status").read()
    line = next(x for x in status.splitlines() if x.startswith("Groups:"))
    assert {2000, 3000, 4000, 5000} <= {int(g) for g in line.split()[1:]}, line


def test_image_group_membership(mp):
    """As containerd does, the user's memberships in the image's /etc/group are added: busybox's
    image lists nobody in no group but 'root' is in groups of its own."""
    run(mp, "member", pod("member", "runAsUser: 0"))
    etc_group = ex(mp, "member", "cat", "/etc/group").stdout
    want = {int(f[2]) for f in (ln.split(":") for ln in etc_group.splitlines())
            if len(f) >= 4 and f[0] != "root" and "root" in f[3].split(",")}
    got = {int(g) for g in open(f"/proc/{app_pid(mp, 'member')}/status").read()
           .split("Groups:")[1].splitlines()[0].split()}
    assert want <= got, (want, got)


# --- seccomp -----------------------------------------------------------------------------------

UNSHARE = '["sh", "-c", "unshare -U true 2>/dev/null && echo allowed || echo denied; sleep 3600"]'


@pytest.mark.parametrize("where", ["pod", "container"])
def test_seccomp_runtime_default(mp, where):
    sc = "seccompProfile: {type: RuntimeDefault}"
    run(mp, "sec", pod("sec", sc if where == "pod" else "", sc if where == "container" else "",
                       command=UNSHARE))
    pid = app_pid(mp, "sec")
    status = open(f"/proc/{pid}/status").read()
    assert "Seccomp:\t2" in status, status
    # unshare(CLONE_NEWUSER) needs no capability, but the default profile allows unshare only
    # with CAP_SYS_ADMIN: EPERM from the filter.
    got = mp.wait(lambda: mp.minipod("logs", "sec", "-c", "app").stdout, what="output")
    assert got.strip() == "denied", got
    p = ex(mp, "sec", "unshare", "-U", "true", check=False)
    assert p.returncode != 0 and "Operation not permitted" in p.stderr, p
    p = ex(mp, "sec", "grep", "Seccomp:", "/proc/self/status")  # exec gets the filter too
    assert p.stdout.split() == ["Seccomp:", "2"], p.stdout


def test_seccomp_unconfined_by_default_and_container_wins(mp):
    run(mp, "open", pod("open", "seccompProfile: {type: RuntimeDefault}",
                        "seccompProfile: {type: Unconfined}", command=UNSHARE))
    assert "Seccomp:\t0" in open(f"/proc/{app_pid(mp, 'open')}/status").read()
    got = mp.wait(lambda: mp.minipod("logs", "open", "-c", "app").stdout, what="output")
    assert got.strip() == "allowed", got
    mp.minipod("rm", "-f", "open")
    run(mp, "plain", pod("plain"))  # no seccompProfile: Unconfined, as in Kubernetes
    assert "Seccomp:\t0" in open(f"/proc/{app_pid(mp, 'plain')}/status").read()


def test_seccomp_with_no_new_privs_and_privileged(mp):
    run(mp, "nnp", pod("nnp", "seccompProfile: {type: RuntimeDefault}",
                       "allowPrivilegeEscalation: false, runAsUser: 1000"))
    status = open(f"/proc/{app_pid(mp, 'nnp')}/status").read()
    assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status, status
    mp.minipod("rm", "-f", "nnp")
    run(mp, "priv", pod("priv", "seccompProfile: {type: RuntimeDefault}", "privileged: true"))
    assert "Seccomp:\t0" in open(f"/proc/{app_pid(mp, 'priv')}/status").read()


def test_seccomp_localhost(mp):
    root = os.path.join(mp.data, "seccomp", "profiles")
    os.makedirs(root)
    with open(os.path.join(root, "no-mkdir.json"), "w") as f:
        json.dump({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}, f)
    run(mp, "local", pod("local", "", "seccompProfile: {type: Localhost,"
                                      " localhostProfile: profiles/no-mkdir.json}"))
    assert "Seccomp:\t2" in open(f"/proc/{app_pid(mp, 'local')}/status").read()
    p = ex(mp, "local", "mkdir", "/tmp/x", check=False)
    assert p.returncode != 0 and "Permission denied" in p.stderr, p
    assert ex(mp, "local", "touch", "/tmp/y").returncode == 0


def test_seccomp_localhost_missing_file(mp):
    p = mp.minipod("run", "-d", mp.write("m.yaml", pod(
        "missing", "", "seccompProfile: {type: Localhost, localhostProfile: nope.json}")),
        check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert "spec.containers[0].securityContext.seccompProfile.localhostProfile" in p.stderr
    assert "No such file" in p.stderr and "Traceback" not in p.stderr
    assert mp.minipod("ps").stdout == ""


# --- sysctls -----------------------------------------------------------------------------------

def test_safe_sysctls_in_the_pod_only(mp):
    host = {n: open(f"/proc/sys/{n.replace('.', '/')}").read()
            for n in ("net.ipv4.ip_local_port_range", "kernel.shm_rmid_forced",
                      "net.ipv4.tcp_keepalive_time")}
    run(mp, "sysctl", pod("sysctl", "sysctls: [{name: net.ipv4.ip_local_port_range,"
                          " value: '40000 50000'}, {name: kernel.shm_rmid_forced, value: '1'},"
                          " {name: net/ipv4/tcp_keepalive_time, value: '600'}]"))
    assert ex(mp, "sysctl", "cat", "/proc/sys/net/ipv4/ip_local_port_range").stdout.split() \
        == ["40000", "50000"]
    assert ex(mp, "sysctl", "cat", "/proc/sys/kernel/shm_rmid_forced").stdout == "1\n"
    assert ex(mp, "sysctl", "cat", "/proc/sys/net/ipv4/tcp_keepalive_time").stdout == "600\n"
    for n, v in host.items():  # the host's namespaces are untouched
        assert open(f"/proc/sys/{n.replace('.', '/')}").read() == v, n


def test_unsafe_sysctl_refused(mp):
    p = mp.minipod("run", "-d", mp.write("u.yaml", pod(
        "unsafe", "sysctls: [{name: net.core.somaxconn, value: '1024'}]")), check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert 'spec.securityContext.sysctls[0].name: forbidden sysctl: "net.core.somaxconn" not' \
        ' allowlisted' in p.stderr, p.stderr
    assert mp.minipod("ps").stdout == ""


# --- procMount ---------------------------------------------------------------------------------

def test_proc_mount(mp):
    p = mp.minipod("validate", mp.write("u.yaml", pod("um", "", "procMount: Unmasked")),
                   check=False)
    assert p.returncode == 1 and "`hostUsers` must be false to use `Unmasked`" in p.stderr
    run(mp, "pm", pod("pm", "", "procMount: Default"))
    # Default: the masked paths stay masked (/proc/timer_list is /dev/null's bind: empty), and
    # /proc/sys is read-only.
    assert os.path.getsize("/proc/timer_list") == 0 and open("/proc/timer_list").read(1)
    assert ex(mp, "pm", "cat", "/proc/timer_list").stdout == ""
    p = ex(mp, "pm", "sh", "-c", "echo 1 > /proc/sys/kernel/shm_rmid_forced", check=False)
    assert p.returncode != 0 and "Read-only file system" in p.stderr, p
