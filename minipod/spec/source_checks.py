"""Named checks of the volume and env sources that read other objects or the pod's own fields,
and the check that what they refer to exists.

A cluster starts a pod whose ConfigMap is missing and keeps it waiting (`FailedMount` for a
volume, `CreateContainerConfigError` for env) until the object appears. minipod has no API server
to wait on: every object a pod can ever see is in its file or in a `--configmap` file, so a
missing non-optional one can never appear, and `validate`/`run` refuse the pod with the same
words the kubelet would use, before anything is created.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from minipod.spec.objects import Objects, key_problem
from minipod.spec.show import show

ENV_FIELDS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
              "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
              "status.podIPs")
VOLUME_FIELDS = ("metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels",
                 "metadata.annotations")
SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")
RESOURCES = tuple(f"{kind}.{r}" for kind in ("limits", "requests")
                  for r in ("cpu", "memory", "ephemeral-storage"))
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def env_name_problem(name: str) -> str | None:
    """validation.IsEnvVarName (what envFrom keys must be, after the prefix)."""
    if not name or not _ENV_NAME.match(name):
        return (f"{show(name)} is not a valid environment variable name (letters, digits, "
                "'_', '-' and '.', not starting with a digit)")
    return None


def _path_problem(path: str) -> str | None:
    """validateLocalNonReservedPath: relative, no '..', not starting with '..'."""
    if not path:
        return "required"
    if path.startswith("/"):
        return f"must be a relative path (got {show(path)})"
    if ".." in path.split("/"):
        return f"must not contain '..' (got {show(path)})"
    if path.startswith(".."):
        return f"must not start with '..' (got {show(path)})"
    return None


def _mode(p: str, mode: int | None) -> Iterator[str]:
    if mode is not None and not 0 <= mode <= 0o777:
        yield f"{p}: must be a file mode between 0 and 0777 (octal) (got {mode})"


def _items(p: str, items) -> Iterator[str]:
    for i, it in enumerate(items):
        if problem := key_problem(it.key):
            yield f"{p}.items[{i}].key: {problem}"
        if problem := _path_problem(it.path):
            yield f"{p}.items[{i}].path: {problem}"
        yield from _mode(f"{p}.items[{i}].mode", it.mode)


def field_ref_problem(path: str, allowed: tuple[str, ...]) -> str | None:
    if path in allowed or SUBSCRIPT.match(path):
        return None
    return f"unsupported fieldPath {show(path)} (supported: {', '.join(allowed)}, " \
           "metadata.labels['KEY'], metadata.annotations['KEY'])"


def _downward(p: str, items, containers: set[str]) -> Iterator[str]:
    for i, f in enumerate(items):
        q = f"{p}.items[{i}]"
        if problem := _path_problem(f.path):
            yield f"{q}.path: {problem}"
        yield from _mode(f"{q}.mode", f.mode)
        if bool(f.field_ref) == bool(f.resource_field_ref):
            yield f"{q}: must have exactly one of fieldRef and resourceFieldRef"
        if f.field_ref and (problem := field_ref_problem(f.field_ref.field_path, VOLUME_FIELDS)):
            yield f"{q}.fieldRef.fieldPath: {problem}"
        if f.resource_field_ref:
            yield from _resource(f"{q}.resourceFieldRef", f.resource_field_ref, containers,
                                 need_container=True)


def _resource(p: str, ref, containers: set[str], need_container: bool) -> Iterator[str]:
    if ref.resource not in RESOURCES:
        yield f"{p}.resource: unsupported resource {show(ref.resource)} (supported: " \
              f"{', '.join(RESOURCES)})"
    if need_container and not ref.container_name:
        yield f"{p}.containerName: required in a volume"
    elif ref.container_name and ref.container_name not in containers:
        yield f"{p}.containerName: no container named {show(ref.container_name)}"
    if ref.divisor is not None and ref.divisor.value <= 0:
        yield f"{p}.divisor: must be positive (got {ref.divisor})"


def check_sources(pod) -> Iterator[str]:
    from minipod.spec.checks import each_container

    names = {c.name for _, c, _ in each_container(pod.spec)}
    for i, v in enumerate(pod.spec.volumes):
        p = f"spec.volumes[{i}]"
        if v.host_path is not None and not v.host_path.path.startswith("/"):
            yield f"{p}.hostPath.path: must be an absolute path (got {show(v.host_path.path)})"
        for attr, yname in (("config_map", "configMap"), ("secret", "secret")):
            src = getattr(v, attr)
            if src is None:
                continue
            if not (src.name if attr == "config_map" else src.secret_name):
                yield f"{p}.{yname}.{'name' if attr == 'config_map' else 'secretName'}: required"
            yield from _mode(f"{p}.{yname}.defaultMode", src.default_mode)
            yield from _items(f"{p}.{yname}", src.items)
        if v.persistent_volume_claim is not None and \
                (problem := _claim_problem(v.persistent_volume_claim.claim_name)):
            yield f"{p}.persistentVolumeClaim.claimName: {problem}"
        if v.downward_api is not None:
            yield from _mode(f"{p}.downwardAPI.defaultMode", v.downward_api.default_mode)
            yield from _downward(f"{p}.downwardAPI", v.downward_api.items, names)
        if v.projected is not None:
            yield from _mode(f"{p}.projected.defaultMode", v.projected.default_mode)
            for j, s in enumerate(v.projected.sources):
                q = f"{p}.projected.sources[{j}]"
                given = [x for x in (s.config_map, s.secret, s.downward_api) if x is not None]
                if len(given) > 1:
                    yield f"{q}: may not specify more than one projection"
                for attr, yname in (("config_map", "configMap"), ("secret", "secret")):
                    src = getattr(s, attr)
                    if src is not None:
                        if not src.name:
                            yield f"{q}.{yname}.name: required"
                        yield from _items(f"{q}.{yname}", src.items)
                if s.downward_api is not None:
                    yield from _downward(f"{q}.downwardAPI", s.downward_api.items, names)
    for path, c, _ in each_container(pod.spec):
        for i, e in enumerate(c.env):
            src = e.value_from
            if src is None:
                continue
            q = f"{path}.env[{i}].valueFrom"
            if src.field_ref and (problem := field_ref_problem(src.field_ref.field_path,
                                                               ENV_FIELDS)):
                yield f"{q}.fieldRef.fieldPath: {problem}"
            if src.resource_field_ref:
                yield from _resource(f"{q}.resourceFieldRef", src.resource_field_ref, names,
                                     need_container=False)
            for attr, yname in (("config_map_key_ref", "configMapKeyRef"),
                                ("secret_key_ref", "secretKeyRef")):
                ref = getattr(src, attr)
                if ref is not None:
                    if not ref.name:
                        yield f"{q}.{yname}.name: required"
                    if problem := key_problem(ref.key):
                        yield f"{q}.{yname}.key: {problem}"
        for i, ef in enumerate(c.env_from):
            q = f"{path}.envFrom[{i}]"
            if (ef.config_map_ref is None) == (ef.secret_ref is None):
                yield f"{q}: must have exactly one of configMapRef and secretRef"
            ref = ef.config_map_ref or ef.secret_ref
            if ref is not None and not ref.name:
                yield f"{q}.{'configMapRef' if ef.config_map_ref else 'secretRef'}.name: required"
            if ef.prefix and (problem := env_name_problem(ef.prefix)):
                yield f"{q}.prefix: {problem}"
        for i, m in enumerate(c.volume_mounts):
            if m.sub_path and m.sub_path_expr:
                yield f"{path}.volumeMounts[{i}]: subPath and subPathExpr are mutually exclusive"
            if m.sub_path_expr and (m.sub_path_expr.startswith("/")
                                    or ".." in m.sub_path_expr.split("/")):
                yield (f"{path}.volumeMounts[{i}].subPathExpr: must be a relative path without "
                       f"'..' (got {show(m.sub_path_expr)})")


def _claim_problem(name: str) -> str | None:
    if not name:
        return "required"
    if len(name) > 253 or not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name):
        return f"{show(name)} is not a valid name (lower-case letters, digits, '-' and '.')"
    return None


# --- what the sources refer to -----------------------------------------------------------------

_HOW = ("put a {kind} document in the manifest, give its file with --configmap or create it "
        "with kubectl")


def _object(objs: Objects, kind: str, ns: str, name: str, optional: bool, p: str,
            reason: str) -> tuple[object, list[str]]:
    obj = objs.get(kind, ns, name)
    # Every namespace of a cluster has this one (the root CA publisher writes it) and every
    # `kubectl get -o yaml` of a pod projects it into kube-api-access-*, beside the token
    # minipod warns about: with no cluster there is no CA to publish, so it is left empty.
    if obj is None and not optional and (kind, name) != ("ConfigMap", "kube-root-ca.crt"):
        return None, [f"{p}: {reason}: {kind.lower()} {show(name)} not found ("
                      + _HOW.format(kind=kind) + ", or set optional: true)"]
    return obj, []


def _keys(obj, kind: str, ns: str, name: str, items, optional: bool, p: str,
          reason: str) -> list[str]:
    if obj is None or optional:
        return []
    return [f"{p}.items[{i}].key: {reason}: couldn't find key {it.key} in {kind} {ns}/{name}"
            for i, it in enumerate(items) if it.key not in obj.data]


def missing(pod, objs: Objects) -> list[str]:
    """Every non-optional ConfigMap, Secret or key the pod refers to that is not in `objs`."""
    from minipod.spec.checks import each_container

    ns = pod.metadata.namespace
    out: list[str] = []

    def volume(p: str, kind: str, name: str, items, optional: bool) -> None:
        obj, problems = _object(objs, kind, ns, name, optional, p, why)
        out.extend(problems)
        out.extend(_keys(obj, kind, ns, name, items, optional, p, why))

    for i, v in enumerate(pod.spec.volumes):
        p = f"spec.volumes[{i}]"
        why = f"FailedMount: volume {show(v.name)}"
        if v.config_map is not None:
            volume(f"{p}.configMap", "ConfigMap", v.config_map.name, v.config_map.items,
                   v.config_map.optional)
        if v.secret is not None:
            volume(f"{p}.secret", "Secret", v.secret.secret_name, v.secret.items,
                   v.secret.optional)
        for j, s in enumerate(v.projected.sources if v.projected else []):
            if s.config_map is not None:
                volume(f"{p}.projected.sources[{j}].configMap", "ConfigMap", s.config_map.name,
                       s.config_map.items, s.config_map.optional)
            if s.secret is not None:
                volume(f"{p}.projected.sources[{j}].secret", "Secret", s.secret.name,
                       s.secret.items, s.secret.optional)
    why = "CreateContainerConfigError"
    for path, c, _ in each_container(pod.spec):
        for i, e in enumerate(c.env):
            src = e.value_from
            for attr, kind, yname in (("config_map_key_ref", "ConfigMap", "configMapKeyRef"),
                                      ("secret_key_ref", "Secret", "secretKeyRef")):
                ref = getattr(src, attr) if src else None
                if ref is None:
                    continue
                p = f"{path}.env[{i}].valueFrom.{yname}"
                obj, problems = _object(objs, kind, ns, ref.name, ref.optional, p, why)
                out.extend(problems)
                if obj is not None and ref.key not in obj.env_data() and not ref.optional:
                    out.append(f"{p}.key: {why}: couldn't find key {ref.key} in {kind} "
                               f"{ns}/{ref.name}")
        for i, ef in enumerate(c.env_from):
            for ref, kind, yname in ((ef.config_map_ref, "ConfigMap", "configMapRef"),
                                     (ef.secret_ref, "Secret", "secretRef")):
                if ref is not None:
                    out.extend(_object(objs, kind, ns, ref.name, ref.optional,
                                       f"{path}.envFrom[{i}].{yname}", why)[1])
    return out
