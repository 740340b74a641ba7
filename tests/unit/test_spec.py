import io
import json
import pathlib
import typing

import pytest
from pydantic import BaseModel

from minipod.errors import SpecError
from minipod.spec import spec
from minipod.spec.kube_fields import FIELDS, NOT_IMPLEMENTED, SERVER_POPULATED
from minipod.spec.spec import Pod, load, loads

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures" / "manifests"
POD_FILES = sorted(p for p in FIXTURES.glob("*.yaml") if not p.name.endswith("-deployment.yaml"))
DEPLOYMENT_FILES = sorted(FIXTURES.glob("*-deployment.yaml"))

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: app
    image: nginx
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        loads(text, "pod.yaml")
    return e.value.problems


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as e:
        loads(text, "pod.yaml")
    return str(e.value)


def pod_of(doc: dict) -> Pod:
    return Pod.model_validate(doc)


def minimal(**spec_fields) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}], **spec_fields}}


# --- the seed manifests ------------------------------------------------------------------------

def test_fixtures_are_there():
    assert len(POD_FILES) >= 12 and len(DEPLOYMENT_FILES) == 2


@pytest.mark.parametrize("path", POD_FILES, ids=lambda p: p.name)
def test_fixture_validates(path):
    result = load(str(path))
    assert result.pods
    for loaded in result.pods:
        assert spec.check(loaded.pod) == []
        assert loaded.raw["kind"] == "Pod"
        assert loaded.source == str(path)


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=lambda p: p.name)
def test_deployment_runs_its_pod_template(path):
    """As podman kube play does: one pod from spec.template, named <deployment>-pod."""
    res = load(str(path))
    [loaded] = res.pods
    assert loaded.pod.metadata.name.endswith("-pod")
    assert loaded.raw["kind"] == "Pod" and loaded.raw["spec"]["containers"]
    assert any("(Deployment): running its pod template as pod" in w for w in res.warnings)


def test_problems_in_a_template_name_the_workload_paths():
    text = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n"
            "    spec:\n      containers:\n      - {name: c, imagee: busybox}\n")
    with pytest.raises(SpecError) as e:
        loads(text, "d.yaml")
    assert "spec.template.spec.containers[0].imagee: unknown field" in str(e.value)


def test_pods01_webserver():
    [loaded] = load(str(FIXTURES / "pods01.yaml")).pods
    pod = loaded.pod
    assert (pod.metadata.name, pod.metadata.namespace) == ("webserver", "default")
    [c] = pod.spec.containers
    assert (c.name, c.image, c.ports[0].container_port, c.ports[0].protocol) == (
        "webserver", "nginx:latest", 80, "TCP")
    assert pod.spec.restart_policy == "Always"
    assert pod.spec.termination_grace_period_seconds == 30
    assert c.pull_policy() == "Always"


def test_pods03_block_scalar_args_and_empty_dir():
    pod = load(str(FIXTURES / "pods03.yaml")).pods[0].pod
    second = pod.spec.containers[1]
    assert second.command == ["/bin/sh", "-c"]
    assert second.args == ["while true; do date >> /html/index.html; sleep 1; done"]
    assert pod.spec.volumes[0].name == "html" and pod.spec.volumes[0].empty_dir is not None
    assert [m.mount_path for c in pod.spec.containers for m in c.volume_mounts] == [
        "/usr/share/nginx/html", "/html"]


def test_foo_memory_limits():
    pod = load(str(FIXTURES / "foo.yaml")).pods[0].pod
    app, sidecar = pod.spec.containers
    assert app.resources.memory_limit() == 256 * 2**20
    assert app.resources.memory_request() == 256 * 2**20  # defaulted from the limit
    assert sidecar.image == "curlimages/curl:8.3.0" and sidecar.pull_policy() == "IfNotPresent"
    assert sidecar.resources.cpu_limit_milli() is None


def test_native_sidecar():
    pod = load(str(FIXTURES / "logging-sidecar-pod.yaml")).pods[0].pod
    [init] = pod.spec.init_containers
    assert init.name == "logshipper" and init.restart_policy == "Always"


def test_nsenter_host_namespaces_and_tty_are_kept():
    result = load(str(FIXTURES / "nsenter-test.yaml"))
    assert not [w for w in result.warnings if "spec.host" in w or "tty" in w or "stdin" in w]
    pod = result.pods[0].pod
    assert pod.spec.containers[0].tty is True and pod.spec.containers[0].stdin is True
    assert pod.spec.containers[0].security_context.privileged is True
    assert pod.spec.host_network and pod.spec.host_pid and pod.spec.host_ipc


def test_multi_doc_with_configmap_and_service():
    src = str(FIXTURES / "nginx-sidecar-pod.yaml")
    result = load(src)
    [loaded] = result.pods
    assert loaded.index == 1
    skipped = "skipped: minipod runs v1 Pods only"
    # The ConfigMap beside the pod is what its configMap volume reads (as podman kube play).
    assert not any("(ConfigMap)" in w for w in result.warnings)
    assert result.warnings[-1] == f"{src}: document 3 (Service): {skipped}"
    assert f"{src}: doc 2: spec.nodeSelector: ignored: there is no scheduler and one node: " \
        "minipod runs every pod on this host" in result.warnings
    assert not any("configMap" in w for w in result.warnings)
    pod = loaded.pod
    assert [v.name for v in pod.spec.volumes] == ["shared-logs", "nginx-index-cm"]
    assert pod.spec.volumes[1].config_map.name == "nginx-index"
    [cm] = result.objects.items.values()
    assert (cm.kind, cm.name) == ("ConfigMap", "nginx-index")
    assert pod.spec.containers[1].volume_mounts[0].read_only is True
    assert pod.spec.containers[0].resources.memory_request() == 50 * 2**20
    assert loaded.raw["spec"]["volumes"][1]["configMap"] == {"name": "nginx-index"}  # as written


def test_kubectl_get_output_is_accepted():
    src = str(FIXTURES / "webserver-from-cluster.yaml")
    result = load(src)
    # Server-populated fields (uid, resourceVersion, creationTimestamp, status) pass silently.
    assert not any("uid" in w or "status" in w or "creationTimestamp" in w for w in result.warnings)
    # The service account volume: its token is a warning, kube-root-ca.crt is left empty.
    tok = "spec.volumes[0].projected.sources[0].serviceAccountToken"
    assert f"{src}: {tok}: not implemented by minipod yet, ignored" in result.warnings
    pod = result.pods[0].pod
    assert [v.name for v in pod.spec.volumes] == [m.name for m in
                                                  pod.spec.containers[0].volume_mounts]
    assert pod.spec.containers[0].ports[0].protocol == "TCP"


