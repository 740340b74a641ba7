"""The supported-fields table (docs/fields.md), made from the field catalogue itself, so the
document cannot drift from what the loader does: every path of a v1 Pod that kube_fields knows,
and what minipod does with it. `python -m minipod.spec.fieldtable > docs/fields.md` writes it;
tests/unit/test_fieldtable.py fails when the file is stale.
"""

from __future__ import annotations

from collections.abc import Iterator

from minipod.spec import cluster_fields, kube_fields as kf

HEADER = """# Pod fields and what minipod does with them

Generated from minipod's field catalogue (`minipod/spec/kube_fields.py`,
`minipod/spec/cluster_fields.py`) by `python -m minipod.spec.fieldtable > docs/fields.md`; a unit
test fails when this file and the catalogue disagree. Paths are YAML names, `[]` is any item of
a list; `spec.initContainers[]` has the same fields as `spec.containers[]`. A field that is not
listed is an error (`unknown field`), as with kubectl's strict decoding.

| field | minipod |
|---|---|
"""


def paths(type_name: str = "Pod", prefix: str = "") -> Iterator[str]:
    """Every path of the catalogue under `type_name`, depth first, in the catalogue's order."""
    for name, sub in kf.FIELDS[type_name].items():
        path = f"{prefix}.{name}" if prefix else name
        yield path
        if sub is not None:
            inner = sub.removeprefix("[]")
            yield from paths(inner, path + ("[]" if sub.startswith("[]") else ""))


def status(path: str) -> str:
    if path in kf.SERVER_POPULATED:
        return "set by the API server: dropped, as `kubectl apply` drops it"
    if why := cluster_fields.warning(path):
        return f"checked, then {why} (a warning)"
    if path in kf.REFUSED:
        return f"refused when it asks for {kf.REFUSED[path][1]} minipod cannot give; " \
               "otherwise accepted"
    if path in kf.TYPED:
        return "not implemented: a warning, its value still checked"
    if path in kf.NOT_IMPLEMENTED:
        return "not implemented: a warning, then ignored"
    return "supported"


def _under_ignored(path: str) -> bool:
    """Inside a field that is ignored as a whole: its children say nothing more."""
    parts = path.split(".")
    return any(".".join(parts[:i]) in kf.NOT_IMPLEMENTED | kf.SERVER_POPULATED
               for i in range(1, len(parts)))


def render() -> str:
    rows = [f"| `{p}` | {status(p)} |" for p in paths()
            if not p.startswith("spec.initContainers[]") and not _under_ignored(p)]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
