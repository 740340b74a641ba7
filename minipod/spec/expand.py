"""Kubernetes `$(VAR)` expansion in env values, command and args.

Same rules as third_party/forked/golang/expansion/expand.go, which the kubelet uses
(pkg/kubelet/kubelet_pods.go makeEnvironmentVariables, pkg/kubelet/container/helpers.go
ExpandContainerCommandAndArgs):
  $(VAR)   the value of VAR if it is defined; left as `$(VAR)` if not (no error, no empty string)
  $$       a literal `$` — so `$$(VAR)` gives `$(VAR)`, unexpanded
  $x, a trailing `$`, an unterminated `$(`   kept as written
There is no nesting: `$(A$(B))` looks up the variable named `A$(B`.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping


def expand(s: str, mapping: Mapping[str, str]) -> str:
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c != "$" or i + 1 == n:  # a trailing `$` is kept
            out.append(c)
            i += 1
            continue
        nxt = s[i + 1]
        if nxt == "$":  # escaped operator
            out.append("$")
            i += 2
        elif nxt == "(":
            close = s.find(")", i + 2)
            if close < 0:  # incomplete reference: keep "$(" and carry on after it
                out.append("$(")
                i += 2
            else:
                name = s[i + 2:close]
                out.append(mapping[name] if name in mapping else f"$({name})")
                i = close + 1
        else:  # `$` that does not start an expression: kept with the next character
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def expand_env(env: list[tuple[str, str]], base: Mapping[str, str]) -> dict[str, str]:
    """Expand a container's env list in order and return {name: value} for those variables only.

    Each value may refer to variables defined *earlier* in `env` (a later definition is not seen,
    a redefinition replaces the earlier value) and, failing that, to `base`.

    Kubernetes detail: the kubelet's second source is the service-link environment; it never sees
    the image's ENV (containerd merges that later). Pass `{}` to behave exactly like the kubelet,
    so that `$(PATH)` stays literal when only the image defines PATH. Passing the image env makes
    such references expand, which a real cluster would not do.
    """
    own: dict[str, str] = {}
    lookup = ChainMap(own, base)  # earlier own variables first, then base
    for name, value in env:
        own[name] = expand(value, lookup)
    return own
