"""Fuzzing the manifest loader, for good: manifests generated from the field catalogue
(kube_fields.FIELDS) with plausible and extreme values, wrong types and unknown fields.

The properties, the promise `minipod validate` makes:
  - load() never fails with anything but a SpecError, and each of its problems is one short
    line that starts with the field's path (no traceback, no internal error, no screenful);
  - a manifest that load() accepts also plans (plan.build), and its plan is JSON, as the CLI
    writes it for the supervisor — `validate` says yes only to what `run` can do.
Bounded for CI: a fixed number of examples per property (about 30 s in all on this machine),
no deadline per example (the first examples pay for imports). A real `minipod run` of a few
generated manifests is in tests/integration/test_validation_run.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minipod.config import Config
from minipod.errors import MinipodError, SpecError
from minipod.images.store import Image
from minipod.pod import plan
from minipod.spec import spec
from minipod.spec.kube_fields import FIELDS

# MINIPOD_FUZZ_EXAMPLES=5000 for a longer hunt by hand; CI runs the default.
EXAMPLES = int(os.environ.get("MINIPOD_FUZZ_EXAMPLES", "400"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- values ----------------------------------------------------------------------------------

# Strings a manifest should not break on: control characters, NUL, other scripts' digits,
# very long text, YAML-looking text, paths.
nasty_text = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=10),
    st.sampled_from(["", " ", "\0", "a\0b", "\x01", "\n", "x\ny", "١٢٣", "-", "..", "/", "/proc",
                     "/dev", "//", "~", "null", "yes", "1e9999", "0x10", "Ä", "a" * 300,
                     "x" * 70000, "$(A)", "%s", "{}", "[]", "*", "&a", "!!binary"]),
)
huge_ints = st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, -2**31, 2**63 - 1, 2**63, -2**63,
                             10**30, 10**40, 65535, 65536])
extreme = st.one_of(
    nasty_text, huge_ints, st.integers(), st.booleans(), st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
dns_label = st.from_regex(r"[a-z]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
quantity = st.one_of(
    st.sampled_from(["0", "1", "1m", "500m", "0.5", "1.5", "128Mi", "1Gi", "1e3", "1e9999", "-1",
                     "١٢٣", "1E", "8Ei", "12Q", "", "1e15", "0.0001", "9" * 5000, "1e-9999"]),
    st.integers(min_value=-10, max_value=10**20), st.floats(allow_nan=False, width=32))
resources = st.dictionaries(
    st.sampled_from(["cpu", "memory", "ephemeral-storage", "hugepages-2Mi", "example.com/gpu",
                     "memroy", ""]), quantity, max_size=3)
path_text = st.one_of(st.sampled_from(["/", "/data", "/proc", "/proc/sys", "/dev", "/dev/shm",
                                       "/sys", "relative", "/a/../proc", "/etc/hosts", ""]),
                      st.text(max_size=10).map(lambda s: "/" + s))

# Plausible values for leaves by name: most examples get deep into the checks this way.
LEAVES: dict[str, st.SearchStrategy] = {
    "name": st.one_of(dns_label, nasty_text),
    "image": st.sampled_from(["busybox", "nginx:1.25", "localhost:5000/a/b:v1", "Foo::bar", "",
                              "busybox@sha256:" + "a" * 64, "x@sha256:12", "a b", "a" * 300]),
    "command": st.lists(nasty_text, max_size=3), "args": st.lists(nasty_text, max_size=3),
    "limits": resources, "requests": resources, "sizeLimit": quantity, "divisor": quantity,
    "mountPath": path_text, "subPath": path_text, "workingDir": path_text, "path": path_text,
    "port": st.one_of(huge_ints, dns_label, st.integers(min_value=-1, max_value=70000)),
    "containerPort": st.one_of(huge_ints, st.integers(min_value=-1, max_value=70000)),
    "hostPort": st.one_of(huge_ints, st.integers(min_value=-1, max_value=70000)),
    "runAsUser": huge_ints, "runAsGroup": huge_ints, "fsGroup": huge_ints,
    "supplementalGroups": st.lists(huge_ints, max_size=2),
    "labels": st.dictionaries(nasty_text, nasty_text, max_size=3),
    "annotations": st.dictionaries(nasty_text, nasty_text, max_size=3),
    "add": st.lists(st.sampled_from(["NET_ADMIN", "CAP_SYS_TIME", "all", "NOPE", ""]), max_size=2),
    "drop": st.lists(st.sampled_from(["ALL", "NET_RAW", "NET_RAWW", "chown"]), max_size=2),
    "restartPolicy": st.sampled_from(["Always", "OnFailure", "Never", "always", ""]),
    "type": st.sampled_from(["RuntimeDefault", "Unconfined", "Localhost", "x"]),
    "protocol": st.sampled_from(["TCP", "UDP", "SCTP", "tcp"]),
    "ip": st.sampled_from(["10.0.0.1", "::1", "nope", ""]),
    "hostIP": st.sampled_from(["10.0.0.1", "::1", "nope", ""]),
    "nameservers": st.lists(st.sampled_from(["1.1.1.1", "x"]), max_size=2),
    "medium": st.sampled_from(["", "Memory", "HugePages"]),
    "value": nasty_text,
    "imagePullPolicy": st.sampled_from(["Always", "IfNotPresent", "Never", "never"]),
}
SECONDS = re.compile(r".*(Seconds|Threshold|seconds)$")
BOOLS = {"privileged", "runAsNonRoot", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
         "readOnly", "hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace", "stdin",
         "tty", "hostUsers", "optional"}


def leaf(name: str) -> st.SearchStrategy:
    if name in LEAVES:
        good = LEAVES[name]
    elif SECONDS.match(name):
        good = st.one_of(huge_ints, st.integers(min_value=-2, max_value=100))
    elif name in BOOLS:
        good = st.booleans()
    else:
        good = st.text(string.ascii_lowercase, max_size=8)
    return mostly(good)


def mostly(good: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a plausible value, one time in 15 anything at all (a wrong type, an extreme)."""
    return st.integers(0, 14).flatmap(lambda n: extreme if n == 0 else good)


