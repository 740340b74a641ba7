"""The v1 Pod manifest: pydantic models, the loader and the semantic checks. No system calls.

load() goes YAML -> field walk -> pydantic -> named checks:
  1. YAML, with line:column on syntax errors and duplicate keys (PyYAML keeps the last silently;
     kubectl refuses them).
  2. A walk of the raw document against minipod.spec.kube_fields, so that every path is exact: unknown
     fields are errors, real fields minipod does not implement are warnings and are dropped,
     server-populated fields (`kubectl get -o yaml` output) are dropped silently. Workload
     documents (Deployment, ..., CronJob) are checked whole first (minipod.spec.workloads).
  3. pydantic for types and defaults, its errors reworded for humans with YAML (camelCase) paths.
  4. Small named checks for what types cannot say (like runc's libcontainer/configs/validate).
All problems of all documents are collected and raised together as one SpecError.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import yaml

# pydantic looks for plugins through importlib.metadata, scanning every installed package
# (~10-20 ms of every `minipod run`); minipod uses none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError
from pydantic import field_validator, model_validator

from minipod.errors import SpecError
from minipod.spec.checks import CHECKS, check  # noqa: F401 - the named checks, after pydantic's
from minipod.spec.checks import each_container, security_warnings
from minipod.spec import workloads
from minipod.spec.kube_fields import FIELDS, walk, yaml_name
from minipod.spec.quantity import Quantity
from minipod.spec import objects as objects_
from minipod.spec.show import key as _key
from minipod.spec.show import show as _show
from minipod.spec.sources import (  # noqa: F401 - the sources that read other objects
    ConfigMapVolumeSource, DownwardAPIVolumeSource, EnvFromSource, EnvVarSource,
    HostPathVolumeSource, ObjectFieldSelector, PersistentVolumeClaimVolumeSource,
    ProjectedVolumeSource, ResourceFieldSelector, SecretVolumeSource)

# --- models ----------------------------------------------------------------------------------

class _Model(BaseModel):
    # strict: like the API server's JSON decoding, "80" is not an integer and 80 is not a string.
    model_config = ConfigDict(
        alias_generator=yaml_name, populate_by_name=True, extra="forbid", strict=True)


def _quantity(v: Any) -> Quantity:
    return v if isinstance(v, Quantity) else Quantity(v)


def _int_or_string(v: Any) -> int | str:
    # IntOrString (apimachinery util/intstr): a port number or a port name.
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"expected a port number or name (got {_show(v)})")
    return v


QuantityValue = Annotated[Quantity, PlainValidator(_quantity), PlainSerializer(str)]
IntOrString = Annotated[int | str, PlainValidator(_int_or_string)]


class ObjectMeta(_Model):
    name: str = ""
    generate_name: str = ""
    namespace: str = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @field_validator("namespace")
    @classmethod
    def _empty_is_default(cls, v: str) -> str:
        return v or "default"  # the API server treats "" as "default"


class ExecAction(_Model):
    command: list[str] = []


class HTTPHeader(_Model):
    name: str
    value: str


class HTTPGetAction(_Model):
    path: str = "/"
    port: IntOrString
    host: str = ""  # empty: the pod IP
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    http_headers: list[HTTPHeader] = []


class TCPSocketAction(_Model):
    port: IntOrString
    host: str = ""


class GRPCAction(_Model):
    port: int
    service: str = ""
    mode: Literal["TLS", "Plaintext"] | None = None  # unset: Plaintext


class SleepAction(_Model):
    seconds: int


class Probe(_Model):
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace_period_seconds: int | None = None

    @model_validator(mode="after")
    def _zero_is_default(self) -> Probe:
        # pkg/apis/core/v1/defaults.go SetDefaults_Probe: 0 means "use the default".
        for name, default in (("period_seconds", 10), ("timeout_seconds", 1),
                              ("success_threshold", 1), ("failure_threshold", 3)):
            if getattr(self, name) == 0:
                setattr(self, name, default)
        return self


class LifecycleHandler(_Model):
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    sleep: SleepAction | None = None


class Lifecycle(_Model):
    post_start: LifecycleHandler | None = None
    pre_stop: LifecycleHandler | None = None


class Capabilities(_Model):
    add: list[str] = []
    drop: list[str] = []


class SeccompProfile(_Model):
    type: Literal["RuntimeDefault", "Unconfined", "Localhost"]
    localhost_profile: str | None = None


class SecurityContext(_Model):
    privileged: bool | None = None
    capabilities: Capabilities | None = None
    allow_privilege_escalation: bool | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    read_only_root_filesystem: bool | None = None
    seccomp_profile: SeccompProfile | None = None
    proc_mount: Literal["Default", "Unmasked"] | None = None


class Sysctl(_Model):
    name: str
    value: str


class PodSecurityContext(_Model):
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    fs_group: int | None = None
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = None
    supplemental_groups: list[int] = []
    sysctls: list[Sysctl] = []
    seccomp_profile: SeccompProfile | None = None


class EnvVar(_Model):
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


class ContainerPort(_Model):
    container_port: int
    host_port: int | None = None
    host_ip: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    name: str | None = None


class ResourceRequirements(_Model):
    requests: dict[str, QuantityValue] = {}
    limits: dict[str, QuantityValue] = {}

    def _request(self, resource: str) -> Quantity | None:
        # The API server copies a limit into a missing request (SetDefaults_Pod).
        return self.requests.get(resource) or self.limits.get(resource)

    # A limit of 0 is no limit, as the kubelet reads it (containerd leaves a 0 memory limit
    # unset; ResourceConfigForPod counts a zero limit as undeclared). Written as 0 to
    # memory.max it would kill the container at once.
    def memory_limit(self) -> int | None:
        q = self.limits.get("memory")
        return q.to_bytes() if q is not None and q.value != 0 else None

    def memory_request(self) -> int | None:
        q = self._request("memory")
        return q.to_bytes() if q is not None else None

    def cpu_limit_milli(self) -> int | None:
        q = self.limits.get("cpu")
        return q.to_milli() if q is not None and q.value != 0 else None

    def cpu_request_milli(self) -> int | None:
        q = self._request("cpu")
        return q.to_milli() if q is not None else None


class VolumeMount(_Model):
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""
    sub_path_expr: str = ""


class EmptyDirVolumeSource(_Model):
    medium: str = ""  # "" (node disk) or "Memory" (tmpfs)
    size_limit: QuantityValue | None = None


class Volume(_Model):
    name: str
    empty_dir: EmptyDirVolumeSource | None = None
    host_path: HostPathVolumeSource | None = None
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    persistent_volume_claim: PersistentVolumeClaimVolumeSource | None = None
    downward_api: DownwardAPIVolumeSource | None = None
    projected: ProjectedVolumeSource | None = None

    @model_validator(mode="after")
    def _default_source(self) -> Volume:
        # SetDefaults_Volume: a volume with no source is an emptyDir.
        if all(getattr(self, f) is None for f in type(self).model_fields if f != "name"):
            self.empty_dir = EmptyDirVolumeSource()
        return self


class Container(_Model):
    name: str
    image: str = ""
    command: list[str] = []
    args: list[str] = []
    env: list[EnvVar] = []
    env_from: list[EnvFromSource] = []
    working_dir: str | None = None
    ports: list[ContainerPort] = []
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    volume_mounts: list[VolumeMount] = []
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    security_context: SecurityContext | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: Lifecycle | None = None
    restart_policy: str | None = None  # init containers only: "Always" makes a sidecar
    stdin: bool = False       # a stdin the supervisor holds open for attach (pipe or pty)
    stdin_once: bool = False  # closed once the first attach session with stdin ends
    tty: bool = False         # the container's stdio is a terminal (a pty in its devpts)
    termination_message_path: str = "/dev/termination-log"

    def pull_policy(self) -> str:
        """imagePullPolicy, defaulted like SetDefaults_Container: Always for :latest or no tag."""
        if self.image_pull_policy:
            return self.image_pull_policy
        name = self.image.split("@", 1)[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        return "Always" if "@" not in self.image and tag in ("", "latest") else "IfNotPresent"


class PodDNSConfigOption(_Model):
    name: str
    value: str | None = None


class PodDNSConfig(_Model):
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[PodDNSConfigOption] = []


class HostAlias(_Model):
    ip: str
    hostnames: list[str] = []


class PodSpec(_Model):
    containers: list[Container] = []
    init_containers: list[Container] = []
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    hostname: str | None = None
    subdomain: str | None = None
    termination_grace_period_seconds: int = 30
    active_deadline_seconds: int | None = None  # typed and checked; the runtime ignores it
    share_process_namespace: bool = False
    volumes: list[Volume] = []
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    dns_policy: Literal["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"] = (
        "ClusterFirst")
    dns_config: PodDNSConfig | None = None
    host_aliases: list[HostAlias] = []
    security_context: PodSecurityContext | None = None


class Pod(_Model):
    api_version: str = "v1"
    kind: str = "Pod"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec


# --- volumes whose source minipod ignores -----------------------------------------------

def _volumes(doc: dict) -> list:
    vols = doc.get("spec").get("volumes") if isinstance(doc.get("spec"), dict) else None
    return vols if isinstance(vols, list) else []


def _volume_source_problems(raw: dict) -> list[str]:
    """validateVolumeSource: one source per volume (checked on the raw document, because
    sources minipod ignores are gone from the model)."""
    problems = []
    for i, v in enumerate(_volumes(raw)):
        # Only real source names: an unknown key is its own "unknown field" problem already.
        sources = [k for k, val in v.items() if k != "name" and val is not None
                   and k in FIELDS["Volume"]] if isinstance(v, dict) else []
        if len(sources) > 1:
            problems.append(f"spec.volumes[{i}]: may not specify more than one volume source "
                            f"(got {', '.join(sources)})")
    return problems


def _unsupported_volumes(raw: dict, kept: dict) -> set[str]:
    """Names of volumes whose only source was dropped as not implemented (configMap...)."""
    names = set()
    for r, k in zip(_volumes(raw), _volumes(kept)):
        if isinstance(r, dict) and isinstance(k, dict) and isinstance(r.get("name"), str):
            had_source = any(v is not None for key, v in r.items() if key != "name")
            if had_source and set(k) <= {"name"}:
                names.add(r["name"])
    return names


def _drop_volumes(pod: Pod, names: set[str]) -> list[str]:
    """Remove ignored volumes and the mounts of them, warning about each mount."""
    warnings = []
    for path, c, _ in each_container(pod.spec):
        for i, m in enumerate(c.volume_mounts):
            if m.name in names:
                warnings.append(f"{path}.volumeMounts[{i}]: volume {_show(m.name)} is ignored, so is"
                                " this mount")
        c.volume_mounts = [m for m in c.volume_mounts if m.name not in names]
    pod.spec.volumes = [v for v in pod.spec.volumes if v.name not in names]
    return warnings


# --- pydantic errors for humans -------------------------------------------------------------

def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out = f"{out}.{_key(part)}" if out else _key(part)
    return out


def _reword(err: dict) -> str:
    kind, v, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        msg = "required"
    elif kind == "extra_forbidden":
        msg = "unknown field"
    elif kind.startswith("int_"):
        msg = f"expected an integer (got {_show(v)})"
    elif kind == "string_type":
        msg = f"expected a string (got {_show(v)})"
        if isinstance(v, (int, float, bool)):
            msg += ": put it in quotes"
    elif kind.startswith("bool_"):
        msg = f"expected true or false (got {_show(v)})"
    elif kind == "list_type":
        msg = f"expected a list (got {_show(v)})"
        if isinstance(v, dict):
            msg += ": start each item with '- '"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        msg = f"expected a mapping (got {_show(v)})"
    elif kind == "literal_error":
        choices = ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
        msg = f"must be one of {choices} (got {_show(v)})"
    elif kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
    else:
        msg = err["msg"]
    path = _loc(err["loc"])
    return f"{path}: {msg}" if path else msg


# --- YAML --------------------------------------------------------------------------------------

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """A safe loader that records duplicate mapping keys instead of keeping the last silently."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[yaml.Mark, str, yaml.Mark]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[tuple[str, str], yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # `<<:` merges may override on purpose
            key = (key_node.tag, key_node.value)
            if key in seen:
                self.duplicates.append((key_node.start_mark, key_node.value, seen[key]))
            else:
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


