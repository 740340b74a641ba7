"""securityContext -> the resolved security settings of a container, as the kubelet resolves them.

Pod-level fields are defaults; a container's own field wins (pkg/securitycontext
DetermineEffectiveSecurityContext). What comes out is plain data the plan carries down to the
process that enters the container (minipod.pod.enter), which imports nothing from here:

  * `user`: the "uid[:gid]" or image user to resolve in the container's /etc/passwd;
  * `groups`: supplementalGroups then fsGroup, added to the image's groups of the user (what
    containerd does: the user's /etc/group memberships, then the CRI's supplemental groups);
  * `seccomp`: a rendered profile (containerd's RuntimeDefault for the container's capabilities,
    or a Localhost file read now) or None for Unconfined -- and None when privileged, as the
    kubelet and containerd give a privileged container no filter;
  * `config_error`: the kubelet's runAsNonRoot verdict, reported as CreateContainerConfigError
    when the container would start (verifyRunAsNonRoot, pkg/kubelet/kuberuntime).

The default with no seccompProfile anywhere is Unconfined, as in Kubernetes unless the kubelet
runs with --seccomp-default (SeccompDefault).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from minipod.errors import SpecError


@dataclass
class ContainerSecurity:
    groups: list[int] = field(default_factory=list)  # extra supplementary groups
    seccomp_type: str = "Unconfined"                 # RuntimeDefault | Unconfined | Localhost
    seccomp: dict | None = None                      # the profile to load, None: no filter
    config_error: str = ""                           # CreateContainerConfigError message
    proc_mount: str = "Default"

    @classmethod
    def from_json(cls, d: dict | None) -> "ContainerSecurity":
        return cls(**d) if d else cls()


@dataclass
class PodSecurity:
    fs_group: int | None = None
    fs_group_change_policy: str = "Always"
    sysctls: list[tuple[str, str]] = field(default_factory=list)  # dotted name, value

    @classmethod
    def from_json(cls, d: dict | None) -> "PodSecurity":
        if not d:
            return cls()
        return cls(d.get("fs_group"), d.get("fs_group_change_policy") or "Always",
                   [(n, v) for n, v in d.get("sysctls") or []])


def pod_security(psc) -> PodSecurity:
    from minipod.spec.checks import sysctl_dots

    if psc is None:
        return PodSecurity()
    return PodSecurity(psc.fs_group, psc.fs_group_change_policy or "Always",
                       [(sysctl_dots(s.name), s.value) for s in psc.sysctls])


def _pick(sc, psc, attr: str):
    v = getattr(sc, attr, None) if sc is not None else None
    return v if v is not None else (getattr(psc, attr, None) if psc is not None else None)


def verify_run_as_non_root(pod_name: str, namespace: str, uid: str, container: str,
                           non_root: bool, run_as_user: int | None, image_user: str) -> str:
    """The kubelet's verifyRunAsNonRoot, with its messages; "" when the container may start.
    The image user is judged as the kubelet judges it (getImageUser): only a numeric uid can
    be verified; an empty user is root."""
    if not non_root:
        return ""
    where = f'(pod: "{pod_name}_{namespace}({uid})", container: {container})'
    if run_as_user is not None:
        return f"container's runAsUser breaks non-root policy {where}" if run_as_user == 0 else ""
    name = (image_user or "").partition(":")[0]
    if name == "" or name == "0":
        return f"container has runAsNonRoot and image will run as root {where}"
    if not name.isdigit():
        return (f"container has runAsNonRoot and image has non-numeric user ({name}), "
                f"cannot verify user is non-root {where}")
    return ""


def seccomp_for(sc, psc, caps: list[str], privileged: bool, seccomp_root: str,
                path: str, source: str = "manifest") -> tuple[str, dict | None]:
    """(type, profile to load). `path` names the container for errors."""
    from minipod.kernel import seccomp

    prof = _pick(sc, psc, "seccomp_profile")
    kind = prof.type if prof else "Unconfined"
    if privileged or kind == "Unconfined":
        return kind, None
    field_path = (f"{path}.securityContext.seccompProfile" if sc is not None
                  and sc.seccomp_profile is not None else "spec.securityContext.seccompProfile")
    if not seccomp.available():
        raise SpecError(source, [f"{field_path}: libseccomp's Python binding is missing "
                                     "(scripts/setup.sh install installs python3-seccomp)"])
    if kind == "RuntimeDefault":
        return kind, seccomp.runtime_default(caps)
    file = os.path.join(seccomp_root, prof.localhost_profile or "")
    try:
        return kind, seccomp.read_profile(file)
    except seccomp.SeccompError as e:
        raise SpecError(source, [f"{field_path}.localhostProfile: {e}"]) from None


def resolve(pod, c, path: str, uid: str, caps: list[str], privileged: bool, image_user: str,
            seccomp_root: str, source: str = "manifest") -> ContainerSecurity:
    """The container's security settings. `path` is e.g. spec.containers[0]."""
    psc = pod.spec.security_context
    sc = c.security_context
    groups: list[int] = []
    if psc is not None:
        groups += [g for g in psc.supplemental_groups if g not in groups]
        if psc.fs_group is not None and psc.fs_group not in groups:
            groups.append(psc.fs_group)  # the kubelet adds fsGroup to the process's groups
    kind, profile = seccomp_for(sc, psc, caps, privileged, seccomp_root, path, source)
    error = verify_run_as_non_root(pod.metadata.name, pod.metadata.namespace, uid, c.name,
                                   bool(_pick(sc, psc, "run_as_non_root")),
                                   _pick(sc, psc, "run_as_user"), image_user)
    return ContainerSecurity(groups=groups, seccomp_type=kind, seccomp=profile,
                             config_error=error,
                             proc_mount=(sc.proc_mount if sc and sc.proc_mount else "Default"))
