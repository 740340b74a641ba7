"""Device access rules of a group: which device nodes its processes may open or mknod.

Without them, a container with CAP_MKNOD (in containerd's default set) can `mknod` a node for
a host disk and read or write it; an image layer can even ship the node, so dropping the
capability does not help. The device controller checks every open(2) and mknod(2) of a device
node against the rules of the caller's cgroup, whatever node or filesystem it comes from.

A rule is cgroup v1's devices.allow/devices.deny line: type (c, b, or a = all), major:minor
(None = '*'), access (r read, w write, m mknod). A Policy is an ordered list as runc takes it:
the group starts denying everything; a leading `a *:* rwm` rule sets the default instead, and
every other rule is an exception to the default. Each driver turns it into its own mechanism:
    cgroupfs-v1  devices.deny / devices.allow writes
    cgroupfs-v2  a BPF_CGROUP_DEVICE program (devfilter.py builds it, bpf.py attaches it)
    systemd      DevicePolicy= and DeviceAllow= unit properties

DEFAULT is what a non-privileged container gets from containerd's CRI with runc. containerd's
spec says only "deny a rwm" and adds the devices the pod asked for; runc then appends its
AllowedDevices to every container (libcontainer/specconv): the seven /dev nodes a container has,
/dev/pts/*, /dev/net/tun (kept "for backward compatibility"), and `c *:* m` + `b *:* m`. Those
last two let mknod(2) of ANY node succeed, while open(2) of it still fails with EPERM: the
rules, not the node, guard the devices. We keep them, so an image's own `mknod` works as it
does on a real node. ALLOW_ALL is a privileged container's (containerd's
WithAllDevicesAllowed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from minipod.cgroups import CgroupError

MAX_MAJOR = (1 << 12) - 1  # dev_t: 12 bits of major, 20 of minor (MKDEV in linux/kdev_t.h)
MAX_MINOR = (1 << 20) - 1

_ACCESS = ("r", "w", "m", "rw", "rm", "wm", "rwm")  # devices.list's spelling: that order, no repeats
_LINE = re.compile(r"^([abc]) (\*|\d+):(\*|\d+) ([rwm]+)$")


@dataclass(frozen=True)
class Rule:
    """One cgroup device rule, e.g. Rule("c", 1, 3) is `c 1:3 rwm`."""

    type: str                 # "c" char, "b" block, "a" all (both types, every number)
    major: int | None = None  # None = any
    minor: int | None = None  # None = any
    access: str = "rwm"       # r read, w write, m mknod, in that order
    allow: bool = True

    def __post_init__(self) -> None:
        if self.type not in ("a", "b", "c"):
            raise CgroupError(f"device rule {self.line()!r}: type must be a, b or c")
        if self.access not in _ACCESS:
            raise CgroupError(f"device rule {self.line()!r}: access must be some of r, w, m in that order")
        for what, value, top in (("major", self.major, MAX_MAJOR), ("minor", self.minor, MAX_MINOR)):
            if value is not None and not 0 <= value <= top:
                raise CgroupError(f"device rule {self.line()!r}: {what} must be 0..{top} or *")
        if self.type == "a" and (self.major, self.minor, self.access) != (None, None, "rwm"):
            raise CgroupError(f"device rule {self.line()!r}: an 'a' rule covers every device: a *:* rwm")

    @classmethod
    def parse(cls, line: str, allow: bool = True) -> Rule:
        """'c 136:* rwm' -> Rule('c', 136, None, 'rwm'), the devices.allow syntax."""
        m = _LINE.match(line.strip())
        if not m:
            raise CgroupError(f"device rule {line!r}: expected 'TYPE MAJOR:MINOR ACCESS', e.g. 'c 1:3 rwm'")
        kind, major, minor, access = m.groups()
        number = lambda s: None if s == "*" else int(s)  # noqa: E731
        return cls(kind, number(major), number(minor), access, allow)

    def line(self) -> str:
        """The rule as devices.allow/devices.deny take it and devices.list shows it."""
        star = lambda n: "*" if n is None else str(n)  # noqa: E731
        return f"{self.type} {star(self.major)}:{star(self.minor)} {self.access}"


@dataclass(frozen=True)
class Policy:
    """Ordered rules: deny-all unless the first is `a *:* rwm` (allowed); the rest are exceptions.

    Only lists a kernel's devices cgroup keeps as written are accepted: one default, then
    exceptions that say the opposite of it. A rule that repeats the default or a second `a` rule
    would need runc's emulator (exceptions punched into exceptions), and we never need one.
    """

    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        for i, rule in enumerate(self.rules):
            if rule.type == "a" and i > 0:
                raise CgroupError(f"device policy: {rule.line()!r} can only be the first rule")
            if rule.type != "a" and rule.allow == self.default_allow:
                word = "allow" if rule.allow else "deny"
                raise CgroupError(f"device policy: {word} {rule.line()!r} repeats the default ({word} all)")

    @property
    def default_allow(self) -> bool:
        """What a device that no exception matches gets."""
        return bool(self.rules) and self.rules[0].type == "a" and self.rules[0].allow

    @property
    def exceptions(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.type != "a")

    @property
    def allows_all(self) -> bool:
        return self.default_allow and not self.exceptions


def _char(major: int, minor: int | None, access: str = "rwm") -> Rule:
    return Rule("c", major, minor, access)


# runc's AllowedDevices, in its order (libcontainer/specconv/spec_linux.go).
DEFAULT = Policy((
    Rule("c", None, None, "m"),  # mknod of any node succeeds; opening it is what is checked
    Rule("b", None, None, "m"),
    _char(1, 3),     # /dev/null
    _char(1, 8),     # /dev/random
    _char(1, 7),     # /dev/full
    _char(5, 0),     # /dev/tty
    _char(1, 5),     # /dev/zero
    _char(1, 9),     # /dev/urandom
    _char(136, None),  # /dev/pts/*
    _char(5, 2),     # /dev/ptmx
    _char(10, 200),  # /dev/net/tun: runc dropped it in 1.2.0-rc1 and put it back (runc#3468)
))

ALLOW_ALL = Policy((Rule("a"),))

POLICIES = {"default": DEFAULT, "allow-all": ALLOW_ALL}


def by_name(name: str) -> Policy:
    """'default' (a container's allow-list) or 'allow-all' (a privileged container's)."""
    try:
        return POLICIES[name]
    except KeyError:
        raise CgroupError(f"devices: unknown policy {name!r} ({', '.join(POLICIES)})") from None
