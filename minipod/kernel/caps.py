"""Capabilities primitive: the container's capability sets (python-prctl + raw prctl)."""

from __future__ import annotations

from minipod.kernel import _libc

# containerd's default set (pkg/oci/spec.go): what a container gets unless the pod says otherwise.
DEFAULT = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def _number(name: str) -> int:
    import prctl

    n = getattr(prctl, "CAP_" + name, None)
    if n is None:
        raise ValueError(f"unknown capability {name!r}")
    return n


def compute(add: list[str] | None = None, drop: list[str] | None = None,
            privileged: bool = False) -> list[str]:
    """Kubernetes semantics: start from the default set, drop, then add; 'ALL' works in both."""
    import prctl

    every = [n.upper() for n in prctl.ALL_CAP_NAMES]
    if privileged:
        return every
    norm = lambda c: c.upper().removeprefix("CAP_")  # noqa: E731 - k8s accepts both spellings
    caps = set(DEFAULT)
    dropped = {norm(c) for c in drop or []}
    caps = set() if "ALL" in dropped else caps - dropped
    added = {norm(c) for c in add or []}
    caps |= set(every) if "ALL" in added else added
    for c in caps:
        _number(c)
    return sorted(caps)


def drop_bounding(names: list[str]) -> None:
    """Drop every capability not in `names` from the bounding set (needs CAP_SETPCAP, so this
    comes before any setuid). For uid 0 the bounding set is what survives execve."""
    keep = {_number(n) for n in names}
    for cap in range(last_cap() + 1):
        if cap not in keep:
            try:
                _libc.prctl(_libc.PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno != 22:  # EINVAL: a cap this kernel does not know
                    raise
    _libc.prctl(_libc.PR_CAP_AMBIENT, _libc.PR_CAP_AMBIENT_CLEAR_ALL)
    from minipod import explain

    if explain.ON:
        explain.say(f"bounding set: keep {len(keep)} capabilities, drop the rest",
                    "prctl(PR_CAPBSET_DROP, cap) for each other cap; "
                    "prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)",
                    "setpriv --bounding-set -all," + ",".join(
                        "+" + n.lower().removeprefix("cap_") for n in sorted(names)),
                    keep=sorted(names))


def limit(names: list[str], no_new_privs: bool = False) -> None:
    """Limit permitted/effective to `names`, empty inheritable (as containerd does since
    CVE-2022-24769); optionally set no_new_privs (allowPrivilegeEscalation: false)."""
    import prctl

    keep = [_number(n) for n in names]
    prctl.cap_inheritable.limit()
    prctl.cap_effective.limit(*keep)
    prctl.cap_permitted.limit(*keep)
    if no_new_privs:
        _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)
    from minipod import explain

    if explain.ON:
        # setpriv cannot set permitted/effective; for root they follow the bounding set at exec.
        explain.say(f"permitted/effective: {len(keep)} capabilities, inheritable none"
                    + (", no_new_privs" if no_new_privs else ""),
                    "capset(permitted=effective=keep, inheritable=0)"
                    + ("; prctl(PR_SET_NO_NEW_PRIVS, 1)" if no_new_privs else ""),
                    "setpriv --inh-caps -all --ambient-caps -all"
                    + (" --no-new-privs" if no_new_privs else ""),
                    keep=sorted(names))