# --- one test per error kind ---------------------------------------------------------------------

def test_misspelt_field_names_exact_path_and_suggests():
    text = POD.replace("    image: nginx", "    image: nginx\n  - name: two\n    imagee: nginx")
    problems = problems_of(text)
    assert "spec.containers[1].imagee: unknown field (did you mean 'image'?)" in problems


def test_unknown_nested_field():
    text = POD + "    securityContext:\n      priviledged: true\n"
    assert problems_of(text) == [
        "spec.containers[0].securityContext.priviledged: unknown field "
        "(did you mean 'privileged'?)"]


def test_unknown_field_without_a_close_match():
    assert problems_of(POD + "  frobnicate: 3\n") == ["spec.frobnicate: unknown field"]


def test_unknown_field_inside_a_not_implemented_field_is_still_an_error():
    text = POD + "    livenessProbe:\n      httpGet: {port: 80}\n      initialDelay: 3\n"
    assert problems_of(text) == [
        "spec.containers[0].livenessProbe.initialDelay: unknown field "
        "(did you mean 'initialDelaySeconds'?)"]


def test_keys_in_maps_are_not_fields():
    labels = "  labels: {anything: goes, app.k8s.io/x: y}\n"
    text = POD.replace("  name: web\n", "  name: web\n" + labels)
    text += "    resources:\n      limits: {memory: 1Gi, nvidia.com/gpu: 1}\n"
    pod = loads(text).pods[0].pod
    assert pod.metadata.labels == {"anything": "goes", "app.k8s.io/x": "y"}


def test_bad_quantity():
    text = POD + "  - name: two\n    image: busybox\n"
    text += "    resources:\n      limits:\n        memory: 12Q\n"
    assert error_of(text) == (
        "pod.yaml: spec.containers[1].resources.limits.memory: '12Q' is not a quantity "
        "(e.g. 128Mi, 1G)")


def test_yaml_syntax_error_has_line_and_column():
    text = POD + "     ports: []\n"  # over-indented: a mapping inside a scalar
    with pytest.raises(SpecError) as e:
        loads(text, "pod.yaml")
    assert e.value.source == "pod.yaml:9:11"
    assert str(e.value) == "pod.yaml:9:11: mapping values are not allowed in this context"


def test_yaml_tab_gets_a_hint():
    msg = error_of("apiVersion: v1\nkind: Pod\nmetadata:\n\tname: web\n")
    assert msg.startswith("pod.yaml:4:1: ")
    assert msg.endswith(": a tab (indent YAML with spaces)")


def test_unterminated_quote_points_at_its_start():
    msg = error_of('apiVersion: v1\nkind: Pod\nmetadata:\n  name: "web\n')
    assert msg.startswith("pod.yaml:5:1: found unexpected end of stream")
    assert "at 4:9" in msg


def test_duplicate_key():
    text = POD + "    image: busybox\n"
    with pytest.raises(SpecError) as e:
        loads(text, "pod.yaml")
    assert str(e.value) == "pod.yaml:9:5: duplicate key 'image' (first at line 8)"


def test_several_duplicate_keys_are_listed_together():
    text = POD.replace("kind: Pod\n", "kind: Pod\nkind: Pod\n") + "    image: busybox\n"
    problems = problems_of(text)
    assert problems == ["3:1: duplicate key 'kind' (first at line 2)",
                        "10:5: duplicate key 'image' (first at line 9)"]


def test_same_key_in_different_mappings_is_fine():
    text = POD + "  - name: two\n    image: nginx\n"
    assert len(loads(text).pods[0].pod.spec.containers) == 2


def test_yaml_merge_keys_may_override():
    text = """\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - &base {name: one, image: nginx}
  - <<: *base
    name: two
"""
    assert [c.name for c in loads(text).pods[0].pod.spec.containers] == ["one", "two"]


def test_missing_name():
    assert problems_of(POD.replace("  name: web\n", "  labels: {a: b}\n")) == [
        "metadata.name: required"]


def test_generate_name_makes_a_name():
    pod = loads(POD.replace("  name: web\n", "  generateName: web-\n")).pods[0].pod
    assert pod.metadata.name.startswith("web-") and len(pod.metadata.name) == 9


def test_bad_restart_policy():
    assert problems_of(POD + "  restartPolicy: Sometimes\n") == [
        "spec.restartPolicy: must be one of Always, OnFailure, Never (got 'Sometimes')"]


def test_mount_of_undefined_volume():
    text = POD + "    volumeMounts:\n    - name: data\n      mountPath: /data\n"
    assert problems_of(text) == [
        "spec.containers[0].volumeMounts[0].name: no volume named 'data' in spec.volumes"]


def test_port_must_be_an_integer():
    text = POD + "    ports:\n    - containerPort: http\n"
    assert problems_of(text) == [
        "spec.containers[0].ports[0].containerPort: expected an integer (got 'http')"]


def test_strings_must_be_strings():
    text = POD.replace("  name: web\n", "  name: web\n  labels: {version: 1.0}\n")
    text += "    env:\n    - name: PORT\n      value: 8080\n"
    assert problems_of(text) == [
        "metadata.labels.version: expected a string (got 1.0): put it in quotes",
        "spec.containers[0].env[0].value: expected a string (got 8080): put it in quotes"]


def test_wrong_shapes():
    text = POD + "  volumes: {name: x}\n"
    assert problems_of(text) == [
        "spec.volumes: expected a list (got a mapping): start each item with '- '"]
    assert problems_of(POD.replace("metadata:\n  name: web\n", "metadata: web\n")) == [
        "metadata: expected a mapping (got 'web')"]


def test_missing_spec_and_container_name():
    assert problems_of("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n") == ["spec: required"]
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{image: x}]}\n"
    assert problems_of(text) == ["spec.containers[0].name: required"]


def test_pod_needs_api_version_v1():
    assert problems_of(POD.replace("apiVersion: v1", "apiVersion: apps/v1")) == [
        "apiVersion: must be v1 for kind Pod (got 'apps/v1')"]
    assert problems_of(POD.replace("kind: Pod", "kind: pod")) == ["kind: must be 'Pod' (got 'pod')"]
    assert problems_of(POD.replace("kind: Pod\n", "")) == [
        "kind: required (minipod runs kind: Pod)"]


