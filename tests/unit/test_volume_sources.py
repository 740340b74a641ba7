"""ConfigMap/Secret/PVC documents, the volume and env sources that read them, and the files and
env values the kubelet would make of them (no host access)."""

from __future__ import annotations

import base64
import os

import pytest

from minipod.errors import SpecError
from minipod.pod.volumes import build, content, env
from minipod.pod.volumes import hostpath
from minipod.spec.spec import loads

CM = """apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a.txt: "A", b: "B"}
binaryData: {bin: AAE=}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
data: {pw: cHc=, user: b2xk}
stringData: {user: new}
---
"""

POD = """apiVersion: v1
kind: Pod
metadata: {name: p, labels: {b: "2", a: "1"}}
spec:
  containers:
  - name: c
    image: busybox
    resources: {limits: {cpu: 250m, memory: 64Mi}}
    env: ENV
    envFrom: ENVFROM
    volumeMounts: MOUNTS
  volumes: VOLUMES
"""


def pod(volumes="[]", env_="[]", env_from="[]", mounts="[]", objects=CM):
    return objects + POD.replace("VOLUMES", volumes).replace("ENVFROM", env_from) \
        .replace("ENV", env_).replace("MOUNTS", mounts)


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        loads(text, "p.yaml")
    return e.value.problems


def test_documents_are_decoded():
    res = loads(pod())
    assert res.objects.get("ConfigMap", "default", "cfg").data == {
        "a.txt": b"A", "b": b"B", "bin": b"\0\1"}
    assert res.objects.get("ConfigMap", "default", "cfg").env_data() == {"a.txt": b"A", "b": b"B"}
    # stringData wins over data for the same key.
    assert res.objects.get("Secret", "default", "sec").data == {"pw": b"pw", "user": b"new"}


@pytest.mark.parametrize("doc,want", [
    ("kind: ConfigMap\napiVersion: v1\nmetadata: {name: c}\ndata: {a/b: x}\n",
     "ConfigMap data.a/b: invalid key 'a/b'"),
    ("kind: Secret\napiVersion: v1\nmetadata: {name: s}\ndata: {k: '%%%'}\n",
     "Secret data.k: not valid base64"),
    ("kind: ConfigMap\napiVersion: v1\nmetadata: {name: c}\ndata: {k: 1}\n",
     "ConfigMap data.k: expected a string (got 1): put it in quotes"),
    ("kind: ConfigMap\napiVersion: v2\nmetadata: {name: c}\n",
     "ConfigMap apiVersion: must be v1 for kind ConfigMap (got 'v2')"),
    ("kind: ConfigMap\napiVersion: v1\nmetadata: {name: c}\ndatta: {}\n",
     "ConfigMap datta: unknown field"),
    ("kind: PersistentVolumeClaim\napiVersion: v1\nmetadata: {name: Big}\n",
     "PersistentVolumeClaim metadata.name: 'Big' is not a valid name"),
])
def test_bad_documents(doc, want):
    with pytest.raises(SpecError) as e:
        loads(doc, "o.yaml")
    assert any(p.startswith(want) for p in e.value.problems), e.value.problems


def test_missing_objects_and_keys_are_errors_unless_optional():
    got = problems(pod(volumes="[{name: v, configMap: {name: nope}}]"))
    assert got == ["doc 3: spec.volumes[0].configMap: FailedMount: volume 'v': configmap 'nope' "
                   "not found "
                   "(put a ConfigMap document in the manifest, give its file with "
                   "--configmap or create it with kubectl, or set optional: true)"]
    got = problems(pod(volumes="[{name: v, secret: {secretName: sec, items: [{key: x, "
                               "path: y}]}}]"))
    assert got == ["doc 3: spec.volumes[0].secret.items[0].key: FailedMount: volume 'v': couldn't "
                   "find key x in Secret default/sec"]
    got = problems(pod(env_="[{name: X, valueFrom: {configMapKeyRef: {name: cfg, key: bin}}}]"))
    assert "couldn't find key bin in ConfigMap default/cfg" in got[0]  # binaryData: not env
    got = problems(pod(env_from="[{secretRef: {name: gone}}]"))
    assert got[0].startswith("doc 3: spec.containers[0].envFrom[0].secretRef: "
                             "CreateContainerConfigError: secret 'gone' not found")
    loads(pod(volumes="[{name: v, configMap: {name: nope, optional: true}}]",
              env_="[{name: X, valueFrom: {secretKeyRef: {name: absent, key: k, optional: true}}}]"))


