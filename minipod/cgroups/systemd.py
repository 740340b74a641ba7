"""systemd driver: pod slices and container scopes as transient systemd units over D-Bus.

When PID 1 is systemd it owns the cgroup tree: a process that writes cgroupfs behind its back
has its limits reset at the next `systemctl daemon-reload` and its groups shown as strays. So,
like the kubelet's systemd driver (and runc's), we ask systemd to create the units:

    minipod.slice/minipod-web.slice/minipod-web-app.scope
      slice            slice               scope: the container's processes

A group maps to the unit named by its last component. Slices are started by create(); a scope
cannot exist without a process, so create() of a scope only records its limits and join() starts
it with PIDs=[pid]. The cgroup's files (procs, kill, OOM count, reads, paths) are read directly
through the cgroupfs driver of whatever hierarchy is mounted: systemd only decides where the
directories are, and reading them needs no round trip through PID 1.

The bus is a seam (`Bus`): unit tests pass a fake that records every call; `DBusBus` is the real
one (jeepney, pure Python, blocking; imported lazily so the CLI starts fast).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Protocol

from minipod.cgroups import CgroupBusy, CgroupError, Driver, Limits, convert, devices

MANAGER = "org.freedesktop.systemd1.Manager"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
UNIT_EXISTS = "org.freedesktop.systemd1.UnitExists"

# systemd's "infinity" for uint64 properties (MemoryMax, TasksMax, CPUQuotaPerSecUSec).
INFINITY = 2**64 - 1

_UNIT_CHARS = re.compile(r"^[A-Za-z0-9:_.\\-]+$")

Property = tuple[str, tuple[str, Any]]  # D-Bus a(sv) element: (name, (signature, value))


class BusError(CgroupError):
    """A D-Bus error reply: `name` is the error name (e.g. org.freedesktop.systemd1.NoSuchUnit)."""

    def __init__(self, name: str, message: str = "") -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message


class Bus(Protocol):
    """The three things the driver needs from systemd's manager object."""

    def call(self, method: str, signature: str, *args: Any) -> tuple:
        """Call org.freedesktop.systemd1.Manager.<method>; return the reply body. Raises BusError."""

    def wait_job(self, job: str, timeout: float) -> str:
        """Wait until job (an object path) is removed; return its result ('done', 'failed', ...)."""

    def unit_property(self, unit: str, interface: str, name: str) -> Any:
        """A property of a loaded unit, or None if no such unit is loaded."""