def test_multi_doc_problems_are_reported_together():
    bad_one = POD.replace("  name: web\n", "  name: Web_1\n")
    bad_two = POD + "    ports:\n    - containerPort: 0\n  restartPolicy: Sometimes\n"
    text = bad_one + "---\n" + bad_two + "---\n- just\n- a list\n"
    with pytest.raises(SpecError) as e:
        loads(text, "pods.yaml")
    problems = e.value.problems
    assert problems[0].startswith("doc 1: metadata.name: 'Web_1' is not a valid DNS-1123 subdomain")
    assert "doc 2: spec.restartPolicy: must be one of Always, OnFailure, Never (got 'Sometimes')" \
        in problems
    assert problems[-1] == "doc 3: expected a Kubernetes object (a mapping), got a list"
    assert str(e.value).startswith(f"pods.yaml: {len(problems)} problems\n  doc 1: ")


def test_semantic_problems_of_a_second_document_are_prefixed():
    text = POD + "---\n" + POD.replace("    image: nginx\n", "    image: ''\n")
    assert problems_of(text) == ["doc 2: spec.containers[0].image: required"]


def test_non_pod_kinds_are_skipped_with_a_warning_configmaps_kept():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n---\n" + POD
    text += "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
    result = loads(text, "all.yaml")
    assert [lp.pod.metadata.name for lp in result.pods] == ["web"]
    assert result.pods[0].index == 1
    assert result.warnings == [
        "all.yaml: document 3 (Service): skipped: minipod runs v1 Pods only"]
    assert result.objects.get("ConfigMap", "default", "c").data == {"a": b"b"}


def test_no_pod_at_all():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    assert error_of(text) == "pod.yaml: no v1 Pod in this file (found ConfigMap)"
    assert error_of("# nothing\n") == "pod.yaml: no v1 Pod in this file (the file is empty)"


def test_empty_documents_are_skipped_but_counted():
    # The first "---" opens document 1 (empty), the second opens document 2.
    text = "---\n---\n" + POD + "---\n" + POD.replace("name: web", "name: web2")
    result = loads(text)
    assert [lp.index for lp in result.pods] == [1, 2]


def test_two_pods_in_one_file():
    result = loads(POD + "---\n" + POD.replace("name: web", "name: api"))
    assert [lp.pod.metadata.name for lp in result.pods] == ["web", "api"]


def test_not_implemented_field_warns_with_its_path():
    text = POD + "    terminationMessagePolicy: File\n  hostNetwork: true\n"
    result = loads(text, "pod.yaml")
    assert result.warnings == ["pod.yaml: spec.containers[0].terminationMessagePolicy: "
                               "not implemented by minipod yet, ignored"]
    pod = result.pods[0].pod
    assert pod.spec.host_network is True


def test_stdin_stdin_once_and_tty_are_loaded():
    text = POD + "    stdin: true\n    stdinOnce: true\n    tty: true\n"
    result = loads(text, "pod.yaml")
    assert result.warnings == []
    c = result.pods[0].pod.spec.containers[0]
    assert (c.stdin, c.stdin_once, c.tty) == (True, True, True)
    e = pytest.raises(SpecError, loads, POD + "    stdinOnce: \"yes\"\n", "pod.yaml").value
    assert any("spec.containers[0].stdinOnce" in p for p in e.problems), e.problems


def test_not_implemented_init_container_field_warns_too():
    text = POD + "  initContainers:\n  - name: init\n    image: busybox\n    resizePolicy: []\n"
    assert loads(text, "p.yaml").warnings == [
        "p.yaml: spec.initContainers[0].resizePolicy: not implemented by minipod yet, ignored"]


def test_null_means_unset():
    text = POD.replace("  name: web\n", "  name: web\n  labels:\n") + "    command:\n"
    pod = loads(text).pods[0].pod
    assert pod.metadata.labels == {} and pod.spec.containers[0].command == []


def test_load_from_file_and_stdin(tmp_path, monkeypatch):
    path = tmp_path / "p.yaml"
    path.write_text(POD)
    assert load(str(path)).pods[0].pod.metadata.name == "web"
    monkeypatch.setattr("sys.stdin", io.StringIO(POD))
    result = load("-")
    assert result.pods[0].source == "<stdin>"
    with pytest.raises(SpecError, match="cannot read: No such file or directory"):
        load(str(tmp_path / "missing.yaml"))


# --- semantic checks -----------------------------------------------------------------------------

def test_valid_minimal_pod_has_no_problems():
    assert spec.check(pod_of(minimal())) == []


def test_name_rules():
    doc = minimal()
    doc["metadata"] = {"name": "a" * 254, "namespace": "Bad"}
    problems = spec.check(pod_of(doc))
    assert problems[0].startswith("metadata.name: 'aaaa")
    assert problems[1].startswith("metadata.namespace: 'Bad' is not a valid DNS-1123 label")
    ok = minimal()
    ok["metadata"] = {"name": "web.example-1", "namespace": ""}
    pod = pod_of(ok)
    assert spec.check(pod) == [] and pod.metadata.namespace == "default"


def test_container_rules():
    doc = minimal(initContainers=[{"name": "app", "image": "x"}])
    doc["spec"]["containers"].append({"name": "Web", "image": " "})
    assert spec.check(pod_of(doc)) == [
        "spec.containers[1].name: 'Web' is not a valid DNS-1123 label (at most 63 lowercase "
        "letters, digits or '-', starting and ending with a letter or digit)",
        "spec.containers[1].image: required",
        "spec.initContainers[0].name: 'app' is already the name of spec.containers[0]"]
    empty = minimal()
    empty["spec"]["containers"] = []
    assert spec.check(pod_of(empty)) == ["spec.containers: at least one container is required"]


def test_container_restart_policy_rules():
    doc = minimal(initContainers=[{"name": "side", "image": "x", "restartPolicy": "Always"},
                                  {"name": "once", "image": "x", "restartPolicy": "OnFailure"}])
    doc["spec"]["containers"][0]["restartPolicy"] = "Always"
    assert spec.check(pod_of(doc)) == [
        "spec.containers[0].restartPolicy: only allowed on initContainers (where Always makes a "
        "sidecar)",
        "spec.initContainers[1].restartPolicy: must be Always (got 'OnFailure')"]