def test_given_objects_count():
    from minipod.spec.objects import Objects, Obj

    given = Objects()
    given.add(Obj("ConfigMap", "other", "default", {"k": b"v"}))
    loads(pod(volumes="[{name: v, configMap: {name: other}}]"), given=given)


@pytest.mark.parametrize("volumes,want", [
    ("[{name: v, configMap: {name: cfg, items: [{key: a.txt, path: ../x}]}}]",
     "spec.volumes[0].configMap.items[0].path: must not contain '..'"),
    ("[{name: v, configMap: {name: cfg, defaultMode: 4096}}]",
     "spec.volumes[0].configMap.defaultMode: must be a file mode between 0 and 0777"),
    ("[{name: v, hostPath: {path: rel}}]",
     "spec.volumes[0].hostPath.path: must be an absolute path"),
    ("[{name: v, hostPath: {path: /x, type: Dir}}]",
     "spec.volumes[0].hostPath.type: must be one of"),
    ("[{name: v, downwardAPI: {items: [{path: x, fieldRef: {fieldPath: status.podIP}}]}}]",
     "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath: unsupported fieldPath"),
    ("[{name: v, downwardAPI: {items: [{path: x, resourceFieldRef: {resource: limits.cpu}}]}}]",
     "spec.volumes[0].downwardAPI.items[0].resourceFieldRef.containerName: required"),
    ("[{name: v, persistentVolumeClaim: {claimName: ''}}]",
     "spec.volumes[0].persistentVolumeClaim.claimName: required"),
])
def test_bad_sources(volumes, want):
    got = problems(pod(volumes=volumes))
    assert any(want in p for p in got), got


def test_bad_env_and_mounts():
    got = problems(pod(env_="[{name: X, valueFrom: {fieldRef: {fieldPath: spec.foo}}}]"))
    assert "env[0].valueFrom.fieldRef.fieldPath: unsupported fieldPath 'spec.foo'" in got[0]
    got = problems(pod(env_from="[{prefix: 1x, configMapRef: {name: cfg}}]"))
    assert "envFrom[0].prefix: '1x' is not a valid environment variable name" in got[0]
    got = problems(pod(volumes="[{name: v}]",
                       mounts="[{name: v, mountPath: /v, subPath: a, subPathExpr: b}]"))
    assert "subPath and subPathExpr are mutually exclusive" in got[0]


def test_service_account_token_is_a_warning():
    res = loads(pod(volumes="[{name: v, projected: {sources: [{serviceAccountToken: {path: t}}, "
                            "{configMap: {name: kube-root-ca.crt}}]}}]"), "p.yaml")
    assert ("p.yaml: doc 3: spec.volumes[0].projected.sources[0].serviceAccountToken: not "
            "implemented by minipod yet, ignored") in res.warnings


def fields_of(res, uid="u-1"):
    from minipod.pod.plan import pod_fields

    return pod_fields(res.pods[0], uid, 1 << 30)


