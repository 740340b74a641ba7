#!/usr/bin/env python3
"""Regenerate minipod/kernel/seccomp_default.json from containerd's published default profile.

    scripts/gen-seccomp-default.py path/to/containerd/contrib/seccomp/seccomp_default.go [COMMIT]

The profile is data -- which syscalls are allowed, for which capabilities, architectures and
kernels -- and containerd publishes it as Go code (DefaultProfile builds a specs.LinuxSeccomp).
This reads those facts out of the Go source and writes them in the JSON profile format Docker
and moby use for the same purpose (`includes`/`excludes` for the conditional rules), so that
minipod renders the profile for a container's capabilities exactly as containerd does.
Nothing of containerd's code is copied: only the lists.
"""

from __future__ import annotations

import json
import re
import sys

# The few constants the Go source uses as argument values (golang.org/x/sys/unix, linux/amd64).
CONSTANTS = {
    "unix.AF_ALG": 38, "unix.AF_VSOCK": 40,
    "unix.CLONE_NEWNS": 0x00020000, "unix.CLONE_NEWUTS": 0x04000000,
    "unix.CLONE_NEWIPC": 0x08000000, "unix.CLONE_NEWUSER": 0x10000000,
    "unix.CLONE_NEWPID": 0x20000000, "unix.CLONE_NEWNET": 0x40000000,
    "unix.CLONE_NEWCGROUP": 0x02000000,
}
OPS = {"OpLessThan": "SCMP_CMP_LT", "OpEqualTo": "SCMP_CMP_EQ", "OpGreaterThan": "SCMP_CMP_GT",
       "OpMaskedEqual": "SCMP_CMP_MASKED_EQ", "OpNotEqual": "SCMP_CMP_NE",
       "OpLessEqual": "SCMP_CMP_LE", "OpGreaterEqual": "SCMP_CMP_GE"}
ARCHES = {"ArchX86_64": "SCMP_ARCH_X86_64", "ArchX86": "SCMP_ARCH_X86",
          "ArchX32": "SCMP_ARCH_X32", "ArchARM": "SCMP_ARCH_ARM",
          "ArchAARCH64": "SCMP_ARCH_AARCH64", "ArchS390": "SCMP_ARCH_S390",
          "ArchS390X": "SCMP_ARCH_S390X", "ArchRISCV64": "SCMP_ARCH_RISCV64",
          "ArchPPC64LE": "SCMP_ARCH_PPC64LE", "ArchLOONGARCH64": "SCMP_ARCH_LOONGARCH64",
          "ArchMIPS": "SCMP_ARCH_MIPS", "ArchMIPS64": "SCMP_ARCH_MIPS64",
          "ArchMIPS64N32": "SCMP_ARCH_MIPS64N32", "ArchMIPSEL": "SCMP_ARCH_MIPSEL",
          "ArchMIPSEL64": "SCMP_ARCH_MIPSEL64", "ArchMIPSEL64N32": "SCMP_ARCH_MIPSEL64N32"}
ERRNOS = {"nosys": 38}  # ENOSYS


def value(expr: str) -> int:
    total = 0
    for part in expr.split("|"):
        part = part.strip()
        plus = 0
        if "+" in part:
            part, _, n = part.partition("+")
            part, plus = part.strip(), int(n)
        total |= (CONSTANTS[part] if part in CONSTANTS else int(part, 0)) + plus
    return total