class DBusBus:
    """The system bus, through jeepney's blocking connection."""

    def __init__(self, address: str = "SYSTEM") -> None:
        try:
            from jeepney import DBusAddress, MatchRule
            from jeepney.bus_messages import message_bus
            from jeepney.io.blocking import Proxy, open_dbus_connection
        except ImportError:
            raise CgroupError("the systemd cgroup driver needs the jeepney package "
                              "(pip install jeepney), or set cgroup_driver = \"cgroupfs\"") from None

        try:
            self._conn = open_dbus_connection(bus=address)
        except (OSError, TimeoutError) as e:
            raise CgroupError(f"connect to the D-Bus system bus: {e} (is dbus running?)") from None
        self._manager = DBusAddress(
            "/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1", interface=MANAGER
        )
        self._address = DBusAddress
        # The match (in the bus daemon) and the filter (in this connection) go in before any job
        # is started: JobRemoved may arrive before the reply to StartTransientUnit. The daemon
        # resolves the well-known sender name; signals reach us from systemd's unique name
        # (":1.x"), so the local filter must not test the sender.
        fields = dict(type="signal", interface=MANAGER, member="JobRemoved", path="/org/freedesktop/systemd1")
        from collections import deque

        self._signals: deque = deque()
        self._conn.filter(MatchRule(**fields), queue=self._signals)
        Proxy(message_bus, self._conn).AddMatch(MatchRule(sender="org.freedesktop.systemd1", **fields))
        self._finished: dict[str, str] = {}
        # systemd sends its signals only once some client has subscribed.
        self.call("Subscribe", "")

    def _send(self, msg: Any) -> tuple:
        from jeepney import DBusErrorResponse
        from jeepney.wrappers import unwrap_msg

        reply = self._conn.send_and_get_reply(msg, timeout=60)
        try:
            return tuple(unwrap_msg(reply))
        except DBusErrorResponse as e:
            text = e.data[0] if e.data and isinstance(e.data[0], str) else ""
            raise BusError(e.name or "unknown D-Bus error", text) from None

    def call(self, method: str, signature: str, *args: Any) -> tuple:
        from jeepney import new_method_call

        return self._send(new_method_call(self._manager, method, signature or None, args))

    def wait_job(self, job: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            while self._signals:
                _id, path, _unit, result = self._signals.popleft().body
                self._finished[path] = result
            if job in self._finished:
                return self._finished.pop(job)
            left = deadline - time.monotonic()
            if left <= 0:
                raise CgroupError(f"systemd job {job}: not finished after {timeout:.0f} s")
            try:
                self._conn.recv_messages(timeout=left)
            except TimeoutError:
                pass

    def unit_property(self, unit: str, interface: str, name: str) -> Any:
        from jeepney import new_method_call

        try:
            (path,) = self.call("GetUnit", "s", unit)
        except BusError as e:
            if e.name == NO_SUCH_UNIT:
                return None
            raise
        props = self._address(path, bus_name="org.freedesktop.systemd1",
                              interface="org.freedesktop.DBus.Properties")
        try:
            ((_sig, value),) = self._send(new_method_call(props, "Get", "ss", (interface, name)))
        except BusError as e:
            # The unit was collected between GetUnit and Get.
            if e.name in ("org.freedesktop.DBus.Error.UnknownObject", NO_SUCH_UNIT):
                return None
            raise
        return value

    def close(self) -> None:
        self._conn.close()


# --- pure helpers: names and conversions -------------------------------------------------------


def slice_path(name: str) -> str:
    """Where systemd puts a slice: 'a-b-c.slice' -> 'a.slice/a-b.slice/a-b-c.slice'.

    In a slice name every '-' means nesting, so the name alone fixes the directory.
    """
    if name == "-.slice":
        return ""
    parts = name.removesuffix(".slice").split("-")
    if not all(parts):
        raise CgroupError(f"systemd slice {name!r}: empty component between dashes")
    return "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def unit_of(group: str) -> tuple[str, str]:
    """Split a group into (unit name, parent slice name) and check systemd would put it there.

    'minipod.slice/minipod-web.slice/minipod-web-app.scope' -> ('minipod-web-app.scope',
    'minipod-web.slice'). A pod named 'my-pod' would give 'minipod-my-pod.slice', which systemd
    nests under 'minipod-my.slice': refuse that here rather than read the wrong directory later.
    """
    parts = [p for p in group.strip("/").split("/") if p]
    if not parts:
        raise CgroupError("systemd driver: empty cgroup group name")
    name = parts[-1]
    if not _UNIT_CHARS.match(name) or not name.endswith((".slice", ".scope")):
        raise CgroupError(f"systemd driver: {name!r} in {group!r} is not a slice or scope unit name")
    parent = parts[-2] if len(parts) > 1 else "-.slice"
    if name.endswith(".slice"):
        expected = slice_path(name)
    else:
        if not parent.endswith(".slice"):
            raise CgroupError(f"systemd driver: scope {name!r} must be inside a slice, not {parent!r}")
        expected = "/".join(filter(None, [slice_path(parent), name]))
    if expected != "/".join(parts):
        raise CgroupError(
            f"systemd driver: group {group!r} is not where systemd puts {name!r} ({expected!r}); "
            "a '-' in a slice name means nesting"
        )
    return name, parent


def quota_per_sec(quota_us: int, period_us: int) -> int:
    """CFS quota per period -> systemd's CPUQuotaPerSecUSec (µs of CPU time per wall second).

    Rounded up so systemd, which converts back with `per_sec * period / 1e6`, never writes less
    than asked: with the kubelet's 100 ms period the value is exact (500m -> '50000 100000').
    """
    return -(-quota_us * 1_000_000 // period_us)


def unit_properties(limits: Limits, unified: bool = True) -> list[Property]:
    """Limits as systemd unit properties, declaratively like the v2 driver: a limit that is None
    is sent as infinity, so set_limits() also lifts a limit; cpu_shares None leaves the weight.

    The accounting switches are always on: systemd enables a controller on a unit's cgroup only
    when some unit asks for it, and without the memory controller there is no memory.events to
    read OOM kills from. TasksMax is always sent because systemd gives every scope a default
    (DefaultTasksMax, 15% of pid_max); the kubelet's default is no pid limit.
    """
    memory = INFINITY if limits.memory_max is None else limits.memory_max
    quota = INFINITY if limits.cpu_quota_us is None else quota_per_sec(limits.cpu_quota_us, limits.cpu_period_us)
    tasks = INFINITY if limits.pids_max is None or limits.pids_max < 0 else limits.pids_max
    props: list[Property] = [
        ("MemoryAccounting", ("b", True)),
        ("CPUAccounting", ("b", True)),
        ("TasksAccounting", ("b", True)),
        # MemoryLimit is the legacy (v1) name of the same limit.
        ("MemoryMax" if unified else "MemoryLimit", ("t", memory)),
        ("CPUQuotaPerSecUSec", ("t", quota)),
        ("CPUQuotaPeriodUSec", ("t", limits.cpu_period_us)),
        ("TasksMax", ("t", tasks)),
    ]
    if limits.cpu_shares:  # 0 means unset to the converters, and CPUWeight=0 is invalid
        if unified:
            props.append(("CPUWeight", ("t", convert.cpu_weight(limits.cpu_shares))))
        else:
            props.append(("CPUShares", ("t", limits.cpu_shares)))
    if limits.devices is not None:
        props += device_properties(limits.devices)
    return props


def device_properties(policy: devices.Policy) -> list[Property]:
    """A device policy as DevicePolicy= and DeviceAllow= (systemd.resource-control(5)).

    systemd builds the BPF program (v2) or writes devices.allow (v1) itself. "strict" allows
    only the DeviceAllow= entries (not even /dev/null, which "closed" would add). An empty
    DeviceAllow= first clears the entries a running unit has: each later one is appended.
    Allow-all is "auto" with no entries: no filter. systemd has no deny entries, so a policy
    that allows by default with exceptions cannot be expressed (runc warns and denies all).
    """
    clear: Property = ("DeviceAllow", ("a(ss)", []))
    if policy.allows_all:
        return [clear, ("DevicePolicy", ("s", "auto"))]
    if policy.default_allow:
        raise CgroupError("systemd driver: a device policy that allows all but some devices cannot "
                          "be expressed (DeviceAllow= has no deny entries)")
    return [clear, ("DevicePolicy", ("s", "strict")),
            ("DeviceAllow", ("a(ss)", [(device_specifier(r), r.access) for r in policy.exceptions]))]


def device_specifier(rule: devices.Rule) -> str:
    """A rule's device as DeviceAllow= names it (systemd >= 240, as runc's systemd driver does):

        c 1:3   /dev/char/1:3    parsed from the path, no node needs to exist
        c 136:* char-136         a numeric device group is the major itself
        c *:*   char-*           a glob over the device groups of /proc/devices: all of them
    There is no spelling for '*:N' (any major, one minor).
    """
    kind = {"c": "char", "b": "block"}[rule.type]
    if rule.major is None:
        if rule.minor is not None:
            raise CgroupError(f"systemd driver: device rule {rule.line()!r}: DeviceAllow= cannot "
                              "name one minor of every major")
        return f"{kind}-*"
    if rule.minor is None:
        return f"{kind}-{rule.major}"
    return f"/dev/{kind}/{rule.major}:{rule.minor}"


# --- the driver --------------------------------------------------------------------------------


class SystemdDriver(Driver):
    name = "systemd"

    # How long to wait for systemd: its jobs are instant on an idle host, but a loaded host or a
    # guest under emulation (TCG) can take seconds.
    job_timeout = 60.0
    gone_timeout = 10.0
    busy_timeout = 2.0

    def __init__(self, root: str = "/sys/fs/cgroup", bus: Bus | None = None,
                 files: Driver | None = None, unified: bool | None = None) -> None:
        self.root = root
        self._bus = bus
        self._files = files
        self._unified = unified
        self._scope_limits: dict[str, Limits] = {}

    # The bus and the file driver are opened on first use: `minipod ps` builds a driver too and
    # should not pay for a D-Bus connection it never uses.
    @property
    def bus(self) -> Bus:
        if self._bus is None:
            self._bus = DBusBus()
        return self._bus

    @property
    def files(self) -> Driver:
        if self._files is None:
            if self.unified:
                from minipod.cgroups.v2 import V2Driver

                self._files = V2Driver(self.root)
            else:
                from minipod.cgroups.v1 import V1Driver

                self._files = V1Driver(self.root)
        return self._files

    @property
    def unified(self) -> bool:
        if self._unified is None:
            from minipod.cgroups import fs

            self._unified = fs.is_unified(self.root)
        return self._unified

    # -- unit lifecycle --

    def _start(self, group: str, name: str, props: list[Property]) -> bool:
        """StartTransientUnit and wait for its job, so the cgroup exists when we return.

        False if a unit of that name is already loaded (systemd's UnitExists).
        """
        try:
            (job,) = self.bus.call("StartTransientUnit", "ssa(sv)a(sa(sv))", name, "fail", props, [])
        except BusError as e:
            if e.name == UNIT_EXISTS:
                return False
            raise CgroupError(f"systemd StartTransientUnit {name} (group {group}): {e}") from None
        result = self.bus.wait_job(job, self.job_timeout)
        if result != "done":
            raise CgroupError(f"systemd StartTransientUnit {name} (group {group}): job {result}")
        from minipod import explain

        if explain.ON:
            plain = {k: v[1] for k, v in props if k != "Description"
                     and isinstance(v[1], (int, str, bool))}
            pids = next((v[1] for k, v in props if k == "PIDs"), [])
            shown = " ".join(f"-p {k}={('yes' if v else 'no') if isinstance(v, bool) else v}"
                             for k, v in plain.items() if k != "Slice")
            who = f", PID {' '.join(map(str, pids))} in it" if pids else ""
            kind = "--scope" if name.endswith(".scope") else "--slice-inherit"
            explain.say(f"new systemd unit {name} (cgroup {group}){who}",
                        f"D-Bus org.freedesktop.systemd1.Manager.StartTransientUnit({name!r})",
                        f"systemd-run {kind} --unit={name} --slice={plain.get('Slice', '')} "
                        f"{shown}  # minipod asks over D-Bus; systemd-run is the same request",
                        unit=name, group=group, pids=pids, props=plain)
        return True

    def _active(self, name: str) -> bool | None:
        """True if active, False if loaded but not active (failed, stopping), None if not loaded."""
        state = self.bus.unit_property(name, "org.freedesktop.systemd1.Unit", "ActiveState")
        if state is None:
            return None
        return state in ("active", "activating", "reloading")

    def _set(self, group: str, name: str, props: list[Property]) -> None:
        try:
            self.bus.call("SetUnitProperties", "sba(sv)", name, True, props)
        except BusError as e:
            raise CgroupError(f"systemd SetUnitProperties {name} (group {group}): {e}") from None

    def _start_or_update(self, group: str, name: str, props: list[Property], update: list[Property],
                         attach: int = 0) -> None:
        deadline = time.monotonic() + self.gone_timeout
        while not self._start(group, name, props):
            state = self._active(name)
            if state:
                # Already running (another pod started minipod.slice, or `minipod exec` joins a
                # running container): reuse it. A process joins a running scope by a write to
                # its cgroup.procs, as `runc exec` does: systemd's AttachProcessesToUnit refuses
                # non-delegated units ("Process migration not available on non-delegated
                # units", systemd 252), and the scope needs no delegation for anything else.
                if attach:
                    self.files.join(group, attach)
                if update:
                    self._set(group, name, update)
                return
            # Loaded but not running: a failed scope kept for its result (see join), or one whose
            # last process just exited and that systemd has not collected yet. Clear and retry.
            if time.monotonic() > deadline:
                raise CgroupError(f"systemd StartTransientUnit {name} (group {group}): "
                                  "a unit of that name is still loaded and not running")
            if state is False:
                self._reset_failed(name)
            time.sleep(0.01)

    def _reset_failed(self, name: str) -> None:
        try:
            self.bus.call("ResetFailedUnit", "s", name)
        except BusError as e:
            if e.name != NO_SUCH_UNIT:
                raise CgroupError(f"systemd ResetFailedUnit {name}: {e}") from None

    # -- Driver API --

    def create(self, group: str, limits: Limits = Limits()) -> None:
        name, parent = unit_of(group)
        if name.endswith(".scope"):
            # A scope is a set of processes: it is started by join() with its first process.
            self._scope_limits[group] = limits
            return
        props = unit_properties(limits, self.unified)
        head: list[Property] = [
            ("Description", ("s", f"minipod {group}")),
            ("CollectMode", ("s", "inactive-or-failed")),
        ]
        self._start_or_update(group, name, head + props, props)

    def set_limits(self, group: str, limits: Limits) -> None:
        name, _ = unit_of(group)
        if name.endswith(".scope"):
            self._scope_limits[group] = limits
            if not self._active(name):
                return  # applied when join() starts the scope
        self._set(group, name, unit_properties(limits, self.unified))

    def join(self, group: str, pid: int = 0) -> None:
        name, parent = unit_of(group)
        if not name.endswith(".scope"):
            # cgroup v2's "no internal processes" rule, which systemd enforces: slices hold units.
            raise CgroupError(f"systemd driver: cannot put pid {pid} in {group}: only a .scope holds processes")
        pid = pid or os.getpid()
        # Limits this driver was given for the scope (create, set_limits), or None: `minipod
        # exec` (a new process) joining a running container knows none, and must not set
        # any -- SetUnitProperties with the defaults would set MemoryMax=infinity and lift the
        # container's limits at its first exec.
        known = self._scope_limits.get(group)
        props = unit_properties(known or Limits(), self.unified)
        head: list[Property] = [
            ("Description", ("s", f"minipod {group}")),
            ("Slice", ("s", parent)),
            ("PIDs", ("au", [pid])),
            # Default CollectMode (inactive), not inactive-or-failed: a scope whose processes
            # simply exit is collected at once, but one that *failed* stays loaded until
            # remove() resets it. On purpose: when the kernel OOM-kills a process in the scope,
            # systemd (OOMPolicy=stop, its default, much like the kubelet's memory.oom.group=1)
            # stops the scope and removes its cgroup, memory.events with it, within a fraction
            # of a second (measured in the VM: present right after waitpid, gone 0.5 s later).
            # The failed unit's Result 'oom-kill' is then the only record left; see oom_kills().
        ]
        self._start_or_update(group, name, head + props, props if known else [], attach=pid)

    def procs(self, group: str) -> list[int]:
        return self.files.procs(group)

    def kill(self, group: str, sig: int = 9) -> None:
        self.files.kill(group, sig)

    def oom_kills(self, group: str) -> int:
        if self._exists(group):
            count = self.files.oom_kills(group)
            # A count of 0 from a cgroup that is gone now may be a file that vanished as we
            # read it: systemd removes an OOM-killed scope's cgroup right after the kill
            # (see join()). Then the unit's Result is the record, as below.
            if count or self._exists(group):
                return count
        name, _ = unit_of(group)
        if not name.endswith(".scope"):
            return 0
        result = self.bus.unit_property(name, "org.freedesktop.systemd1.Scope", "Result")
        # systemd keeps no count once the cgroup is gone: 'oom-kill' means at least one.
        return 1 if result == "oom-kill" else 0

    def read(self, group: str, filename: str) -> str | None:
        return self.files.read(group, filename)

    def paths(self, group: str) -> dict[str, str]:
        return self.files.paths(group)

    def _exists(self, group: str) -> bool:
        return any(os.path.isdir(p) for p in self.paths(group).values())

    def _children(self, group: str) -> list[str]:
        kids: set[str] = set()
        for path in self.paths(group).values():
            try:
                kids.update(e.name for e in os.scandir(path) if e.is_dir())
            except FileNotFoundError:
                pass
        return sorted(kids)

    def remove(self, group: str) -> None:
        name, _ = unit_of(group)
        # StopUnit on a slice stops every unit inside it, and on a scope kills its processes:
        # far more than rmdir, which fails with EBUSY on a non-empty group. Keep rmdir's meaning
        # (the orchestrator removes leaves first and treats a busy top slice as "other pods are
        # still running"), so check first. Not atomic against a pod being created in the same
        # slice at this instant: the orchestrator holds the pods' cgroup lock around both.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            children = self._children(group)
            if children:
                raise CgroupBusy(f"remove {group}: busy: still holds {', '.join(children)}")
            pids = self.procs(group)
            if not pids:
                break
            # Members that were just killed leave once reaped; give them a moment, like rmdir.
            if time.monotonic() > deadline:
                raise CgroupError(f"remove {group}: busy: pids {' '.join(map(str, pids))} still in it")
            time.sleep(0.02)
        try:
            (job,) = self.bus.call("StopUnit", "ss", name, "replace")
        except BusError as e:
            if e.name != NO_SUCH_UNIT:
                raise CgroupError(f"systemd StopUnit {name} (group {group}): {e}") from None
        else:
            result = self.bus.wait_job(job, self.job_timeout)
            if result not in ("done", "canceled"):
                raise CgroupError(f"systemd StopUnit {name} (group {group}): job {result}")
        self._reset_failed(name)
        self._scope_limits.pop(group, None)
        # Collection of the stopped unit happens in systemd's next loop iteration: wait for it,
        # so "removed" means gone from `systemctl list-units --all` too, not just inactive.
        deadline = time.monotonic() + self.gone_timeout
        while (state := self.bus.unit_property(name, "org.freedesktop.systemd1.Unit", "ActiveState")) is not None:
            if time.monotonic() > deadline:
                raise CgroupError(f"remove {group}: systemd still has {name} loaded ({state})")
            if state == "failed":
                self._reset_failed(name)
            time.sleep(0.01)
