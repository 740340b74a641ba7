"""The real field names of a v1 Pod, and which of them minipod ignores.

FIELDS maps an object type to {field name: type of its value}. Names come from kubernetes/api
core/v1/types.go (json tags; inline structs such as VolumeSource and ProbeHandler flattened) and
apimachinery meta/v1 for ObjectMeta. The value type is
    "Container"    an object, checked field by field,
    "[]Container"  a list of such objects,
    None           a scalar, a list of scalars, a map (labels, requests: any key is fine) or an
                   object minipod does not model (affinity, cloud volume sources): where such a
                   field is dropped, the API's own schema (kube_schema) checks its value.
walk() checks a manifest against this catalogue before pydantic sees it: a key that is not here
is an unknown field (kubectl's strict decoding refuses it too); a path in NOT_IMPLEMENTED gets a
warning and is dropped (or kept, if it is in TYPED, so that its type and range are still
checked); a path in SERVER_POPULATED is dropped silently, as `kubectl apply` does; a path in
REFUSED whose value asks for a protection minipod cannot give is an error.
Paths are dotted YAML names with `[]` for "any list item".
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from minipod.spec import cluster_fields, kube_schema
from minipod.spec.show import key as _key

FieldTypes = dict[str, "str | None"]


def _t(leaves: str = "", **objects: str) -> FieldTypes:
    """Space-separated scalar/map/opaque fields, plus object fields as name=Type."""
    fields: FieldTypes = dict.fromkeys(leaves.split())
    fields.update(objects)
    return fields


FIELDS: dict[str, FieldTypes] = {
    "Pod": _t("apiVersion kind status", metadata="ObjectMeta", spec="PodSpec"),
    "ObjectMeta": _t(
        "name generateName namespace selfLink uid resourceVersion generation creationTimestamp"
        " deletionTimestamp deletionGracePeriodSeconds labels annotations ownerReferences"
        " finalizers managedFields"),
    "PodSpec": _t(
        "restartPolicy terminationGracePeriodSeconds activeDeadlineSeconds dnsPolicy nodeSelector"
        " serviceAccountName serviceAccount automountServiceAccountToken nodeName hostNetwork"
        " hostPID hostIPC shareProcessNamespace hostname subdomain affinity schedulerName"
        " priorityClassName priority readinessGates runtimeClassName enableServiceLinks"
        " preemptionPolicy overhead topologySpreadConstraints setHostnameAsFQDN hostUsers"
        " schedulingGates resourceClaims hostnameOverride schedulingGroup evictionResponders"
        " ephemeralContainers",
        volumes="[]Volume", initContainers="[]Container", containers="[]Container",
        securityContext="PodSecurityContext", imagePullSecrets="[]LocalObjectReference",
        tolerations="[]Toleration", hostAliases="[]HostAlias", dnsConfig="PodDNSConfig",
        os="PodOS", resources="ResourceRequirements"),
    # initContainers use the same type (sidecars are init containers with restartPolicy Always).
    "Container": _t(
        "name image command args workingDir restartPolicy terminationMessagePath"
        " terminationMessagePolicy imagePullPolicy stdin stdinOnce tty resizePolicy"
        " restartPolicyRules volumeDevices",
        ports="[]ContainerPort", envFrom="[]EnvFromSource", env="[]EnvVar",
        resources="ResourceRequirements", volumeMounts="[]VolumeMount",
        livenessProbe="Probe", readinessProbe="Probe", startupProbe="Probe",
        lifecycle="Lifecycle", securityContext="SecurityContext"),
    "ContainerPort": _t("name hostPort containerPort protocol hostIP"),
    "EnvVar": _t("name value", valueFrom="EnvVarSource"),
    "EnvVarSource": _t(
        fieldRef="ObjectFieldSelector", resourceFieldRef="ResourceFieldSelector",
        configMapKeyRef="ConfigMapKeySelector", secretKeyRef="SecretKeySelector",
        fileKeyRef="FileKeySelector"),
    "ObjectFieldSelector": _t("apiVersion fieldPath"),
    "ResourceFieldSelector": _t("containerName resource divisor"),
    "ConfigMapKeySelector": _t("name key optional"),
    "SecretKeySelector": _t("name key optional"),
    "FileKeySelector": _t("volumeName path key optional"),
    "EnvFromSource": _t("prefix", configMapRef="ConfigMapEnvSource", secretRef="SecretEnvSource"),
    "ConfigMapEnvSource": _t("name optional"),
    "SecretEnvSource": _t("name optional"),
    "ResourceRequirements": _t("limits requests claims"),
    "VolumeMount": _t(
        "name readOnly recursiveReadOnly mountPath subPath mountPropagation subPathExpr"
        " bindMountOptions"),
    "Probe": _t(
        "initialDelaySeconds timeoutSeconds periodSeconds successThreshold failureThreshold"
        " terminationGracePeriodSeconds",
        exec="ExecAction", httpGet="HTTPGetAction", tcpSocket="TCPSocketAction",
        grpc="GRPCAction"),
    "ExecAction": _t("command"),
    "HTTPGetAction": _t("path port host scheme protocol", httpHeaders="[]HTTPHeader"),
    "HTTPHeader": _t("name value"),
    "TCPSocketAction": _t("port host"),
    "GRPCAction": _t("port service mode"),
    "Lifecycle": _t("stopSignal", postStart="LifecycleHandler", preStop="LifecycleHandler"),
    "LifecycleHandler": _t(
        exec="ExecAction", httpGet="HTTPGetAction", tcpSocket="TCPSocketAction",
        sleep="SleepAction"),
    "SleepAction": _t("seconds"),
    "SecurityContext": _t(
        "privileged runAsUser runAsGroup runAsNonRoot readOnlyRootFilesystem"
        " allowPrivilegeEscalation procMount windowsOptions",
        capabilities="Capabilities", seLinuxOptions="SELinuxOptions",
        seccompProfile="SeccompProfile", appArmorProfile="AppArmorProfile"),
    "Capabilities": _t("add drop"),
    "SELinuxOptions": _t("user role type level"),
    "SeccompProfile": _t("type localhostProfile"),
    "AppArmorProfile": _t("type localhostProfile"),
    "PodSecurityContext": _t(
        "runAsUser runAsGroup runAsNonRoot supplementalGroups supplementalGroupsPolicy fsGroup"
        " fsGroupChangePolicy seLinuxChangePolicy windowsOptions",
        seLinuxOptions="SELinuxOptions", sysctls="[]Sysctl", seccompProfile="SeccompProfile",
        appArmorProfile="AppArmorProfile"),
    "Sysctl": _t("name value"),
    "PodDNSConfig": _t("nameservers searches", options="[]PodDNSConfigOption"),
    "PodDNSConfigOption": _t("name value"),
    "HostAlias": _t("ip hostnames"),
    "Toleration": _t("key operator value effect tolerationSeconds"),
    "LocalObjectReference": _t("name"),
    "PodOS": _t("name"),
    "Volume": _t(
        "name gcePersistentDisk awsElasticBlockStore gitRepo nfs iscsi glusterfs rbd flexVolume"
        " cinder cephfs flocker fc azureFile vsphereVolume quobyte azureDisk photonPersistentDisk"
        " portworxVolume scaleIO storageos csi ephemeral",
        emptyDir="EmptyDirVolumeSource", hostPath="HostPathVolumeSource",
        configMap="ConfigMapVolumeSource", secret="SecretVolumeSource",
        persistentVolumeClaim="PersistentVolumeClaimVolumeSource",
        downwardAPI="DownwardAPIVolumeSource", projected="ProjectedVolumeSource",
        image="ImageVolumeSource"),
    "EmptyDirVolumeSource": _t("medium sizeLimit mode"),
    "HostPathVolumeSource": _t("path type"),
    "ConfigMapVolumeSource": _t("name defaultMode optional defaultUser", items="[]KeyToPath"),
    "SecretVolumeSource": _t("secretName defaultMode optional defaultUser", items="[]KeyToPath"),
    "KeyToPath": _t("key path mode user"),
    "PersistentVolumeClaimVolumeSource": _t("claimName readOnly"),
    "DownwardAPIVolumeSource": _t("defaultMode defaultUser", items="[]DownwardAPIVolumeFile"),
    "DownwardAPIVolumeFile": _t(
        "path mode user", fieldRef="ObjectFieldSelector", resourceFieldRef="ResourceFieldSelector"),
    "ProjectedVolumeSource": _t("defaultMode defaultUser", sources="[]VolumeProjection"),
    "VolumeProjection": _t(
        "clusterTrustBundle podCertificate", secret="SecretProjection",
        downwardAPI="DownwardAPIProjection", configMap="ConfigMapProjection",
        serviceAccountToken="ServiceAccountTokenProjection"),
    "SecretProjection": _t("name optional", items="[]KeyToPath"),
    "ConfigMapProjection": _t("name optional", items="[]KeyToPath"),
    "DownwardAPIProjection": _t(items="[]DownwardAPIVolumeFile"),
    "ServiceAccountTokenProjection": _t("audience expirationSeconds path user"),
    "ImageVolumeSource": _t("reference pullPolicy"),
}

# Written by the API server, not by users: `kubectl get -o yaml` output carries them back.
SERVER_POPULATED: frozenset[str] = frozenset({
    "status",
    "metadata.uid", "metadata.resourceVersion", "metadata.creationTimestamp",
    "metadata.generation", "metadata.managedFields", "metadata.selfLink",
    "metadata.ownerReferences", "metadata.deletionTimestamp",
    "metadata.deletionGracePeriodSeconds",
})


def _containers(*fields: str) -> set[str]:
    """The same container field in spec.containers[] and spec.initContainers[]."""
    return {f"spec.{kind}[].{f}" for kind in ("containers", "initContainers") for f in fields}


# Modelled in minipod.spec.spec but not acted on by the runtime: a warning names each one found,
# and the value is kept, so that a wrong type or an out-of-range value is still an error
# (`hostPort: -1` is wrong whether or not minipod maps ports).
TYPED: frozenset[str] = frozenset({
    "spec.activeDeadlineSeconds",
    *_containers("terminationMessagePath"),
    # The app containers' hostPorts are mapped (net/hostport.py); as in Kubernetes, an init
    # container's are not.
    "spec.initContainers[].ports[].hostPort", "spec.initContainers[].ports[].hostIP",
})

_VOLUMES_BUILT = ("name", "emptyDir", "hostPath", "configMap", "secret", "persistentVolumeClaim",
                  "downwardAPI", "projected")

# Real fields minipod does not act on yet: a warning names each one found, then it is dropped.
# Shrink this as features land.
NOT_IMPLEMENTED: frozenset[str] = TYPED | frozenset({
    # --- not modelled: meaningless without a cluster, or not built ----------------------------
    "metadata.finalizers",
    *(f"spec.{f}" for f in (
        "activeDeadlineSeconds nodeSelector serviceAccountName serviceAccount"
        " automountServiceAccountToken nodeName imagePullSecrets affinity schedulerName"
        " tolerations priorityClassName priority readinessGates runtimeClassName"
        " enableServiceLinks preemptionPolicy overhead topologySpreadConstraints"
        " setHostnameAsFQDN os hostUsers schedulingGates resourceClaims resources"
        " hostnameOverride schedulingGroup evictionResponders ephemeralContainers").split()),
    *(f"spec.securityContext.{f}" for f in (
        "seLinuxOptions windowsOptions supplementalGroupsPolicy"
        " appArmorProfile seLinuxChangePolicy").split()),
    # Every volume source minipod does not build (minipod/pod/volumes/ builds the others). The
    # loader also drops such a volume and its mounts.
    *(f"spec.volumes[].{f}" for f in FIELDS["Volume"] if f not in _VOLUMES_BUILT),
    "spec.volumes[].emptyDir.mode",
    # Alpha fields (owners other than root), and the projections that need a cluster.
    *(f"spec.volumes[].{v}.defaultUser" for v in (
        "configMap", "secret", "downwardAPI", "projected")),
    *(f"spec.volumes[].{v}.items[].user" for v in ("configMap", "secret", "downwardAPI")),
    *(f"spec.volumes[].projected.sources[].{v}" for v in (
        "serviceAccountToken", "clusterTrustBundle", "podCertificate")),
    *(f"spec.volumes[].projected.sources[].{v}.items[].user" for v in (
        "configMap", "secret", "downwardAPI")),
    *_containers(
        "resizePolicy", "restartPolicyRules", "volumeDevices",
        "terminationMessagePolicy", "resources.claims",
        "env[].valueFrom.fileKeyRef",
        "volumeMounts[].recursiveReadOnly", "volumeMounts[].mountPropagation",
        "volumeMounts[].bindMountOptions",
        *(f"securityContext.{f}" for f in (
            "windowsOptions", "seLinuxOptions", "appArmorProfile")),
        "lifecycle.stopSignal",
        *(f"{p}.httpGet.protocol" for p in (
            "livenessProbe", "readinessProbe", "startupProbe",
            "lifecycle.postStart", "lifecycle.preStop")),
    ),
})


# --- security controls minipod cannot apply yet ------------------------------------------------
#
# Ignoring a field with a warning is fine when ignoring it gives the pod *more* isolation than
# it asked for (procMount: Unmasked, a hostPath volume) or
# changes nothing it could rely on (windowsOptions on Linux). It is not fine when the field asks
# for a protection: a pod that says runAsNonRoot or seccompProfile RuntimeDefault was written on
# the assumption that it gets it, and running it without would be a silent downgrade. Those
# values are refused (in `validate` too) until the runtime implements them; the value that asks
# for nothing more than minipod gives (runAsNonRoot: false, seccomp Unconfined, hostUsers: true)
# is still only a warning.
#
# What the runtime does apply, and so is not here (minipod.pod.plan, pod/security.py,
# pod/enter.py, pod/rootfs.py): privileged, capabilities add/drop, runAsUser, runAsGroup,
# runAsNonRoot, supplementalGroups, fsGroup, seccompProfile, sysctls, procMount Default,
# allowPrivilegeEscalation: false (no_new_privs), readOnlyRootFilesystem, volumeMounts readOnly,
# the default masked and read-only /proc and /sys paths, containerd's default capabilities.
#
# AppArmor and SELinux, decided as a node without them decides (this is what minipod is):
# an AppArmor profile other than Unconfined is refused, as the kubelet refuses such a pod on a
# host without AppArmor ("Cannot enforce AppArmor: AppArmor is not enabled on the host") and
# containerd does ("apparmor is not supported"); seLinuxOptions is a warning, as containerd
# ignores the labels on a host without SELinux and the pod runs.

def _profile(v: Any) -> bool:
    # seccompProfile / appArmorProfile: only Unconfined is what minipod does (no profile).
    return not (isinstance(v, dict) and v.get("type") == "Unconfined")


def _false(v: Any) -> bool:
    return v is False


_SECURITY_CONTEXTS = ("spec.securityContext", "spec.containers[].securityContext",
                      "spec.initContainers[].securityContext")

# path -> (does this value ask for a protection minipod lacks?, what it asks for)
REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{f"{sc}.appArmorProfile": (_profile, "an AppArmor profile") for sc in _SECURITY_CONTEXTS},
    "spec.hostUsers": (_false, "a user namespace"),
}


# The same holds for the annotation that asked for an AppArmor profile before the field existed
# (the API server still copies it into the field): checks.check_security refuses it. The seccomp
# annotations do nothing since Kubernetes 1.27 (the API server no longer maps them, the kubelet
# no longer reads them): checks.security_warnings says so with the API server's warning.
REFUSED_ANNOTATIONS: dict[str, str] = {
    "container.apparmor.security.beta.kubernetes.io/": "an AppArmor profile",
}
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"
REFUSAL = "not supported by minipod yet: refusing to run with less protection than asked for"


def refused(pattern: str) -> str:
    """The message for a REFUSED path whose value asks for protection."""
    return f"{REFUSAL} ({REFUSED[pattern][1]})"


def walk(doc: dict) -> tuple[dict, list[str], list[str]]:
    """Check a raw Pod document: (copy without ignored fields, problems, warnings), each problem
    and warning starting with the exact path, e.g. `spec.containers[0].imagee: unknown field`."""
    w = _Walk()
    return w.object(doc, "Pod", "", "", quiet=False), w.problems, w.warnings


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Walk:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def object(self, node: dict, type_name: str, path: str, pattern: str, quiet: bool) -> dict:
        fields = FIELDS[type_name]
        kept = {}
        for key, value in node.items():
            name = str(key)
            p, pat = _join(path, _key(key)), _join(pattern, name)
            if name not in fields:
                self.problems.append(f"{p}: unknown field{_did_you_mean(name, fields)}")
                continue
            if value is None or pat in SERVER_POPULATED:
                continue  # null is "unset" to the API server's JSON decoder
            check = REFUSED.get(pat)
            if check and check[0](value):
                self.problems.append(f"{p}: {refused(pat)}")
                continue
            ignored = pat in NOT_IMPLEMENTED
            if ignored and not quiet:
                why = cluster_fields.warning(pat) or "not implemented by minipod yet, ignored"
                self.warnings.append(f"{p}: {why}")
            # Inside an ignored field unknown names are still errors: kubectl would refuse them.
            dropped = quiet or (ignored and pat not in TYPED)
            if fields[name] is None and dropped:
                # Not modelled and not kept: the API's own schema checks what pydantic won't.
                self.problems += self.schema_value(value, type_name, name, p)
            else:
                value = self.value(value, fields[name], p, pat, dropped)
            if not ignored or pat in TYPED:
                kept[key] = value
        return kept

    def schema_value(self, value: Any, type_name: str, name: str, path: str) -> list[str]:
        code = kube_schema.types().get(type_name, {}).get(name)
        if code is None:
            return []
        return kube_schema.value_problems(value, kube_schema.strip(code)[0], path,
                                          schema_object)

    def value(self, value: Any, type_name: str | None, path: str, pattern: str, quiet: bool) -> Any:
        if type_name is None:
            return value
        if type_name.startswith("[]"):
            if not isinstance(value, list):
                return value  # pydantic reports the wrong type
            return [self.object(v, type_name[2:], f"{path}[{i}]", pattern + "[]", quiet)
                    if isinstance(v, dict) else v for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        return self.object(value, type_name, path, pattern, quiet)


def schema_object(node: dict, type_name: str, path: str) -> list[str]:
    """Problems of an object of a kube_schema type: unknown fields, wrong value types, missing
    required fields (kubectl's strict decoding and the API server's validation)."""
    fields = kube_schema.types()[type_name]
    problems = []
    for key, value in node.items():
        name, p = str(key), _join(path, _key(key))
        if name not in fields:
            problems.append(f"{p}: unknown field{_did_you_mean(name, fields)}")
        elif value is not None:
            problems += kube_schema.value_problems(value, kube_schema.strip(fields[name])[0], p,
                                                   schema_object)
    for name, code in fields.items():
        if kube_schema.strip(code)[1] and node.get(name) is None:
            problems.append(f"{_join(path, name)}: required")
    return problems


def _did_you_mean(name: str, fields) -> str:
    close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6) \
        if len(name) < 100 else []
    return f" (did you mean {close[0]!r}?)" if close else ""


_YAML_NAMES = {"host_pid": "hostPID", "host_ipc": "hostIPC", "host_ip": "hostIP",
               "downward_api": "downwardAPI"}


def yaml_name(name: str) -> str:
    """A model attribute's name in YAML: camelCase, with the API's few capitalised acronyms."""
    if name in _YAML_NAMES:
        return _YAML_NAMES[name]
    first, *rest = name.split("_")
    return first + "".join(w.capitalize() for w in rest)