def test_env_rules():
    doc = minimal()
    doc["spec"]["containers"][0]["env"] = [
        {"name": "A=B", "value": "x"}, {"name": "", "value": "x"},
        {"name": "C", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "D", "valueFrom": {}}, {"name": "OK", "value": "$(A)"}]
    assert spec.check(pod_of(doc)) == [
        "spec.containers[0].env[0].name: must be non-empty and contain no '=' (got 'A=B')",
        "spec.containers[0].env[1].name: must be non-empty and contain no '=' (got '')",
        "spec.containers[0].env[2]: may not have both value and valueFrom",
        "spec.containers[0].env[3].valueFrom: must have exactly one source"]


def test_port_rules():
    doc = minimal(hostNetwork=True)
    doc["spec"]["containers"][0]["ports"] = [
        {"containerPort": 0}, {"containerPort": 80, "hostPort": 70000},
        {"containerPort": 81, "name": "http"}, {"containerPort": 82, "name": "http"},
        {"containerPort": 83, "name": "a-very-long-port-name"}, {"containerPort": 84, "name": "80"},
        {"containerPort": 85, "hostPort": 8085}]
    assert spec.check(pod_of(doc)) == [
        "spec.containers[0].ports[0].containerPort: must be between 1 and 65535 (got 0)",
        "spec.containers[0].ports[1].hostPort: must be between 0 and 65535 (got 70000)",
        "spec.containers[0].ports[1].hostPort: must equal containerPort when hostNetwork is true",
        "spec.containers[0].ports[3].name: duplicate port name 'http' (also ports[2])",
        "spec.containers[0].ports[4].name: 'a-very-long-port-name' is not a valid port name "
        "(at most 15 lowercase letters, digits or '-', with at least one letter)",
        "spec.containers[0].ports[5].name: '80' is not a valid port name (at most 15 lowercase "
        "letters, digits or '-', with at least one letter)",
        "spec.containers[0].ports[6].hostPort: must equal containerPort when hostNetwork is true"]
    doc = minimal()
    doc["spec"]["containers"][0]["ports"] = [{"containerPort": 53, "protocol": "ICMP"}]
    with pytest.raises(Exception, match="ICMP"):
        pod_of(doc)


def test_volume_and_mount_rules():
    doc = minimal(volumes=[{"name": "data"}, {"name": "data"}, {"name": "Bad"}])
    doc["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/d"}, {"name": "data", "mountPath": "/d/"},
        {"name": "data", "mountPath": "rel"},
        {"name": "data", "mountPath": "/e", "subPath": "../x"}]
    assert spec.check(pod_of(doc)) == [
        "spec.volumes[1].name: duplicate volume name 'data' (also volumes[0])",
        "spec.volumes[2].name: 'Bad' is not a valid DNS-1123 label (at most 63 lowercase letters, "
        "digits or '-', starting and ending with a letter or digit)",
        "spec.containers[0].volumeMounts[1].mountPath: '/d/' is already mounted by volumeMounts[0]",
        "spec.containers[0].volumeMounts[2].mountPath: must be an absolute path (got 'rel')",
        "spec.containers[0].volumeMounts[3].subPath: must be a relative path without '..' "
        "(got '../x')"]


def test_one_source_per_volume():
    text = POD + "  volumes:\n  - name: data\n    emptyDir: {}\n    hostPath: {path: /tmp}\n"
    assert problems_of(text) == [
        "spec.volumes[0]: may not specify more than one volume source (got emptyDir, hostPath)"]


def test_volume_without_source_is_an_empty_dir():
    pod = pod_of(minimal(volumes=[{"name": "data"}, {"name": "mem", "emptyDir": {
        "medium": "Memory", "sizeLimit": "64Mi"}}]))
    assert pod.spec.volumes[0].empty_dir is not None
    assert pod.spec.volumes[1].empty_dir.size_limit.to_bytes() == 64 * 2**20


def test_requests_must_not_exceed_limits():
    doc = minimal()
    doc["spec"]["containers"][0]["resources"] = {
        "requests": {"memory": "256Mi", "cpu": "500m"}, "limits": {"memory": "128Mi", "cpu": 1}}
    assert spec.check(pod_of(doc)) == [
        "spec.containers[0].resources.requests.memory: must be less than or equal to the limit "
        "(256Mi > 128Mi)"]
    doc["spec"]["containers"][0]["resources"] = {"limits": {"memory": "-1"}}
    assert spec.check(pod_of(doc)) == [
        "spec.containers[0].resources.limits.memory: must not be negative (got -1)"]


def test_resource_helpers():
    r = spec.ResourceRequirements.model_validate(
        {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"memory": "64Mi"}})
    assert r.cpu_limit_milli() == 500
    assert r.cpu_request_milli() == 500  # request defaults to the limit
    assert r.memory_limit() == 128 * 2**20 and r.memory_request() == 64 * 2**20
    r = spec.ResourceRequirements.model_validate({"requests": {"cpu": 0.25}})
    assert r.cpu_limit_milli() is None and r.cpu_request_milli() == 250
    empty = spec.ResourceRequirements()
    assert (empty.memory_limit(), empty.memory_request(), empty.cpu_request_milli()) == (
        None, None, None)


def test_probe_and_hook_rules():
    doc = minimal(initContainers=[
        {"name": "init", "image": "x", "readinessProbe": {"exec": {"command": ["true"]}}},
        {"name": "side", "image": "x", "restartPolicy": "Always",
         "startupProbe": {"tcpSocket": {"port": 80}}}])
    doc["spec"]["containers"][0].update({
        "livenessProbe": {"exec": {"command": ["true"]}, "httpGet": {"port": "http"},
                          "successThreshold": 2},
        "readinessProbe": {},
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}, "postStart": {}}})
    assert spec.check(pod_of(doc)) == [
        "spec.containers[0].livenessProbe: must have exactly one of exec, httpGet, tcpSocket, "
        "grpc (got exec, httpGet)",
        "spec.containers[0].livenessProbe.successThreshold: must be 1 (got 2)",
        "spec.containers[0].readinessProbe: must have exactly one of exec, httpGet, tcpSocket, "
        "grpc (got none)",
        "spec.containers[0].lifecycle.postStart: must have exactly one of exec, httpGet, "
        "tcpSocket, sleep (got none)",
        "spec.initContainers[0].readinessProbe: not allowed on an init container (only on a "
        "sidecar: restartPolicy Always)"]


def test_probe_defaults():
    probe = spec.Probe.model_validate({"httpGet": {"port": 8080}, "periodSeconds": 0})
    assert (probe.initial_delay_seconds, probe.period_seconds, probe.timeout_seconds,
            probe.success_threshold, probe.failure_threshold) == (0, 10, 1, 1, 3)
    assert probe.http_get.path == "/" and probe.http_get.scheme == "HTTP"
    assert spec.TCPSocketAction.model_validate({"port": "http"}).port == "http"