# A timestamp (`2024-01-02`) is kept as the text written: kubectl sends YAML as JSON, where it
# is a string, and a datetime in the document would break the plan's JSON.
_Loader.add_constructor("tag:yaml.org,2002:timestamp",
                        lambda loader, node: loader.construct_scalar(node))




def _int(loader: _Loader, node: yaml.ScalarNode) -> int:
    # Python refuses to turn more than 4300 digits into an int (ValueError, not a YAML error);
    # no field takes more than 19.
    if len(node.value) > 100:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {len(node.value)} characters is too large",
            node.start_mark)
    return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _int)


def _at(mark: yaml.Mark) -> str:
    return f"{mark.line + 1}:{mark.column + 1}"  # PyYAML marks are 0-based


def _char_at(text: str, mark: yaml.Mark) -> str:
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    return line[mark.column] if mark.column < len(line) else ""


def _parse_yaml(text: str, source: str) -> list[Any]:
    """All documents of the stream, empty ones as None."""
    loader = _Loader(text)
    try:
        docs = []
        while loader.check_data():
            docs.append(loader.get_data())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if e.context and e.context_mark and e.problem and _at(e.context_mark) != _at(mark):
            problem += f" ({e.context} at {_at(e.context_mark)})"
        if mark and _char_at(text, mark) == "\t":
            problem += ": a tab (indent YAML with spaces)"
        raise SpecError(f"{source}:{_at(mark)}" if mark else source, [problem]) from None
    except yaml.reader.ReaderError as e:
        # No mark: the reader refuses a control character before any token is read.
        pos = e.position if isinstance(e.position, int) else 0
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or " ")
        raise SpecError(f"{source}:{line}:{col}", [
            f"unacceptable character #x{char:04x}: control characters are not allowed in YAML"
            " (write it as an escape in a double-quoted string)"]) from None
    except yaml.YAMLError as e:
        raise SpecError(source, [f"invalid YAML: {' '.join(str(e).split())}"]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        msgs = [(mark, f"duplicate key {_show(key)} (first at line {first.line + 1})")
                for mark, key, first in loader.duplicates]
        if len(msgs) == 1:
            raise SpecError(f"{source}:{_at(msgs[0][0])}", [msgs[0][1]])
        raise SpecError(source, [f"{_at(mark)}: {msg}" for mark, msg in msgs])
    return docs


# --- load ----------------------------------------------------------------------------------------

@dataclass
class LoadedPod:
    pod: Pod
    raw: dict  # the document as written
    index: int  # 0-based document number in the file
    source: str = ""  # the file name (or <stdin>), for messages


@dataclass
class LoadResult:
    pods: list[LoadedPod]
    warnings: list[str] = field(default_factory=list)
    objects: objects_.Objects = field(default_factory=lambda: objects_.Objects())


# k8s.io/apiserver names.SimpleNameGenerator: generateName + 5 random characters.
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def _from_template(doc: dict, kind: str) -> tuple[dict, str]:
    """The Pod a workload's spec.template describes, named <name>-pod as podman names it."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    tmpl = doc["spec"].get("template") if isinstance(doc["spec"].get("template"), dict) else {}
    tmeta = tmpl.get("metadata") if isinstance(tmpl.get("metadata"), dict) else {}
    name = f"{meta.get('name') or 'workload'}-pod"
    pod_meta = {k: v for k, v in tmeta.items() if k in ("labels", "annotations")}
    pod_meta["name"] = name
    if meta.get("namespace"):
        pod_meta["namespace"] = meta["namespace"]
    pod_doc = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
               "spec": tmpl.get("spec") if isinstance(tmpl.get("spec"), dict) else {}}
    claims = doc["spec"].get("volumeClaimTemplates") if kind == "StatefulSet" else None
    if isinstance(claims, list) and claims:
        pod_doc["spec"] = _claim_volumes(dict(pod_doc["spec"]), claims, meta.get("name") or "")
    replicas = doc["spec"].get("replicas")
    note = f'running its pod template as pod "{name}"'
    if isinstance(replicas, int) and replicas > 1:
        note += f" (one pod, not {replicas} replicas)"
    note += "; replicas, selectors and rollouts are not implemented"
    return pod_doc, note


def _claim_volumes(spec: dict, claims: list, workload: str) -> dict:
    """A StatefulSet's volumeClaimTemplates as the persistentVolumeClaim volumes of its pod:
    template T of StatefulSet S is claim T-S-0 for the first replica, as the controller names
    it (minipod runs that one replica); a named local volume then, like any claim."""
    volumes = list(spec.get("volumes") or []) if isinstance(spec.get("volumes"), list) else []
    have = {v.get("name") for v in volumes if isinstance(v, dict)}
    for t in claims:
        name = t.get("metadata", {}).get("name") if isinstance(t, dict) and \
            isinstance(t.get("metadata"), dict) else None
        if isinstance(name, str) and name and name not in have:
            volumes.append({"name": name,
                            "persistentVolumeClaim": {"claimName": f"{name}-{workload}-0"}})
    spec["volumes"] = volumes
    return spec


def _template_path(message: str, template: str = "spec.template.") -> str:
    """Point a problem found in a converted template back at the workload's own paths."""
    for top in ("spec.", "metadata."):
        if message.startswith(top):
            return template + message
    return message


_JSON_SCALARS = (str, int, float, bool, type(None))


def _json_problems(node: Any, path: str = "") -> Iterator[str]:
    """What JSON (the API server's wire format) cannot hold, or a syscall cannot take: YAML's
    binary and set values, complex keys, and NUL bytes (execve, mount and open end a C string
    there: `command: ["a\\0b"]` would run `a`)."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{path}.{_key(k)}" if path else _key(k)
            if not isinstance(k, _JSON_SCALARS):
                yield f"{path or 'document'}: a mapping key must be a string (got {_show(k)})"
            elif isinstance(k, str) and "\0" in k:
                yield f"{p}: a key must not contain a NUL byte"
            else:
                yield from _json_problems(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _json_problems(v, f"{path}[{i}]")
    elif isinstance(node, str):
        if "\0" in node:
            yield f"{path}: must not contain a NUL byte (got {_show(node)})"
    elif not isinstance(node, _JSON_SCALARS):
        yield (f"{path}: a YAML {type(node).__name__} value has no JSON form (quote it to make it"
               " a string)")


def _load_pod(doc: dict) -> tuple[Pod | None, list[str], list[str]]:
    """(pod or None, problems, warnings) for one `kind: Pod` document."""
    problems = list(_json_problems(doc))
    if problems:
        return None, problems, []
    kept, problems, warnings = walk(doc)
    problems += _volume_source_problems(doc)
    try:
        pod = Pod.model_validate(kept)
    except ValidationError as e:
        return None, problems + [_reword(err) for err in e.errors()], warnings
    meta = pod.metadata
    if not meta.name and meta.generate_name:
        meta.name = meta.generate_name[:58] + "".join(random.choices(_NAME_CHARS, k=5))
    problems += check(pod)
    warnings += security_warnings(pod)
    warnings += _drop_volumes(pod, _unsupported_volumes(doc, kept))
    return pod, problems, warnings


def loads(text: str, source: str = "<string>", given: objects_.Objects | None = None,
          pods_wanted: bool = True, store=None) -> LoadResult:
    """Load every v1 Pod of a YAML stream; raise SpecError listing all problems of all documents.
    ConfigMap, Secret and PersistentVolumeClaim documents are kept in the result's `objects`;
    `given` holds those of other files (`run --configmap`), which the file's own override;
    `store` (minipod.objectstore.Store) is asked for the objects neither holds."""
    docs = _parse_yaml(text, source)
    objs = objects_.Objects()
    present = [(i, d) for i, d in enumerate(docs) if d is not None]
    multi = len(present) > 1
    pods: list[LoadedPod] = []
    problems: list[str] = []
    warnings: list[str] = []
    skipped: list[str] = []
    for index, doc in present:
        prefix = f"doc {index + 1}: " if multi else ""
        if not isinstance(doc, dict):
            problems.append(f"{prefix}expected a Kubernetes object (a mapping), got {_show(doc)}")
            continue
        kind = doc.get("kind")
        if not isinstance(kind, str) or not kind:
            problems.append(f"{prefix}kind: required (minipod runs kind: Pod)")
            continue
        if kind in workloads.KINDS:
            # The whole object as the API server checks it, then (what podman kube play does)
            # its pod template run as one pod; a CronJob's is checked, not run.
            wl_problems = workloads.problems(doc, kind)
            problems += [prefix + p for p in wl_problems]
            if wl_problems and wl_problems[0].startswith("apiVersion:"):
                continue
            holder = {"metadata": doc.get("metadata"),
                      "spec": {"template": workloads.template(doc, kind),
                               "replicas": (doc.get("spec") or {}).get("replicas"),
                               "volumeClaimTemplates":
                                   (doc.get("spec") or {}).get("volumeClaimTemplates")}}
            pod_doc, note = _from_template(holder, kind)
            pod, doc_problems, doc_warnings = _load_pod(pod_doc)
            tpath = workloads.template_path(kind)
            # The pod's name is made from the workload's, whose own check names the problem.
            problems += [prefix + _template_path(p, tpath) for p in doc_problems
                         if not p.startswith("metadata.name:")]
            if kind == "CronJob":
                note = "checked, not run: minipod has no controller to start its jobs on schedule"
            warnings.append(f"{source}: document {index + 1} ({kind}): {note}")
            warnings += [f"{source}: {prefix}{_template_path(w, tpath)}" for w in doc_warnings]
            if pod is not None and kind != "CronJob":
                pods.append(LoadedPod(pod=pod, raw=pod_doc, index=index, source=source))
            elif pod is not None:
                skipped.append(kind)
            continue
        if kind in objects_.KINDS:
            skipped.append(kind)  # named if the file holds no pod
            obj, doc_problems = objects_.parse(doc)
            problems += [f"{prefix}{p}" if prefix else f"{kind} {p}" for p in doc_problems]
            if obj is not None:
                objs.add(obj)
            continue
        if not pods_wanted:  # a --configmap file
            problems.append(f"{prefix}kind: a --configmap file holds ConfigMap and Secret "
                            f"documents only (got {_show(kind)})")
            continue
        if kind != "Pod":
            if kind.lower() == "pod":  # kinds are case-sensitive
                problems.append(f"{prefix}kind: must be 'Pod' (got {_show(kind)})")
            else:
                skipped.append(_show(kind)[1:-1])
                warnings.append(f"{source}: document {index + 1} ({_show(kind)[1:-1]}): skipped:"
                                " minipod runs v1 Pods only")
            continue
        if doc.get("apiVersion") != "v1":
            problems.append(f"{prefix}apiVersion: must be v1 for kind Pod (got "
                            f"{_show(doc.get('apiVersion'))})")
            continue
        pod, doc_problems, doc_warnings = _load_pod(doc)
        problems += [prefix + p for p in doc_problems]
        warnings += [f"{source}: {prefix}{w}" for w in doc_warnings]
        if pod is not None:
            pods.append(LoadedPod(pod=pod, raw=doc, index=index, source=source))
    # What the pods may read: the file's objects, then the given ones, then the store's.
    every = objects_.Objects(fallback=store)
    every.update(given or objects_.Objects())
    every.update(objs)
    if not problems:
        from minipod.spec import source_checks

        for lp in pods:
            prefix = f"doc {lp.index + 1}: " if multi else ""
            problems += [prefix + p for p in source_checks.missing(lp.pod, every)]
    if problems:
        raise SpecError(source, problems)
    if not pods and not pods_wanted:
        return LoadResult(pods=[], warnings=warnings, objects=objs)
    if not pods:
        found = f" (found {', '.join(skipped)})" if skipped else " (the file is empty)"
        raise SpecError(source, [f"no v1 Pod in this file{found}"])
    return LoadResult(pods=pods, warnings=warnings, objects=every)


def load(path: str, configmaps: list[str] | tuple[str, ...] = (), store=None) -> LoadResult:
    """Load a manifest file ("-" reads stdin), with the ConfigMaps and Secrets of the files
    `configmaps` (`run --configmap FILE`), then of `store`, for its pods to refer to."""
    given = objects_.Objects()
    for cm in configmaps:
        given.update(_read(cm, lambda text, src: loads(text, src, pods_wanted=False)).objects)
    return _read(path, lambda text, src: loads(text, src, given, store=store))


def _read(path: str, fn) -> LoadResult:
    if path == "-":
        return fn(sys.stdin.read(), "<stdin>")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SpecError(path, [f"cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise SpecError(path, [f"not UTF-8 text: {e.reason} at byte {e.start}"]) from None
    return fn(text, path)
