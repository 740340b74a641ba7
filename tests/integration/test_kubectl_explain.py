"""`kubectl explain` against `minipod serve`, with both kubectls: 1.35 reads the schemas of the
OpenAPI v3 document (/openapi/v3/api/v1), 1.20 those of v2 (gnostic protobuf). Each must show
the API's own field descriptions, as against a cluster."""

from __future__ import annotations

import re

import pytest
from kubeserve import Served, kubectl120, kubectl135, served  # noqa: F401 - fixtures

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.slow]


def _explain(served, binary=None):
    def explain(what: str) -> str:
        return served.k("explain", what, binary=binary).stdout
    return explain


def _check(explain) -> None:
    pod = explain("pod")
    assert re.search(r"KIND:\s+Pod\n", pod) and re.search(r"VERSION:\s+v1\n", pod), pod
    assert "Pod is a collection of containers that can run on a host" in pod, pod
    for field in ("apiVersion", "kind", "metadata", "spec", "status"):
        assert re.search(rf"^   ?{field}\t?\s*<", pod, re.M), (field, pod)

    image = explain("pod.spec.containers.image")
    assert re.search(r"FIELD:\s+image\s+<string>", image), image
    assert "Container image name." in image, image

    policy = explain("pod.spec.restartPolicy")
    assert re.search(r"FIELD:\s+restartPolicy\s+<string>", policy), policy
    assert "Restart policy for all containers within the pod" in policy, policy

    resources = explain("pod.spec.containers.resources")
    # 1.20 names an object-typed field RESOURCE (as against a cluster), 1.35 FIELD.
    assert re.search(r"(FIELD|RESOURCE):\s+resources\s+<(Object|ResourceRequirements)>",
                     resources), resources
    assert "ResourceRequirements describes the compute resource requirements" in resources
    for field in ("limits", "requests"):
        assert re.search(rf"^   ?{field}\t?\s*<map\[string\]", resources, re.M), (field, resources)
    assert "Limits describes the maximum amount of compute resources allowed" in resources

    cm = explain("configmap")
    assert re.search(r"KIND:\s+ConfigMap\n", cm), cm
    assert "ConfigMap holds configuration data for pods to consume" in cm, cm
    assert "Data contains the configuration data" in cm, cm

    secret = explain("secret.stringData")
    assert "stringData allows specifying non-binary secret data in string form" in secret


def test_kubectl_135_explains_from_openapi_v3(served):
    _check(_explain(served))
    # An unknown field is kubectl's own error, as against a cluster.
    p = served.k("explain", "pod.spec.nosuchfield", check=False)
    assert p.returncode != 0 and 'field "nosuchfield" does not exist' in p.stderr, p.stderr


def test_kubectl_120_explains_from_openapi_v2(mp, kubectl120):
    served = Served(mp, kubectl120)
    try:
        _check(_explain(served))
        p = served.k("explain", "pod.spec.nosuchfield", check=False)
        assert p.returncode != 0 and 'field "nosuchfield" does not exist' in p.stderr, p.stderr
    finally:
        served.stop()