def test_pod_level_rules():
    doc = minimal(terminationGracePeriodSeconds=-1, hostname="My_Host", subdomain="sub",
                  dnsPolicy="None", hostAliases=[{"ip": "not-an-ip", "hostnames": ["x"]}])
    assert spec.check(pod_of(doc)) == [
        "spec.terminationGracePeriodSeconds: must be between 0 and 2147483647, inclusive (got -1)",
        "spec.hostname: 'My_Host' is not a valid DNS-1123 label (at most 63 lowercase letters, "
        "digits or '-', starting and ending with a letter or digit)",
        "spec.dnsConfig.nameservers: required when dnsPolicy is None",
        "spec.hostAliases[0].ip: 'not-an-ip' is not an IP address"]
    ok = minimal(dnsPolicy="None", dnsConfig={"nameservers": ["1.1.1.1"], "searches": ["a.b"],
                                              "options": [{"name": "ndots", "value": "2"}]},
                 hostAliases=[{"ip": "10.0.0.1", "hostnames": ["db"]}])
    assert spec.check(pod_of(ok)) == []


def test_pull_policy_defaults():
    def policy(image, given=None):
        return spec.Container(name="c", image=image, image_pull_policy=given).pull_policy()
    assert policy("nginx") == "Always"
    assert policy("nginx:latest") == "Always"
    assert policy("nginx:1.25") == "IfNotPresent"
    assert policy("localhost:5000/nginx") == "Always"  # the ':' is the registry port
    assert policy("nginx@sha256:" + "0" * 64) == "IfNotPresent"
    assert policy("nginx", "Never") == "Never"


# --- models --------------------------------------------------------------------------------------

def test_camel_case_aliases_and_snake_case_names():
    pod = pod_of(minimal(hostPID=True, hostIPC=True))
    assert pod.spec.host_pid and pod.spec.host_ipc
    assert pod_of(minimal(shareProcessNamespace=True)).spec.share_process_namespace
    port = spec.ContainerPort.model_validate({"containerPort": 80, "hostIP": "127.0.0.1"})
    assert port.host_ip == "127.0.0.1"
    assert spec.ContainerPort(container_port=80).protocol == "TCP"  # by name too


def test_dump_is_json_with_yaml_names():
    text = POD + "    resources:\n      limits: {memory: 128Mi, cpu: 0.5}\n"
    pod = loads(text).pods[0].pod
    dumped = pod.spec.containers[0].model_dump(by_alias=True, exclude_none=True)
    assert dumped["resources"]["limits"] == {"memory": "128Mi", "cpu": "0.5"}
    assert "volumeMounts" in dumped
    json.dumps(pod.model_dump(by_alias=True))


# --- the catalogue -------------------------------------------------------------------------------

def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _check_model(model: type[BaseModel], type_name: str, pattern: str, seen: list[str]) -> None:
    by_alias = {f.alias: f for f in model.model_fields.values()}
    fields = FIELDS[type_name]
    for alias in by_alias:
        assert alias in fields, f"{model.__name__}.{alias} is not a field of v1 {type_name}"
    for name, child in fields.items():
        path = f"{pattern}.{name}" if pattern else name
        if path in NOT_IMPLEMENTED or path in SERVER_POPULATED:
            continue
        assert name in by_alias, f"{path}: a real field neither modelled nor in NOT_IMPLEMENTED"
        seen.append(path)
        models = _models_in(by_alias[name].annotation)
        if child and models:
            sub = path + "[]" if child.startswith("[]") else path
            _check_model(models[0], child.removeprefix("[]"), sub, seen)


def test_every_field_is_modelled_or_not_implemented():
    seen: list[str] = []
    _check_model(Pod, "Pod", "", seen)
    assert "spec.containers[].volumeMounts[].mountPath" in seen
    assert "spec.initContainers[].restartPolicy" in seen


def test_not_implemented_paths_exist():
    for path in NOT_IMPLEMENTED | SERVER_POPULATED:
        type_name: str | None = "Pod"
        parts = path.split(".")
        for i, part in enumerate(parts):
            assert type_name, f"{path}: descends into a scalar"
            name = part.removesuffix("[]")
            assert name in FIELDS[type_name], f"{path}: {name!r} is not a field of {type_name}"
            child = FIELDS[type_name][name]
            is_list = bool(child and child.startswith("[]"))
            if i < len(parts) - 1:  # descending: list items are written `name[]`
                assert part.endswith("[]") == is_list, path
            else:
                assert not part.endswith("[]"), path
            type_name = child.removeprefix("[]") if child else None


def test_catalogue_types_are_all_defined():
    for fields in FIELDS.values():
        for child in fields.values():
            if child:
                assert child.removeprefix("[]") in FIELDS


# --- what `validate` accepts, `run` can do -------------------------------------------------------

def one_problem(doc: dict) -> str:
    """The single problem of a document, which must be one line naming a field."""
    import yaml as _yaml

    problems = problems_of(_yaml.safe_dump(doc))
    assert len(problems) == 1, problems
    assert "\n" not in problems[0] and len(problems[0]) < 300, problems[0]
    return problems[0]


def with_container(**fields) -> dict:
    doc = minimal()
    doc["spec"]["containers"][0].update(fields)
    return doc


@pytest.mark.parametrize("kind, name, value, message", [
    ("limits", "memory", "1m", "fractional byte value '1m' is invalid, must be an integer"),
    ("requests", "ephemeral-storage", "0.5", "fractional byte value '0.5' is invalid"),
    ("limits", "memory", "1e9999", "'1e9999' is too large for a quantity (at most 2^63-1)"),
    ("limits", "memory", "9" * 5000, "'" + "9" * 40 + "...' is too large for a quantity"),
    ("limits", "memory", "١٢٣", "'١٢٣' is not a quantity"),
    ("limits", "cpu", "1e100", "'1e100' is too large for a quantity"),
    ("limits", "cpu", "1e15", "'1e15' is more than the kernel's largest CPU quota"),
    ("limits", "memroy", "1Gi", "'memroy' is not a resource name"),
])
def test_quantities_that_cannot_be_applied(kind, name, value, message):
    problem = one_problem(with_container(resources={kind: {name: value}}))
    assert problem.startswith("spec.containers[0].resources.") and message in problem