def parse(src: str) -> dict:
    lines = src.splitlines()
    arch_map: dict[str, list[str]] = {}
    body = src[src.index("func DefaultProfile"):]
    for m in re.finditer(r'case ([^:]+):\s*return \[\]specs\.Arch\{([^}]*)\}', src):
        arches = [ARCHES[a.strip().removeprefix("specs.")] for a in m.group(2).split(",")
                  if a.strip()]
        for goarch in re.findall(r'"([^"]+)"', m.group(1)):
            arch_map[goarch] = arches
    # Walk DefaultProfile line by line, keeping the condition each rule sits under.
    start = next(i for i, ln in enumerate(lines) if ln.startswith("func DefaultProfile"))
    ctx: list[tuple[int, str, object]] = []  # (indent, kind, value)
    switch_kind: list[tuple[int, str]] = []
    seen: dict[tuple[int, str], list[str]] = {}
    rules = []
    i = start
    while i < len(lines):
        ln = lines[i]
        indent = len(ln) - len(ln.lstrip("\t"))
        s = ln.strip()
        while ctx and s == "}" and indent <= ctx[-1][0]:
            ctx.pop()
        while switch_kind and s == "}" and indent <= switch_kind[-1][0]:
            switch_kind.pop()
        if s.startswith("switch runtime.GOARCH"):
            switch_kind.append((indent, "arches"))
        elif s.startswith("for _, c := range sp.Process.Capabilities.Bounding"):
            switch_kind.append((indent, "caps"))
        elif s.startswith("case ") and switch_kind:
            ctx = [c for c in ctx if not (c[1] == switch_kind[-1][1] and c[0] >= indent)]
            values = re.findall(r'"([^"]+)"', s)
            seen.setdefault(switch_kind[-1], []).extend(values)
            ctx.append((indent, switch_kind[-1][1], values))
        elif s == "default:" and switch_kind:
            # Every architecture the other cases of this switch did not name.
            ctx = [c for c in ctx if not (c[1] == switch_kind[-1][1] and c[0] >= indent)]
            ctx.append((indent, "not_" + switch_kind[-1][1], seen.get(switch_kind[-1], [])))
        elif s.startswith("if !admin"):
            ctx.append((indent, "not_caps", ["CAP_SYS_ADMIN"]))
        elif "kernelversion.KernelVersion{" in s:
            m = re.search(r"Kernel: (\d+), Major: (\d+)", s)
            ctx.append((indent - 1, "minKernel", f"{m.group(1)}.{m.group(2)}"))
        elif s.startswith("Names:"):
            # The rule literal is open (depth 1): its body runs to the brace that closes it.
            depth, k, body_lines = 1, i, []
            while depth:
                code = lines[k].split("//")[0]
                body_lines.append(code)
                depth += code.count("{") - code.count("}")
                k += 1
            text = "\n".join(body_lines)
            names_text = text[text.index("Names:"):]
            names_text = names_text[:names_text.index("}")]
            rule: dict = {"names": re.findall(r'"([^"]+)"', names_text)}
            args = []
            for t in (x.strip() for x in body_lines):
                if t.startswith("Action:"):
                    rule["action"] = "SCMP_ACT_" + {"ActAllow": "ALLOW", "ActErrno": "ERRNO"}[
                        t.split("specs.")[1].rstrip(",")]
                elif t.startswith("ErrnoRet:"):
                    rule["errnoRet"] = ERRNOS[t.split("&")[1].rstrip(",")]
                elif t.startswith("Index:"):
                    args.append({"index": int(t.split(":")[1].strip(" ,"))})
                elif t.startswith("Value:"):
                    args[-1]["value"] = value(t.split(":", 1)[1].strip(" ,"))
                elif t.startswith("ValueTwo:"):
                    args[-1]["valueTwo"] = value(t.split(":", 1)[1].strip(" ,"))
                elif t.startswith("Op:"):
                    args[-1]["op"] = OPS[t.split("specs.")[1].rstrip(",")]
            for a in args:
                a.setdefault("valueTwo", 0)
            rule["args"] = args
            inc: dict = {}
            exc: dict = {}
            for _, kind, val in ctx:
                if kind == "arches":
                    inc["arches"] = val
                elif kind == "caps":
                    inc["caps"] = val
                elif kind in ("not_caps", "not_arches"):
                    exc[kind.removeprefix("not_")] = val
                elif kind == "minKernel":
                    inc["minKernel"] = val
            if inc:
                rule["includes"] = inc
            if exc:
                rule["excludes"] = exc
            rules.append(rule)
            i = k
            continue
        i += 1
    default_action = re.search(r"DefaultAction: specs\.(\w+)", body).group(1)
    assert default_action == "ActErrno", default_action
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "archMap": arch_map,
            "syscalls": rules}


def main() -> None:
    path = sys.argv[1]
    commit = sys.argv[2] if len(sys.argv) > 2 else "unknown"
    with open(path) as f:
        profile = parse(f.read())
    out = {"comment": ["containerd's default seccomp profile (RuntimeDefault), as data:",
                       "github.com/containerd/containerd contrib/seccomp/seccomp_default.go "
                       f"at {commit}, regenerated by scripts/gen-seccomp-default.py.",
                       "includes/excludes: the rule applies only for these capabilities "
                       "(bounding set), architectures (Go names) or kernels."],
           **profile}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