def test_files_of_each_volume_kind():
    res = loads(pod(volumes="""
  - {name: a, configMap: {name: cfg, defaultMode: 0600, items: [{key: b, path: d/b, mode: 0400},
                                                              {key: a.txt, path: a}]}}
  - {name: s, secret: {secretName: sec}}
  - name: d
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: uid, fieldRef: {fieldPath: metadata.uid}, mode: 0400}
      - {path: cpu, resourceFieldRef: {containerName: c, resource: limits.cpu}}
      - {path: mem, resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}}
      - {path: cpum, resourceFieldRef: {containerName: c, resource: requests.cpu, divisor: 1m}}
  - name: p
    projected:
      defaultMode: 0440
      sources:
      - configMap: {name: cfg}
      - secret: {name: sec, items: [{key: pw, path: a.txt}]}
"""))
    objs, f = res.objects, fields_of(res)
    vols = {v.name: v for v in res.pods[0].pod.spec.volumes}
    assert content.volume_files(vols["a"], objs, f) == [("d/b", 0o400, b"B"), ("a", 0o600, b"A")]
    assert content.volume_files(vols["s"], objs, f) == [("pw", 0o644, b"pw"),
                                                        ("user", 0o644, b"new")]
    assert content.volume_files(vols["d"], objs, f) == [
        ("labels", 0o644, b'a="1"\nb="2"'), ("uid", 0o400, b"u-1"),
        ("cpu", 0o644, b"1"),  # 250m rounded up to whole cores
        ("mem", 0o644, b"64"), ("cpum", 0o644, b"250")]
    got = {p: (m, d) for p, m, d in content.volume_files(vols["p"], objs, f)}
    assert got == {"a.txt": (0o440, b"pw"), "b": (0o440, b"B"), "bin": (0o440, b"\0\1")}


def test_env_order_expansion_and_pod_ip_mark():
    res = loads(pod(
        env_from="[{configMapRef: {name: cfg}, prefix: CM_}, {secretRef: {name: sec}}]",
        env_="""
    - {name: user, value: override}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: URL, value: "http://$(IP):80/$(CM_b)"}
    - {name: LBL, valueFrom: {fieldRef: {fieldPath: "metadata.labels['a']"}}}
    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: PW, valueFrom: {secretKeyRef: {name: sec, key: pw}}}"""))
    c = res.pods[0].pod.spec.containers[0]
    own, warnings = env.container_env(c, fields_of(res), res.objects)
    # CM_a.txt is a valid name ('.' is allowed); binaryData never reaches env.
    assert own == {"CM_a.txt": "A", "CM_b": "B", "pw": "pw", "user": "override",
                   "IP": env.POD_IP_MARK, "URL": f"http://{env.POD_IP_MARK}:80/B",
                   "LBL": "1", "MEM": "64", "PW": "pw"}
    assert warnings == []
    assert env.fill_pod_ip([f"URL={own['URL']}"], "10.0.0.9") == ["URL=http://10.0.0.9:80/B"]


def test_env_from_skips_invalid_names_with_a_warning():
    objs = CM.replace("data: {a.txt: \"A\", b: \"B\"}", "data: {1bad: x, good: y}")
    res = loads(pod(env_from="[{configMapRef: {name: cfg}}]", objects=objs))
    own, warnings = env.container_env(res.pods[0].pod.spec.containers[0], fields_of(res),
                                      res.objects)
    assert own == {"good": "y"}
    assert warnings == ["Keys [1bad] from the EnvFrom configmap default/cfg were skipped since "
                        "they are invalid environment variable names."]