@st.composite
def obj(draw, type_name: str, depth: int = 0) -> dict:
    """An object of a catalogue type: a few of its fields, each plausible or extreme, and now
    and then an unknown field or a value of the wrong shape."""
    fields = FIELDS[type_name]
    names = draw(st.lists(st.sampled_from(sorted(fields)), max_size=4 if depth < 4 else 1,
                          unique=True))
    out: dict = {}
    for name in names:
        child = fields[name]
        if child is None or depth > 6:
            out[name] = draw(leaf(name))
        elif child.startswith("[]"):
            out[name] = draw(mostly(st.lists(obj(child[2:], depth + 1), max_size=2)))
        else:
            out[name] = draw(mostly(obj(child, depth + 1)))
    if draw(st.integers(0, 29)) == 0:
        out[draw(st.one_of(st.text(max_size=8), st.sampled_from(["imagee", "x" * 500])))] = \
            draw(extreme)
    return out


@st.composite
def manifests(draw) -> dict:
    """A Pod that gets past the first checks (a name, one container with an image), with
    generated fields merged into its spec and its container."""
    pod_spec = draw(obj("PodSpec"))
    container = {"name": "app", "image": "busybox", **draw(obj("Container"))}
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers or draw(st.booleans()):
        pod_spec["containers"] = [container]
    meta = {"name": "web", **draw(obj("ObjectMeta"))}
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
    if draw(st.integers(0, 19)) == 0:  # now and then, a workload that wraps the pod
        doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"template": {"metadata": meta, "spec": pod_spec}}}
    return doc


# --- the properties ----------------------------------------------------------------------------

