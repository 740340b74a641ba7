"""Seccomp primitive: render and load a syscall filter (libseccomp's own Python binding).

A profile is the JSON the OCI runtime spec (`linux.seccomp`) and the kubelet's Localhost
profiles use: {"defaultAction": "SCMP_ACT_ERRNO", "architectures": [...], "syscalls":
[{"names": [...], "action": "SCMP_ACT_ALLOW", "errnoRet": N, "args": [{"index", "value",
"valueTwo", "op"}]}]}. `runtime_default(caps)` renders containerd's default profile
(seccomp_default.json, generated from containerd's published one) for a container's capability
set, as containerd does; `check` validates a profile before any process is forked; `load`
installs it in the calling process.

The binding: Debian's python3-seccomp is libseccomp upstream's own binding (src/python in
libseccomp), built by the distribution against the very libseccomp it ships and updated with
it -- libseccomp resolves syscall names and arch quirks (socketcall on x86) for us. PyPI's
pyseccomp, a ctypes imitation of the same API, has had no release since 2021. setup.sh
installs python3-seccomp and links the one module into the venv.
"""

from __future__ import annotations

import errno as errnomod
import json
import os
import platform
from typing import Any

from minipod.errors import MinipodError

try:  # imported at load of this module: after joining a container the host's files are gone
    import seccomp as _lib
except ImportError:  # pragma: no cover - a host set up before seccomp support
    _lib = None

DEFAULT_PROFILE = os.path.join(os.path.dirname(__file__), "seccomp_default.json")
ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
           "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")
OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
       "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
# Python's platform.machine() -> Go's GOARCH (the architecture names the profile uses).
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "i386": "386",
          "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
          "loongarch64": "loong64"}


class SeccompError(MinipodError):
    """A profile that cannot be read or loaded."""


def available() -> bool:
    return _lib is not None


def _kernel_at_least(version: str) -> bool:
    want = tuple(int(x) for x in version.split("."))
    have = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
    return have >= want


def runtime_default(caps: list[str], arch: str | None = None) -> dict:
    """containerd's RuntimeDefault profile for a container with bounding set `caps`
    (names without CAP_, as minipod.kernel.caps gives them)."""
    with open(DEFAULT_PROFILE) as f:
        data = json.load(f)
    goarch = arch or GOARCH.get(platform.machine(), platform.machine())
    have = {"CAP_" + c for c in caps}

    def applies(rule: dict) -> bool:
        inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
        if "arches" in inc and goarch not in inc["arches"]:
            return False
        if "caps" in inc and not have.intersection(inc["caps"]):
            return False
        if "minKernel" in inc and not _kernel_at_least(inc["minKernel"]):
            return False
        if goarch in exc.get("arches", []) or have.intersection(exc.get("caps", [])):
            return False
        return True

    rules = [{k: v for k, v in r.items() if k not in ("includes", "excludes")}
             for r in data["syscalls"] if applies(r)]
    return {"defaultAction": data["defaultAction"], "defaultErrnoRet": data["defaultErrnoRet"],
            "architectures": data["archMap"].get(goarch, []), "syscalls": rules}


def read_profile(path: str) -> dict:
    """A Localhost profile file, checked; SeccompError names the file."""
    try:
        with open(path) as f:
            profile = json.load(f)
    except OSError as e:
        raise SeccompError(f"seccomp profile {path}: {e.strerror}") from None
    except ValueError as e:
        raise SeccompError(f"seccomp profile {path}: not valid JSON: {e}") from None
    problem = check(profile)
    if problem:
        raise SeccompError(f"seccomp profile {path}: {problem}")
    return profile