def test_zero_limits_mean_no_limit_as_for_the_kubelet():
    r = spec.ResourceRequirements.model_validate({"limits": {"memory": "0", "cpu": "0"}})
    # Written to memory.max, 0 would kill the container at once; the kubelet reads it as none.
    assert r.memory_limit() is None and r.cpu_limit_milli() is None
    assert loads(_dump(with_container(resources={"limits": {"memory": 0}}))).pods


def _dump(doc: dict) -> str:
    import yaml as _yaml

    return _yaml.safe_dump(doc)


@pytest.mark.parametrize("where, field, value", [
    ("container", "runAsUser", 2**31), ("container", "runAsUser", -1),
    ("container", "runAsGroup", 2**40), ("pod", "runAsUser", -5), ("pod", "fsGroup", 2**31),
])
def test_ids_are_in_the_api_servers_range(where, field, value):
    if where == "pod":
        doc = minimal(securityContext={field: value})
        path = f"spec.securityContext.{field}"
    else:
        doc = with_container(securityContext={field: value})
        path = f"spec.containers[0].securityContext.{field}"
    assert one_problem(doc) == (f"{path}: must be between 0 and 2147483647, inclusive "
                                f"(got {value})")


@pytest.mark.parametrize("fields, path", [
    ({"command": ["sh", "-c", "echo a\0b"]}, "spec.containers[0].command[2]"),
    ({"args": ["\0"]}, "spec.containers[0].args[0]"),
    ({"env": [{"name": "A", "value": "x\0y"}]}, "spec.containers[0].env[0].value"),
    ({"env": [{"name": "A\0", "value": "x"}]}, "spec.containers[0].env[0].name"),
    ({"workingDir": "/srv\0"}, "spec.containers[0].workingDir"),
])
def test_nul_bytes_are_refused(fields, path):
    # execve and chdir would cut the string at the NUL: `echo a\0b` would print `a`.
    assert one_problem(with_container(**fields)).startswith(f"{path}: must not contain a NUL")


