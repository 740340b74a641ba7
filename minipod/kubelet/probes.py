"""When to probe a container and what the results mean, as the kubelet decides (no I/O).

A Prober is one probe of one container instance: the supervisor asks due(now), runs the
handler (minipod.kubelet.actions), calls begin(now) when it starts it and record(ok, now) when it ends,
and acts on the transition record() returns. A restarted container gets new Probers.

The rules (pkg/kubelet/prober/worker.go, pkg/apis/core/v1/defaults.go):
- Defaults: initialDelaySeconds 0, periodSeconds 10, timeoutSeconds 1, successThreshold 1,
  failureThreshold 3; 0 means "the default", as the API server's defaulting does.
- A result changes the probe's state only after `threshold` identical results in a row.
- Readiness starts failed ("unready"); liveness and startup start successful.
- While a startup probe has not succeeded, liveness and readiness do not run; once it has, it
  never runs again for this container instance.
- A liveness or startup failure asks for a restart, and the prober then stops for good (the
  kubelet puts the worker on hold until it sees a new container).
- A probe in flight is never started a second time.

Timing: probes run on a grid measured from the container's start: start + initialDelaySeconds
+ k * periodSeconds. A probe that overruns its period runs again at once when it ends (as a Go
ticker delivers one late tick), and missed slots are not made up. Once the startup probe
succeeds, readiness runs at once (the kubelet triggers it when the container becomes started)
and liveness at its next slot. Where the kubelet differs: its grid starts when its worker does
(plus a random jitter after a kubelet restart), so initialDelaySeconds rounds up to a period.
"""

from __future__ import annotations

import math

KINDS = ("startup", "liveness", "readiness")
HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1,
            "successThreshold": 1, "failureThreshold": 3}

# What record() returns.
STARTED, READY, UNREADY, RESTART = "started", "ready", "unready", "restart"


def _field(spec: dict, name: str) -> int:
    value = spec.get(name)
    if not value:  # missing, None or 0: the default (SetDefaults_Probe)
        return DEFAULTS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name}: expected a non-negative number of seconds (got {value!r})")
    return value


class Prober:
    """One probe ("liveness" | "readiness" | "startup") of one container instance.

    `started` is the container's start time on the clock the caller uses for `now` (monotonic).
    `after` is the container's startup prober, if it has one: this prober waits for it.

    Attributes for the container's status: `.ready` is the readiness result for a readiness
    probe, "started" for a startup probe and always True for liveness; `.started` is False only
    for a startup probe that has not succeeded. So a running container is Ready iff
    all(p.ready for p in probers), and Started iff all(p.started for p in probers).
    """

    def __init__(self, kind: str, spec: dict, started: float, after: Prober | None = None):
        if kind not in KINDS:
            raise ValueError(f"probe kind {kind!r}: expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.spec = spec
        self.started_at = started
        self.after = after
        self.delay = _field(spec, "initialDelaySeconds")
        self.period = _field(spec, "periodSeconds")
        self.timeout = _field(spec, "timeoutSeconds")
        self.success_threshold = _field(spec, "successThreshold")
        self.failure_threshold = _field(spec, "failureThreshold")
        # Probe-level terminationGracePeriodSeconds: the grace of a liveness/startup kill.
        self.grace: int | None = spec.get("terminationGracePeriodSeconds")
        self.ready = kind == "liveness"
        self.started = kind != "startup"
        self.succeeded_at: float | None = None  # startup: when it succeeded
        self.in_flight = False
        self.held = False      # asked for a restart: never probe this container again
        self._next = started + self.delay
        self._gated = after is not None  # waiting for `after` to succeed
        self._last: bool | None = None
        self._run = 0          # how many identical results in a row

    @property
    def handler(self) -> dict:
        """The probe's handler ({"exec": ...}, {"httpGet": ...}, ...) for actions.spawn."""
        return {k: self.spec[k] for k in HANDLERS if self.spec.get(k) is not None}

    def _slot_after(self, t: float) -> float:
        """The first grid time strictly after t."""
        base = self.started_at + self.delay
        if t < base:
            return base
        return base + (math.floor((t - base) / self.period) + 1) * self.period

    def _open(self) -> bool:
        """Is the startup gate open? On the first look after it opened, place our next run."""
        if not self._gated:
            return True
        if self.after is None or self.after.succeeded_at is None:
            return False
        self._gated = False
        opened = self.after.succeeded_at
        if self.kind == "readiness":
            self._next = max(self._next, opened)
        elif self._next <= opened:
            self._next = self._slot_after(opened)
        return True

    def next_time(self) -> float:
        """When the probe is next due (math.inf: not schedulable now: in flight, waiting for
        the startup probe, done, or held)."""
        if self.in_flight or self.held or (self.kind == "startup" and self.started):
            return math.inf
        if not self._open():
            return math.inf
        return self._next

    def due(self, now: float) -> bool:
        return now >= self.next_time()

    def begin(self, now: float) -> None:
        """The caller started the probe's handler: no second run until record()."""
        self.in_flight = True
        self._next = self._slot_after(now)

    def record(self, ok: bool, now: float) -> str | None:
        """A result came in; return the transition it causes, if any: "started", "ready",
        "unready" or "restart"."""
        self.in_flight = False
        if self.held or (self.kind == "startup" and self.started):
            return None  # a late result for a container we already gave up on / started
        if ok == self._last:
            self._run += 1
        else:
            self._last, self._run = ok, 1
        if self._run < (self.success_threshold if ok else self.failure_threshold):
            return None  # below the threshold: the state stays as it is
        if self.kind == "readiness":
            if ok != self.ready:
                self.ready = ok
                return READY if ok else UNREADY
            return None
        if not ok:  # liveness or startup
            self.held = True
            return RESTART
        if self.kind == "startup":
            self.started = self.ready = True
            self.succeeded_at = now
            return STARTED
        return None

    def __repr__(self) -> str:
        return (f"Prober({self.kind}, next={self._next:g}, run={self._last}x{self._run}, "
                f"ready={self.ready}, started={self.started}, held={self.held})")


def for_container(spec: dict, started: float) -> list[Prober]:
    """The probers of a container (its manifest as a camelCase dict): startup first, then
    liveness and readiness, which wait for the startup probe if there is one."""
    out: list[Prober] = []
    startup = None
    if spec.get("startupProbe"):
        startup = Prober("startup", spec["startupProbe"], started)
        out.append(startup)
    for kind in ("liveness", "readiness"):
        if spec.get(f"{kind}Probe"):
            out.append(Prober(kind, spec[f"{kind}Probe"], started, after=startup))
    return out
