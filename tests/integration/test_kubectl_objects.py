"""ConfigMaps and Secrets through `minipod serve`, made by the real kubectls (1.35 sends them
as protobuf, 1.20 as JSON), read by a pod that kubectl applies: what a student would type."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest
from kubeserve import Served, kubectl120, kubectl135, served  # noqa: F401 - fixtures

from minipod.objectstore import fs_type

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.slow]

POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo greeting=$(cat /etc/cfg/greeting) password=$PASSWORD; sleep 3600"]
    env:
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: {secret}, key: password}}}}
    envFrom:
    - configMapRef: {{name: {cm}}}
      prefix: CFG_
    volumeMounts:
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: sec, mountPath: /etc/sec}}
  volumes:
  - name: cfg
    configMap: {{name: {cm}}}
  - name: sec
    secret: {{secretName: {secret}}}
"""


def _store_dirs(mp) -> list[str]:
    out = []
    for top in (os.path.join(mp.root, "objects"), os.path.join(mp.data, "objects")):
        out += sorted(p for p, _, _ in os.walk(top))
    return out


def test_configmap_and_secret_feed_a_pod(served, mp):
    sfx = mp.bridge[-6:]
    cm, secret, pod = f"web-cfg-{sfx}", f"web-sec-{sfx}", f"web-{sfx}"
    before = _store_dirs(mp)
    conf = mp.write("app.conf", "listen 8080\n")
    # kubectl 1.35 sends these two as application/vnd.kubernetes.protobuf.
    assert served.k("create", "configmap", cm, "--from-literal=greeting=hello",
                    f"--from-file={conf}").stdout.strip() == f"configmap/{cm} created"
    assert served.k("create", "secret", "generic", secret,
                    "--from-literal=password=s3cret").stdout.strip() == f"secret/{secret} created"
    rows = served.k("get", "configmaps").stdout.splitlines()
    assert rows[0].split() == ["NAME", "DATA", "AGE"]
    assert rows[1].split()[:2] == [cm, "2"]
    rows = served.k("get", "secrets").stdout.splitlines()
    assert rows[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert rows[1].split()[:3] == [secret, "Opaque", "1"]
    got = json.loads(served.k("get", "secret", secret, "-o", "json").stdout)
    assert got["data"] == {"password": base64.b64encode(b"s3cret").decode()}
    assert "stringData" not in got and got["type"] == "Opaque"
    assert "listen 8080" in served.k("get", "cm", cm, "-o", "yaml").stdout
    assert re.search(r"^password:\s+6 bytes$", served.k("describe", "secret", secret).stdout,
                     re.M)

    # The secret never reaches the disk: a 0600 file on a tmpfs.
    path = os.path.join(mp.root, "objects", "secrets", "default", secret + ".json")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert fs_type(path)[1] == "tmpfs"
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700

    # minipod's own CLI finds them in the store too (after the file and --configmap).
    podfile = mp.write("pod.yaml", POD.format(name=pod, cm=cm, secret=secret))
    assert "valid (1 pod" in mp.minipod("validate", podfile).stdout

    assert served.k("apply", "-f", podfile).stdout.strip() == f"pod/{pod} created"
    served.k("wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=60s", timeout=90)
    mp.wait(lambda: "greeting" in served.k("logs", pod).stdout, 20, "the pod's first line")
    assert served.k("logs", pod).stdout.splitlines()[0] == "greeting=hello password=s3cret"
    assert served.k("exec", pod, "--", "cat", "/etc/cfg/app.conf").stdout == "listen 8080\n"
    assert served.k("exec", pod, "--", "cat", "/etc/sec/password").stdout == "s3cret"
    env = served.k("exec", pod, "--", "env").stdout.splitlines()
    assert "CFG_greeting=hello" in env and "PASSWORD=s3cret" in env

    served.k("delete", "pod", pod, "--grace-period=1", timeout=90)
    assert served.k("delete", "configmap", cm).stdout.strip() == \
        f'configmap "{cm}" deleted from default namespace'
    served.k("delete", "secret", secret)
    gone = served.k("get", "secret", secret, check=False)
    assert gone.returncode == 1 and f'secrets "{secret}" not found' in gone.stderr
    assert served.k("get", "configmaps", "-o", "name").stdout == ""
    assert _store_dirs(mp) == before  # and the secrets' tmpfs is gone (the mp fixture checks)


CM = """\
apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}, namespace: {ns}}}
{extra}data:
  mode: {mode}
"""


def test_apply_patch_immutable_and_namespaces(served, mp):
    sfx = mp.bridge[-6:]
    name, ns = f"cfg-{sfx}", f"team-{sfx}"
    before = _store_dirs(mp)
    path = mp.write("cm.yaml", CM.format(name=name, ns=ns, extra="", mode="fast"))
    assert served.k("apply", "-f", path).stdout.strip() == f"configmap/{name} created"
    assert served.k("apply", "-f", path).stdout.strip() == f"configmap/{name} unchanged"
    mp.write("cm.yaml", CM.format(name=name, ns=ns, extra="", mode="slow"))
    assert served.k("apply", "-f", path).stdout.strip() == f"configmap/{name} configured"
    got = json.loads(served.k("get", "cm", name, "-n", ns, "-o", "json").stdout)
    assert got["data"] == {"mode": "slow"} and got["metadata"]["namespace"] == ns
    assert served.k("get", "cm", "-A", "-o", "name").stdout.split() == [f"configmap/{name}"]
    assert served.k("get", "cm").stdout == ""  # not in default
    # JSON patch and merge patch, as `kubectl patch` sends them.
    served.k("patch", "cm", name, "-n", ns, "--type=json",
             "-p", '[{"op": "add", "path": "/data/extra", "value": "1"}]')
    served.k("patch", "cm", name, "-n", ns, "--type=merge", "-p", '{"data": {"mode": null}}')
    got = json.loads(served.k("get", "cm", name, "-n", ns, "-o", "json").stdout)
    assert got["data"] == {"extra": "1"}
    # replace (PUT) and server-side apply; the namespace is listed while it holds objects.
    served.k("replace", "-f", mp.write("r.json", json.dumps(dict(got, data={"r": "2"}))))
    assert served.k("apply", "--server-side", "-f", path).stdout.strip() == \
        f"configmap/{name} serverside-applied"
    got = json.loads(served.k("get", "cm", name, "-n", ns, "-o", "json").stdout)
    assert got["data"] == {"r": "2", "mode": "slow"}
    assert ns in served.k("get", "namespaces", "-o", "name").stdout
    # A typo is the server's strict decoding error (kubectl 1.35 leaves validation to it).
    bad = mp.write("bad.yaml", CM.format(name=name, ns=ns, extra="", mode="x")
                   .replace("\ndata:", "\ndatta:"))
    p = served.k("apply", "-f", bad, check=False)
    assert p.returncode == 1 and 'strict decoding error: unknown field "datta"' in p.stderr

    frozen = mp.write("frozen.yaml", CM.format(name=f"frozen-{sfx}", ns=ns,
                                               extra="immutable: true\n", mode="a"))
    served.k("apply", "-f", frozen)
    mp.write("frozen.yaml", CM.format(name=f"frozen-{sfx}", ns=ns, extra="immutable: true\n",
                                      mode="b"))
    p = served.k("apply", "-f", frozen, check=False)
    assert p.returncode == 1 and f'The ConfigMap "frozen-{sfx}" is invalid: data: Forbidden: ' \
        "field is immutable when `immutable` is set" in p.stderr, p.stderr
    # stringData is merged into data, and never shown.
    sec = mp.write("sec.yaml", f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s-{sfx}}}\n"
                               "data: {a: YQ==}\nstringData: {b: bee}\n")
    served.k("apply", "-f", sec)
    got = json.loads(served.k("get", "secret", f"s-{sfx}", "-o", "json").stdout)
    assert got["data"] == {"a": "YQ==", "b": "YmVl"} and "stringData" not in got

    served.k("delete", "-f", path)
    served.k("delete", "cm", f"frozen-{sfx}", "-n", ns)
    served.k("delete", "-f", sec)
    assert _store_dirs(mp) == before


