"""Values as error messages show them: short, on one line, whatever the manifest holds.

A problem is printed as one `path: message` line. A 5000-digit number, a 256 KiB annotation or
a string with a newline or a NUL in it must not turn that line into a screenful, or into
several lines: repr() escapes control characters, and the text is cut to a readable length.
"""

from __future__ import annotations

import re
from typing import Any

LIMIT = 40  # characters of a value kept in a message


def cut(text: str, limit: int = LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def show(v: Any, limit: int = LIMIT) -> str:
    """A manifest value for a message: `'12Q'`, `5`, `true`, `null`, `a mapping`."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, int):
        # str() of a huge int is slow (and refused past 4300 digits): count the digits instead.
        digits = len(str(v)) if -10**60 < v < 10**60 else None
        return str(v) if digits is not None else f"an integer of about {v.bit_length() * 3 // 10} digits"
    if isinstance(v, str):
        return repr(cut(v, limit)) if len(v) > limit else repr(v)
    return cut(repr(v), limit)


def key(name: Any) -> str:
    """A mapping key as a path component: plain names as they are (a field, a label's
    `app.kubernetes.io/name`), anything else quoted -- `'+  containers'`, not a path that
    seems to start with a plus and has spaces in it."""
    text = str(name) if not isinstance(name, str) else name
    if _PLAIN.fullmatch(text) and len(text) <= 2 * LIMIT:
        return text
    return show(text)


_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