class FakeStore:
    def resolve(self, ref: str) -> Image:
        return Image(ref=ref, digest="sha256:" + "0" * 64, layers=["/l/1"],
                     config={"Entrypoint": ["/entry"], "Env": ["PATH=/bin"]})


CFG = Config(root="/r", data_root="/d")
# A problem starts with the field's path (`spec.containers[0].image: ...`, `0metadata: ...`
# for a key that starts with a digit, a quoted key for an odd name), or is about the whole
# document.
PROBLEM = re.compile(r"(doc \d+: )?([\w'\"][^\n]*?: |no v1 Pod in this file|expected a"
                     r" Kubernetes object)")


def assert_good_problems(e: SpecError) -> None:
    assert e.problems
    located = re.search(r":\d+:\d+$", e.source)  # a YAML error: file:line:column names it
    for p in e.problems:
        assert "\n" not in p and len(p) < 500, p
        assert located or PROBLEM.match(p) or re.match(r"\d+:\d+: ", p), p


def load_and_plan(text: str) -> None:
    try:
        res = spec.loads(text, "pod.yaml")
    except SpecError as e:
        assert_good_problems(e)
        return
    for w in res.warnings:
        assert "\n" not in w and len(w) < 500, w
    for lp in res.pods:
        try:
            p = plan.build(lp, CFG, FakeStore(), "pod.yaml")
        except MinipodError as e:  # the image has no command: the one thing plan may refuse
            assert "no command given" in str(e), e
            continue
        json.dumps(p.to_json())  # what runner.launch writes for the supervisor


@SETTINGS
@given(manifests())
def test_generated_manifests_fail_cleanly_or_plan(doc):
    load_and_plan(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=EXAMPLES * 3 // 8, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_any_text_is_a_manifest_or_a_clean_error(text):
    load_and_plan(text)


VALID = """\
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: app
    image: busybox
    command: [sh, -c, 'echo hi']
    resources: {limits: {memory: 64Mi, cpu: 500m}}
    ports: [{containerPort: 80}]
"""


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(st.integers(0, len(VALID) - 1), st.integers(0, 5),
       st.text(alphabet=st.characters(codec="utf-8"), max_size=6))
def test_a_mangled_manifest_is_a_manifest_or_a_clean_error(at, drop, insert):
    load_and_plan(VALID[:at] + insert + VALID[at + drop:])


@settings(max_examples=40, deadline=None)
@given(manifests())
def test_the_cli_prints_one_line_per_problem(doc):
    """Through the real command (cli.main, in-process): exit 0 or 1, never an internal error."""
    import tempfile

    from minipod.cli import cli

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(doc, f, allow_unicode=True)
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = cli.main(["validate", f.name])
    finally:
        os.unlink(f.name)
    assert code in (0, 1), err.getvalue()
    assert "internal error" not in err.getvalue() and "Traceback" not in err.getvalue()
    lines = [ln for ln in err.getvalue().splitlines() if not ln.startswith("warning: ")]
    if code == 1:
        assert lines[0].startswith(f"error: {f.name}"), lines
        assert all(len(ln) < 520 for ln in lines), lines


@pytest.mark.parametrize("doc", [
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
     "spec": {"containers": [{"name": "app", "image": "busybox",
                              "resources": {"limits": {"memory": "9" * 5000}}}]}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "x" * 5000: 1},
     "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["\0"]}]}},
])
def test_examples_the_fuzzer_found(doc):
    load_and_plan(yaml.safe_dump(doc))


def test_a_5000_digit_integer_in_yaml():
    # Python's int() refuses more than 4300 digits with a ValueError, which is no YAML error.
    with pytest.raises(SpecError) as e:
        spec.loads(VALID.replace("containerPort: 80", "containerPort: " + "9" * 5000), "p.yaml")
    assert str(e.value) == "p.yaml:10:29: an integer of 5000 characters is too large"