@pytest.mark.parametrize("target, ok", [
    ("/", False), ("/proc", False), ("/proc/sys/kernel", False), ("/dev", False),
    ("/a/../proc", False), ("/dev/shm", True), ("/sys/fs/x", True), ("/data", True),
    ("/procfs", True),
])
def test_mount_targets_the_runtime_builds_itself(target, ok):
    doc = with_container(volumeMounts=[{"name": "v", "mountPath": target}])
    doc["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}]
    if ok:
        assert loads(_dump(doc)).pods
    else:
        assert one_problem(doc).startswith(
            f"spec.containers[0].volumeMounts[0].mountPath: {target!r}: cannot mount a volume")


def test_unknown_capabilities_are_refused_in_add_and_drop():
    doc = with_container(securityContext={"capabilities": {"add": ["NET_ADMIN", "CAP_SYS_TIME"],
                                                           "drop": ["NET_RAWW"]}})
    # A typo in drop would keep the capability the pod meant to drop.
    assert one_problem(doc) == ("spec.containers[0].securityContext.capabilities.drop[0]: "
                                "unknown capability 'NET_RAWW'")
    ok = with_container(securityContext={"capabilities": {"add": ["all"], "drop": ["ALL"]}})
    assert loads(_dump(ok)).pods


@pytest.mark.parametrize("image", ["Foo::bar", "busybox:", "a b", "x@sha256:123"])
def test_malformed_image_references(image):
    assert one_problem(with_container(image=image)).startswith(
        f"spec.containers[0].image: invalid image reference {image!r}")


@pytest.mark.parametrize("meta, start", [
    ({"labels": {"a b": "x"}}, "metadata.labels: key 'a b' is not a valid name"),
    ({"labels": {"app": "-x"}}, "metadata.labels.app: '-x' is not a valid label value"),
    ({"labels": {"app": "x" * 64}}, "metadata.labels.app: '" + "x" * 40 + "...' is not a valid"),
    ({"labels": {"Bad_Prefix/app": "x"}}, "metadata.labels: key 'Bad_Prefix/app': the prefix"),
    ({"annotations": {"a": "x" * (256 * 1024)}},
     "metadata.annotations: too long: 262145 bytes, the total size of annotations must be at"
     " most 262144"),
    ({"annotations": {"/x": "y"}}, "metadata.annotations: key '/x': the prefix"),
])
def test_labels_and_annotations(meta, start):
    doc = minimal()
    doc["metadata"].update(meta)
    assert one_problem(doc).startswith(start)


def test_valid_labels_and_annotations():
    doc = minimal()
    doc["metadata"].update(labels={"app.kubernetes.io/name": "web", "tier": "", "v": "1.2_3"},
                           annotations={"example.com/Note": "anything at all\nmultiline"})
    assert loads(_dump(doc)).pods


@pytest.mark.parametrize("probe, message", [
    ({"tcpSocket": {"port": 70000}}, "livenessProbe.tcpSocket.port: must be between 1 and 65535"),
    ({"httpGet": {"port": 0}}, "livenessProbe.httpGet.port: must be between 1 and 65535"),
    ({"httpGet": {"port": "no_such"}}, "livenessProbe.httpGet.port: 'no_such' is not a valid"),
    ({"exec": {"command": ["x"]}, "periodSeconds": -1},
     "livenessProbe.periodSeconds: must be between 1 and 2147483647"),
    ({"exec": {"command": ["x"]}, "failureThreshold": -3},
     "livenessProbe.failureThreshold: must be between 1"),
    ({"exec": {"command": ["x"]}, "initialDelaySeconds": -1},
     "livenessProbe.initialDelaySeconds: must be between 0"),
    ({"exec": {"command": ["x"]}, "timeoutSeconds": 2**31},
     "livenessProbe.timeoutSeconds: must be between 1 and 2147483647, inclusive (got 2147483648)"),
    ({"exec": {"command": ["x"]}, "terminationGracePeriodSeconds": 0},
     "livenessProbe.terminationGracePeriodSeconds: must be between 1"),
])
def test_probe_numbers(probe, message):
    assert one_problem(with_container(livenessProbe=probe)).startswith(
        f"spec.containers[0].{message}")


def test_hook_ports_and_sleep():
    doc = with_container(lifecycle={"preStop": {"sleep": {"seconds": -1}},
                                    "postStart": {"tcpSocket": {"port": 65536}}})
    assert problems_of(_dump(doc)) == [
        "spec.containers[0].lifecycle.postStart.tcpSocket.port: must be between 1 and 65535 "
        "(got 65536)",
        "spec.containers[0].lifecycle.preStop.sleep.seconds: must be between 0 and 2147483647, "
        "inclusive (got -1)"]


@pytest.mark.parametrize("doc, message", [
    (with_container(env=[{"name": "A", "value": "x",
                          "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
     "spec.containers[0].env[0]: may not have both value and valueFrom"),
    (with_container(ports=[{"containerPort": 80, "hostPort": -1}]),
     "spec.containers[0].ports[0].hostPort: must be between 0 and 65535 (got -1)"),
    (with_container(ports=[{"containerPort": 80, "hostPort": 65536}]),
     "spec.containers[0].ports[0].hostPort: must be between 0 and 65535 (got 65536)"),
    (with_container(ports=[{"containerPort": -80}]),
     "spec.containers[0].ports[0].containerPort: must be between 1 and 65535 (got -80)"),
    (with_container(ports=[{"containerPort": 80, "hostIP": "nowhere"}]),
     "spec.containers[0].ports[0].hostIP: 'nowhere' is not an IP address"),
    (minimal(activeDeadlineSeconds=0),
     "spec.activeDeadlineSeconds: must be between 1 and 9223372036854775807, inclusive (got 0)"),
    (minimal(activeDeadlineSeconds=-5), "spec.activeDeadlineSeconds: must be between 1"),
    (minimal(terminationGracePeriodSeconds=10**30),
     "spec.terminationGracePeriodSeconds: must be between 0 and 2147483647, inclusive (got 1"),
])
def test_ignored_fields_are_still_checked(doc, message):
    # hostPort, valueFrom and activeDeadlineSeconds are not acted on yet (a warning says so),
    # but a wrong value is wrong all the same.
    assert one_problem(doc).startswith(message)


def test_a_long_pod_name_fits_the_kernels_and_systemds_names():
    from minipod.config import Config
    from minipod.images.store import Image
    from minipod.pod import plan

    class Store:
        def resolve(self, ref):
            return Image(ref=ref, digest="sha256:" + "0" * 64, layers=[], config={"Cmd": ["x"]})

    names = []
    for suffix in ("a", "b"):
        doc = minimal()
        doc["metadata"] = {"name": "p" * 252 + suffix, "namespace": "n" * 63}
        doc["spec"]["containers"][0]["name"] = "c" * 63
        [loaded] = loads(_dump(doc)).pods  # a 253-character DNS subdomain: valid
        p = plan.build(loaded, Config(root="/r", data_root="/d"), Store(), "pod.yaml")
        paths = (p.pod_cgroup, p.sandbox_cgroup, p.containers[0].cgroup, p.data_dir, p.run_dir)
        # NAME_MAX for a directory or cgroup, and systemd's unit name limit: 255.
        assert all(len(part) <= 255 for path in paths for part in path.split("/")), paths
        names.append(p.containers[0].cgroup)
    assert names[0] != names[1]  # shortened names keep a hash of the whole name
    short = plan.build(loads(POD).pods[0], Config(root="/r", data_root="/d"), Store(), "x")
    assert short.pod_cgroup.endswith("/minipod-web.slice")  # short names are unchanged


def test_long_values_and_odd_keys_stay_on_one_short_line():
    doc = minimal()
    doc["spec"]["containers"][0]["x" * 5000 + "\nnext"] = 1
    doc["spec"]["hostname"] = "H" * 10000
    problems = problems_of(_dump(doc))
    assert len(problems) == 2
    for p in problems:
        assert "\n" not in p and len(p) < 300, p


def test_yaml_control_characters_are_one_line():
    err = error_of(POD.replace("nginx", "ngi\x01nx"))
    assert err == ("pod.yaml:8:15: unacceptable character #x0001: control characters are not "
                   "allowed in YAML (write it as an escape in a double-quoted string)")


@pytest.mark.parametrize("value, problem", [
    ("!!binary aGk=", "a YAML bytes value has no JSON form"),
    ("!!set {a}", "a YAML set value has no JSON form"),
])
def test_yaml_values_without_a_json_form(value, problem):
    text = POD + f"  nodeSelector: {{k: {value}}}\n"
    assert problems_of(text) == [f"spec.nodeSelector.k: {problem} (quote it to make it a string)"]


def test_yaml_timestamps_are_strings_as_kubectl_sends_them():
    text = POD + "    env: [{name: D, value: 2024-01-02}]\n"
    assert loads(text).pods[0].pod.spec.containers[0].env[0].value == "2024-01-02"


# --- security fields never weaken silently -------------------------------------------------------

REFUSAL = "not supported by minipod yet: refusing to run with less protection than asked for"


@pytest.mark.parametrize("where, field, value", [
    ("container", "appArmorProfile", {"type": "RuntimeDefault"}),
    ("pod", "appArmorProfile", {"type": "Localhost", "localhostProfile": "p"}),
    ("init", "appArmorProfile", {"type": "RuntimeDefault"}),
])
def test_security_controls_minipod_cannot_apply_are_refused(where, field, value):
    if where == "pod":
        doc, path = minimal(securityContext={field: value}), f"spec.securityContext.{field}"
    else:
        doc = with_container(securityContext={field: value})
        path = f"spec.containers[0].securityContext.{field}"
        if where == "init":
            doc["spec"]["initContainers"] = [{"name": "i", "image": "busybox",
                                              "securityContext": {field: value}}]
            doc["spec"]["containers"][0].pop("securityContext")
            path = f"spec.initContainers[0].securityContext.{field}"
    problem = one_problem(doc)
    assert problem.startswith(f"{path}: {REFUSAL} (")


def test_host_users_false_asks_for_a_user_namespace():
    assert one_problem(minimal(hostUsers=False)).startswith(f"spec.hostUsers: {REFUSAL}")
    assert loads(_dump(minimal(hostUsers=True))).pods  # the default: a warning at most


def test_a_workload_template_is_refused_too():
    text = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n"
            "  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n"
            "    spec:\n      securityContext: {appArmorProfile: {type: RuntimeDefault}}\n"
            "      containers: [{name: c, image: busybox}]\n")
    assert problems_of(text) == [f"spec.template.spec.securityContext.appArmorProfile: {REFUSAL} "
                                 "(an AppArmor profile)"]


@pytest.mark.parametrize("where, field, value", [
    ("pod", "appArmorProfile", {"type": "Unconfined"}),
    ("pod", "seLinuxOptions", {"level": "s0:c1"}),
    ("container", "seLinuxOptions", {"type": "spc_t"}),
])
def test_asking_for_no_more_than_minipod_gives_is_a_warning(where, field, value):
    doc = (minimal(securityContext={field: value}) if where == "pod"
           else with_container(securityContext={field: value}))
    res = loads(_dump(doc), "pod.yaml")
    assert res.pods and any(field in w and "ignored" in w for w in res.warnings)


@pytest.mark.parametrize("where, sc, problem", [
    ("pod", {"sysctls": [{"name": "net.core.somaxconn", "value": "1"}]},
     'spec.securityContext.sysctls[0].name: forbidden sysctl: "net.core.somaxconn" not allowlisted'),
    ("pod", {"sysctls": [{"name": "Bad Name", "value": "1"}]}, "is not a valid sysctl name"),
    ("pod", {"seccompProfile": {"type": "Localhost"}},
     "spec.securityContext.seccompProfile.localhostProfile: required when type is Localhost"),
    ("container", {"seccompProfile": {"type": "Localhost", "localhostProfile": "../x"}},
     "must be a descending path"),
    ("container", {"seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "x"}},
     "can only be set when type is Localhost"),
    ("container", {"seccompProfile": {"type": "Nope"}}, "seccompProfile.type"),
    ("container", {"procMount": "Unmasked"},
     'spec.containers[0].securityContext.procMount: Invalid value: "Unmasked": `hostUsers` must'
     ' be false to use `Unmasked`'),
])
def test_security_field_problems(where, sc, problem):
    doc = minimal(securityContext=sc) if where == "pod" else with_container(securityContext=sc)
    assert problem in one_problem(doc)


def test_a_sysctl_of_a_host_namespace_is_refused():
    """Once hostNetwork/hostIPC are honoured, a sysctl there would set the host's value."""
    from minipod.spec.checks import check_sysctls

    pod = loads(_dump(minimal(securityContext={"sysctls": [
        {"name": "net.ipv4.tcp_syncookies", "value": "1"},
        {"name": "kernel.shm_rmid_forced", "value": "1"}]}))).pods[0].pod
    assert list(check_sysctls(pod)) == []
    pod.spec.host_network = pod.spec.host_ipc = True
    assert list(check_sysctls(pod)) == [
        'spec.securityContext.sysctls[0].name: forbidden sysctl: "net.ipv4.tcp_syncookies" not'
        ' allowed with host net enabled',
        'spec.securityContext.sysctls[1].name: forbidden sysctl: "kernel.shm_rmid_forced" not'
        ' allowed with host ipc enabled']


def test_implemented_security_fields_give_no_warning():
    doc = minimal(securityContext={
        "runAsNonRoot": True, "fsGroup": 1, "fsGroupChangePolicy": "OnRootMismatch",
        "supplementalGroups": [2], "seccompProfile": {"type": "RuntimeDefault"},
        "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 2048"},
                    {"name": "kernel/shm_rmid_forced", "value": "1"}]})
    doc["spec"]["containers"][0]["securityContext"] = {
        "procMount": "Default", "runAsNonRoot": False, "seccompProfile": {"type": "Unconfined"}}
    res = loads(_dump(doc), "pod.yaml")
    assert res.pods and res.warnings == [], res.warnings


def test_security_fields_minipod_applies_are_kept():
    sc = {"privileged": False, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
          "runAsUser": 1000, "runAsGroup": 1000, "capabilities": {"drop": ["ALL"],
                                                                  "add": ["NET_BIND_SERVICE"]}}
    res = loads(_dump(with_container(securityContext=sc)), "pod.yaml")
    assert res.warnings == []
    got = res.pods[0].pod.spec.containers[0].security_context
    assert (got.allow_privilege_escalation, got.read_only_root_filesystem, got.run_as_user,
            got.capabilities.drop) == (False, True, 1000, ["ALL"])


def test_refused_paths_exist_and_are_not_applied_by_the_runtime():
    from minipod.spec.kube_fields import REFUSED

    for path in REFUSED:
        type_name: str | None = "Pod"
        for part in path.split("."):
            assert type_name and part.removesuffix("[]") in FIELDS[type_name], path
            type_name = (FIELDS[type_name][part.removesuffix("[]")] or "").removeprefix("[]")
        # Refused means "not applied": each is also in NOT_IMPLEMENTED (its other values warn).
        assert path in NOT_IMPLEMENTED, path


@pytest.mark.parametrize("key, value, refused", [
    ("container.apparmor.security.beta.kubernetes.io/app", "runtime/default", True),
    ("container.apparmor.security.beta.kubernetes.io/app", "unconfined", False),
    ("example.com/seccomp", "runtime/default", False),
])
def test_profile_annotations_are_refused_like_the_fields(key, value, refused):
    doc = minimal()
    doc["metadata"]["annotations"] = {key: value}
    if refused:
        assert one_problem(doc).startswith(f"metadata.annotations.{key}: {REFUSAL} (")
    else:
        assert loads(_dump(doc)).pods


def test_host_pid_with_share_process_namespace_is_refused_as_the_api_server_does():
    with pytest.raises(SpecError) as e:
        loads(json.dumps(minimal(hostPID=True, shareProcessNamespace=True)))
    assert "spec.shareProcessNamespace: ShareProcessNamespace and HostPID cannot both be " \
        "enabled" in str(e.value)


@pytest.mark.parametrize("key", ["seccomp.security.alpha.kubernetes.io/pod",
                                 "container.seccomp.security.alpha.kubernetes.io/app"])
def test_seccomp_annotations_warn_as_the_api_server_does(key):
    """Since Kubernetes 1.27 they do nothing: the API server warns, the pod is Unconfined."""
    doc = minimal()
    doc["metadata"]["annotations"] = {key: "runtime/default"}
    res = loads(_dump(doc), "pod.yaml")
    assert res.pods and res.warnings == [
        f'pod.yaml: metadata.annotations[{key}]: non-functional in v1.27+; use the'
        ' "seccompProfile" field instead'], res.warnings


def test_one_volume_source_counts_only_real_sources():
    """A long unknown key is its own problem, not a second "source" in a screen-wide line."""
    doc = minimal(volumes=[{"name": "v", "emptyDir": {}, "x" * 600: {}}])
    with pytest.raises(SpecError) as e:
        loads(json.dumps(doc))
    text = str(e.value)
    assert "unknown field" in text and "more than one volume source" not in text
    doc = minimal(volumes=[{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}])
    with pytest.raises(SpecError) as e:
        loads(json.dumps(doc))
    assert "spec.volumes[0]: may not specify more than one volume source (got emptyDir, " \
        "hostPath)" in str(e.value)
