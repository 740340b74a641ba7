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


def test_nsenter_host_namespaces_are_warned_about():
    result = load(str(FIXTURES / "nsenter-test.yaml"))
    src = str(FIXTURES / "nsenter-test.yaml")
    for path in ("spec.hostPID", "spec.hostNetwork", "spec.hostIPC", "spec.containers[0].tty",
                 "spec.containers[0].stdin"):
        assert f"{src}: {path}: not implemented by minipod yet, ignored" in result.warnings
    pod = result.pods[0].pod
    assert pod.spec.containers[0].security_context.privileged is True
    assert pod.spec.host_network is False  # dropped until the runtime implements it


def test_multi_doc_with_configmap_and_service():
    src = str(FIXTURES / "nginx-sidecar-pod.yaml")
    result = load(src)
    [loaded] = result.pods
    assert loaded.index == 1
    skipped = "skipped: minipod runs v1 Pods only"
    assert result.warnings[0] == f"{src}: document 1 (ConfigMap): {skipped}"
    assert result.warnings[-1] == f"{src}: document 3 (Service): {skipped}"
    assert f"{src}: doc 2: spec.volumes[1].configMap: not implemented by minipod yet, ignored" \
        in result.warnings
    assert f"{src}: doc 2: spec.nodeSelector: not implemented by minipod yet, ignored" \
        in result.warnings
    # The configMap volume is ignored, and so is its mount (not silently turned into an emptyDir).
    assert (f"{src}: doc 2: spec.containers[0].volumeMounts[1]: volume 'nginx-index-cm' is "
            "ignored, so is this mount") in result.warnings
    pod = loaded.pod
    assert [v.name for v in pod.spec.volumes] == ["shared-logs"]
    assert [m.name for m in pod.spec.containers[0].volume_mounts] == ["shared-logs"]
    assert pod.spec.containers[1].volume_mounts[0].read_only is True
    assert pod.spec.containers[0].resources.memory_request() == 50 * 2**20
    assert loaded.raw["spec"]["volumes"][1]["configMap"] == {"name": "nginx-index"}  # as written


def test_kubectl_get_output_is_accepted():
    src = str(FIXTURES / "webserver-from-cluster.yaml")
    result = load(src)
    # Server-populated fields (uid, resourceVersion, creationTimestamp, status) pass silently.
    assert not any("uid" in w or "status" in w or "creationTimestamp" in w for w in result.warnings)
    assert f"{src}: spec.volumes[0].projected: not implemented by minipod yet, ignored" \
        in result.warnings
    pod = result.pods[0].pod
    assert pod.spec.volumes == [] and pod.spec.containers[0].volume_mounts == []
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


def test_non_pod_kinds_are_skipped_with_a_warning():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n---\n" + POD
    text += "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
    result = loads(text, "all.yaml")
    assert [lp.pod.metadata.name for lp in result.pods] == ["web"]
    assert result.pods[0].index == 1
    assert result.warnings == [
        "all.yaml: document 1 (ConfigMap): skipped: minipod runs v1 Pods only",
        "all.yaml: document 3 (Service): skipped: minipod runs v1 Pods only"]


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
    text = POD + "    tty: true\n  hostNetwork: true\n"
    result = loads(text, "pod.yaml")
    assert result.warnings == [
        "pod.yaml: spec.containers[0].tty: not implemented by minipod yet, ignored",
        "pod.yaml: spec.hostNetwork: not implemented by minipod yet, ignored"]
    pod = result.pods[0].pod
    assert pod.spec.containers[0].tty is False and pod.spec.host_network is False


def test_not_implemented_init_container_field_warns_too():
    text = POD + "  initContainers:\n  - name: init\n    image: busybox\n    envFrom: []\n"
    assert loads(text, "p.yaml").warnings == [
        "p.yaml: spec.initContainers[0].envFrom: not implemented by minipod yet, ignored"]


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
        "spec.terminationGracePeriodSeconds: must be >= 0 (got -1)",
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
    pod = pod_of(minimal(hostPID=True, hostIPC=True, shareProcessNamespace=True))
    assert pod.spec.host_pid and pod.spec.host_ipc and pod.spec.share_process_namespace
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