def check(profile: Any) -> str | None:
    """The first problem of a profile's structure, or None."""
    if not isinstance(profile, dict):
        return "not a JSON object"
    if profile.get("defaultAction") not in ACTIONS:
        return f"defaultAction {profile.get('defaultAction')!r} is not one of {', '.join(ACTIONS)}"
    for a in profile.get("architectures") or []:
        if not isinstance(a, str) or not a.startswith("SCMP_ARCH_"):
            return f"unknown architecture {a!r}"
    for i, rule in enumerate(profile.get("syscalls") or []):
        if not isinstance(rule, dict):
            return f"syscalls[{i}]: not an object"
        if rule.get("action") not in ACTIONS:
            return f"syscalls[{i}].action {rule.get('action')!r} is not a seccomp action"
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        if not names or not all(isinstance(n, str) for n in names):
            return f"syscalls[{i}].names: a list of syscall names is required"
        for j, a in enumerate(rule.get("args") or []):
            if not isinstance(a, dict) or a.get("op") not in OPS \
                    or not isinstance(a.get("index"), int) or not 0 <= a["index"] <= 5:
                return f"syscalls[{i}].args[{j}]: needs index 0..5, value and an op in {OPS}"
    return None


def _action(name: str, errno_ret: int | None):
    if name == "SCMP_ACT_ERRNO":
        return _lib.ERRNO(errnomod.EPERM if errno_ret is None else errno_ret)
    if name == "SCMP_ACT_TRACE":
        return _lib.TRACE(errnomod.EPERM if errno_ret is None else errno_ret)
    return {"SCMP_ACT_ALLOW": _lib.ALLOW, "SCMP_ACT_KILL": _lib.KILL,
            "SCMP_ACT_KILL_THREAD": _lib.KILL, "SCMP_ACT_KILL_PROCESS": _lib.KILL_PROCESS,
            "SCMP_ACT_TRAP": _lib.TRAP, "SCMP_ACT_LOG": _lib.LOG}[name]


def build(profile: dict):
    """A libseccomp filter for `profile`, not loaded. Syscall names this libseccomp does not
    know are skipped, as runc does (a profile lists syscalls of newer kernels)."""
    if _lib is None:
        raise SeccompError("seccomp: libseccomp's Python binding is missing "
                           "(apt-get install python3-seccomp; scripts/setup.sh install)")
    f = _lib.SyscallFilter(_action(profile["defaultAction"], profile.get("defaultErrnoRet")))
    # no_new_privs is the pod's choice (allowPrivilegeEscalation), not libseccomp's default.
    f.set_attr(_lib.Attr.CTL_NNP, 0)
    for a in profile.get("architectures") or []:
        arch = getattr(_lib.Arch, a.removeprefix("SCMP_ARCH_"), None)
        if arch is not None and not f.exist_arch(arch):
            try:
                f.add_arch(arch)
            except (RuntimeError, ValueError, OSError):
                pass  # not supported by this kernel/libseccomp
    default = profile["defaultAction"]
    for rule in profile.get("syscalls") or []:
        if rule["action"] == default and rule.get("errnoRet") == profile.get("defaultErrnoRet"):
            continue  # libseccomp refuses a rule that repeats the default action
        action = _action(rule["action"], rule.get("errnoRet"))
        args = [_lib.Arg(a["index"], getattr(_lib, a["op"].removeprefix("SCMP_CMP_")),
                         a.get("value", 0), a.get("valueTwo", 0)) for a in rule.get("args") or []]
        for name in rule.get("names") or [rule.get("name")]:
            try:
                if _lib.resolve_syscall(_lib.Arch.NATIVE, name) < 0:
                    continue  # unknown to this libseccomp (a newer kernel's syscall)
            except (ValueError, RuntimeError, OSError):
                continue
            try:
                f.add_rule(action, name, *args)
            except (RuntimeError, ValueError, OSError) as e:
                raise SeccompError(f"seccomp rule for {name}: {e}") from None
    return f


def load(profile: dict) -> None:
    """Install `profile` in the calling process (and what it execs). Needs no_new_privs or
    CAP_SYS_ADMIN: the caller picks the moment (see minipod.pod.enter)."""
    flt = build(profile)
    try:
        flt.load()
    except OSError as e:
        raise OSError(e.errno, f"load the seccomp filter: {os.strerror(e.errno or 0)}") from None


def mode(pid: int | str = "self") -> int:
    """The Seccomp: line of /proc/PID/status (0 none, 1 strict, 2 filter)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    return 0