def test_kubectl_120_objects_and_client_validation(mp, kubectl120):
    """kubectl 1.20 creates them as JSON, and validates `apply -f` itself against the
    OpenAPI v2 document (gnostic protobuf): a typo is its own error, before any request."""
    served = Served(mp, kubectl120)
    try:
        sfx = mp.bridge[-6:]
        before = _store_dirs(mp)
        served.k("create", "configmap", f"old-{sfx}", "--from-literal=k=v")
        served.k("create", "secret", "generic", f"old-{sfx}", "--from-literal=k=v")
        rows = served.k("get", "secrets").stdout.splitlines()
        assert rows[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
        assert rows[1].split()[:3] == [f"old-{sfx}", "Opaque", "1"]
        bad = mp.write("bad.yaml", CM.format(name=f"b-{sfx}", ns="default", extra="",
                                             mode="x").replace("\ndata:", "\ndatta:"))
        p = served.k("apply", "-f", bad, check=False)
        assert p.returncode == 1 and p.stderr == (
            f'error: error validating "{bad}": error validating data: ValidationError(ConfigMap)'
            ': unknown field "datta" in io.k8s.api.core.v1.ConfigMap; if you choose to ignore '
            "these errors, turn validation off with --validate=false\n")
        good = mp.write("good.yaml", CM.format(name=f"g-{sfx}", ns="default", extra="",
                                               mode="x"))
        assert served.k("apply", "-f", good).stdout.strip() == f"configmap/g-{sfx} created"
        served.k("delete", "-f", good)
        served.k("delete", "configmap", f"old-{sfx}")
        served.k("delete", "secret", f"old-{sfx}")
        assert _store_dirs(mp) == before
    finally:
        served.stop()
