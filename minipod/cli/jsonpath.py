"""kubectl's `-o jsonpath=TEMPLATE` (k8s.io/client-go/util/jsonpath), the part people use.

A template is text with `{...}` actions:
    {.a.b}  {['a.b']}  {.a\\.b}   fields; a missing one prints nothing (kubectl's default
                                   --allow-missing-template-keys=true)
    {.items[0]} {[-1]} {[1:3]} {[*]} {.*} {..name}   indexes, slices, wildcards, descent
    {.items[?(@.status=="True")]}   filters: == != < > <= >=, or ?(@.x) for "has x"
    {range .items[*]}...{end}       a loop; inside it, paths start at the current item
    {"\\n"} {"\\t"}                   literal text
Values of one action are joined with a space; strings print as they are, lists and maps as
JSON, as kubectl prints them. jsonpath-ng was not used: its syntax is not kubectl's (no
range/end, no literal actions, different filter syntax).
"""

from __future__ import annotations

import json
import re
from typing import Any

from minipod.errors import MinipodError


class JSONPathError(MinipodError):
    exit_code = 1


def _actions(template: str) -> list[tuple[str, str]]:
    """[("text", ...), ("action", ...)] of a template, quote-aware inside braces."""
    out, i, n = [], 0, len(template)
    while i < n:
        j = template.find("{", i)
        if j < 0:
            out.append(("text", template[i:]))
            break
        if j > i:
            out.append(("text", template[i:j]))
        k, quote = j + 1, None
        while k < n and (quote or template[k] != "}"):
            c = template[k]
            if quote and c == "\\":
                k += 1
            elif c in "\"'":
                quote = None if quote == c else (quote or c)
            k += 1
        if k >= n:
            raise JSONPathError(f"jsonpath {template!r}: unclosed action")
        out.append(("action", template[j + 1:k].strip()))
        i = k + 1
    return out


def _unescape(s: str) -> str:
    return s.encode("latin-1", "backslashreplace").decode("unicode_escape") \
        if "\\" in s else s


_TOKEN = re.compile(r"\.\.|\.|\[|[^.\[]+")


def _split_path(path: str) -> list[tuple[str, str]]:
    """[(kind, arg)]: ("field", name), ("descend", name), ("index", inside brackets)."""
    out, i, n = [], 0, len(path)
    if path.startswith(("$", "@")):
        i = 1
    while i < n:
        if path.startswith("..", i):
            kind, i = "descend", i + 2
        elif path[i] == ".":
            kind, i = "field", i + 1
        elif path[i] == "[":
            depth, k, quote = 0, i, None
            while k < n:
                c = path[k]
                if quote:
                    if c == quote:
                        quote = None
                elif c in "\"'":
                    quote = c
                elif c == "[":
                    depth += 1
                elif c == "]":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            if k >= n:
                raise JSONPathError(f"jsonpath {path!r}: unterminated [")
            out.append(("index", path[i + 1:k].strip()))
            i = k + 1
            continue
        else:
            kind = "field"
        name = []
        while i < n and path[i] not in ".[":
            if path[i] == "\\" and i + 1 < n:
                i += 1
            name.append(path[i])
            i += 1
        if name or kind == "descend":
            out.append((kind, "".join(name)))
    return out


def _children(v: Any) -> list:
    return list(v.values()) if isinstance(v, dict) else list(v) if isinstance(v, list) else []


def _descend(v: Any) -> list:
    out = [v]
    for c in _children(v):
        out += _descend(c)
    return out


_FILTER = re.compile(r"^\?\(\s*(@[^=!<>]*?)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\)$")


def _literal(text: str) -> Any:
    text = text.strip()
    if text[:1] in "\"'" and text[-1:] == text[:1]:
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


def _compare(a: Any, op: str, b: Any) -> bool:
    try:
        return {"==": a == b, "!=": a != b}[op] if op in ("==", "!=") else \
            {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    except TypeError:
        return False


def _index(values: list, arg: str) -> list:
    out: list = []
    if m := _FILTER.match(arg):
        path, op, lit = m.groups()
        for v in values:
            for item in _children(v) if isinstance(v, list) else [v]:
                found = evaluate(path, item)
                if op is None:
                    ok = bool(found)
                else:
                    ok = any(_compare(f, op, _literal(lit)) for f in found)
                if ok:
                    out.append(item)
        return out
    for v in values:
        if arg == "*":
            out += _children(v)
        elif arg[:1] in "\"'":
            for key in (k.strip()[1:-1] for k in arg.split(",")):
                if isinstance(v, dict) and key in v:
                    out.append(v[key])
        elif isinstance(v, list):
            try:
                if ":" in arg:
                    parts = [int(p) if p.strip() else None for p in arg.split(":")]
                    out += v[slice(*parts)]
                else:
                    out += [v[int(i)] for i in arg.split(",") if -len(v) <= int(i) < len(v)]
            except ValueError:
                raise JSONPathError(f"jsonpath: invalid array index [{arg}]") from None
    return out


def evaluate(path: str, data: Any) -> list:
    """The values a path selects in data."""
    values = [data]
    for kind, arg in _split_path(path):
        if kind == "index":
            values = _index(values, arg)
            continue
        pool = [d for v in values for d in _descend(v)] if kind == "descend" else values
        if arg in ("*", ""):
            values = [c for v in pool for c in _children(v)] if arg == "*" else pool
        else:
            values = [v[arg] for v in pool if isinstance(v, dict) and arg in v]
    return values


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return "" if v is None else str(v)


def render(template: str, data: Any) -> str:
    """The text kubectl prints for `-o jsonpath=template` of data."""
    actions = _actions(template)

    def run(start: int, cur: Any) -> tuple[str, int]:
        out, i = [], start
        while i < len(actions):
            kind, arg = actions[i]
            if kind == "text":
                out.append(arg)
            elif arg == "end":
                return "".join(out), i
            elif arg.startswith("range "):
                items = evaluate(arg[6:].strip(), cur)
                end = None
                for item in items:
                    text, end = run(i + 1, item)
                    out.append(text)
                if end is None:  # no items: find the matching end without output
                    _, end = run(i + 1, None)
                i = end
            elif arg[:1] in "\"'":
                out.append(_unescape(arg[1:-1]))
            else:
                out.append(" ".join(_text(v) for v in evaluate(arg, cur)))
            i += 1
        if start:
            raise JSONPathError(f"jsonpath {template!r}: range without end")
        return "".join(out), i

    return run(0, data)[0]