def test_entries_and_mounts():
    from minipod.pod.plan import Mount

    res = loads(pod(volumes="""
  - {name: cm, configMap: {name: cfg}}
  - {name: s, secret: {secretName: sec}}
  - {name: m, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
  - {name: e, emptyDir: {sizeLimit: 1Gi}}
  - {name: h, hostPath: {path: /srv//x/, type: DirectoryOrCreate}}
  - {name: c, persistentVolumeClaim: {claimName: data, readOnly: true}}
""", mounts="""
    - {name: cm, mountPath: /cm}
    - {name: s, mountPath: /s, subPath: pw}
    - {name: h, mountPath: /h}
    - {name: c, mountPath: /c}
    - {name: m, mountPath: /m, subPathExpr: "$(WHO)/x"}""", env_="[{name: WHO, value: me}]"))
    ents, warnings = build.entries(res.pods[0].pod, res.objects, fields_of(res), "/D", "/R",
                                   "/ROOT")
    by = {e["name"]: e for e in ents}
    assert (by["cm"]["dir"], by["cm"]["tmpfs"], by["cm"]["readonly"]) == ("/D/volumes/cm",
                                                                          False, True)
    assert (by["s"]["dir"], by["s"]["tmpfs"]) == ("/R/volumes/s", True)
    assert base64.b64decode(by["s"]["files"][0][2]) == b"pw"
    assert (by["m"]["tmpfs"], by["m"]["size"]) == (True, 1 << 20)
    assert by["h"]["dir"] == "/srv/x" and by["h"]["type"] == "DirectoryOrCreate"
    assert (by["c"]["dir"], by["c"]["readonly"]) == ("/ROOT/volumes/data/_data", True)
    assert warnings == ["spec.volumes[3].emptyDir.sizeLimit: not enforced for a disk-backed "
                        "emptyDir (minipod does not measure and evict); use medium: Memory for a "
                        "hard limit"]
    c = res.pods[0].pod.spec.containers[0]
    ms = build.mounts(c, by, {"WHO": "me"}, Mount, "p.yaml")
    assert [(m.source, m.target, m.readonly, m.kind, m.source_root) for m in ms] == [
        ("/D/volumes/cm", "/cm", True, "bind", "/D/volumes/cm"),
        ("/R/volumes/s/pw", "/s", True, "bind", "/R/volumes/s"),
        ("/srv/x", "/h", False, "host", ""),
        ("/ROOT/volumes/data/_data", "/c", True, "bind", "/ROOT/volumes/data/_data"),
        ("/R/volumes/m/me/x", "/m", False, "bind", "/R/volumes/m"),
    ]
    with pytest.raises(SpecError, match=r"subPathExpr: expands to '\.\./x'"):
        build.mounts(c, by, {"WHO": ".."}, Mount, "p.yaml")


def test_host_path_checks(tmp_path):
    d, f = str(tmp_path / "d"), str(tmp_path / "f")
    os.mkdir(d)
    open(f, "w").close()
    assert hostpath.problem(d, "Directory") is None
    assert hostpath.problem(f, "File") is None
    assert hostpath.problem("/dev/null", "CharDevice") is None
    assert hostpath.problem(f, "Directory") == f"hostPath type check failed: {f} is not a directory"
    assert hostpath.problem(d + "/no/file", "FileOrCreate") == (
        f"hostPath type check failed: {d}/no/file: its directory {d}/no does not exist")
    assert hostpath.problem(d + "/new", "DirectoryOrCreate") is None
    assert hostpath.problem(d + "/new", "Socket").endswith("is not a socket file (it does not "
                                                           "exist)")
    hostpath.prepare(d + "/new/deeper", "DirectoryOrCreate")
    hostpath.prepare(d + "/file", "FileOrCreate")
    assert os.path.isdir(d + "/new/deeper") and os.path.isfile(d + "/file")


def test_atomic_writer_layout(tmp_path):
    from minipod.pod.volumes import atomic

    atomic.write(str(tmp_path), [("a", 0o600, b"x"), ("d/b", 0o444, b"y")])
    names = sorted(os.listdir(tmp_path))
    assert names[0].startswith("..20") and names[1:] == ["..data", "a", "d"]
    assert os.readlink(tmp_path / "..data") == names[0]
    assert os.readlink(tmp_path / "a") == "..data/a"
    assert os.readlink(tmp_path / "d") == "..data/d"
    assert (tmp_path / "d" / "b").read_bytes() == b"y"
    assert oct(os.stat(tmp_path / "d" / "b").st_mode & 0o777) == "0o444"
    assert oct(os.stat(tmp_path / "a").st_mode & 0o777) == "0o600"


def test_statefulset_claim_templates_become_claims():
    text = """apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: c
        image: busybox
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""
    [lp] = loads(text, "s.yaml").pods
    [v] = lp.pod.spec.volumes
    assert v.name == "data" and v.persistent_volume_claim.claim_name == "data-db-0"
