"""Probes and lifecycle hooks of a pod's running containers, for the supervisor.

Every probe run and every hook is a forked child (actions.py) whose exit says how it went, so
the single-threaded supervisor never blocks on a slow HTTP server or command: it reaps them
like any other child and hands the pid here. What a result means (probes.py) goes back to
the supervisor as a transition: ready/unready, started, or "restart".
"""

from __future__ import annotations

import math

from minipod.kubelet import actions, probes
from minipod.kubelet.supervisor import Phase


class Health:
    def __init__(self, sup):
        self.sup = sup
        # pid -> (container, its instance, "probe" | "postStart" | "preStop", Running, Prober)
        self.inflight: dict[int, tuple] = {}

    def _spawn(self, ctr, handler: dict, what: str, timeout: float | None, prober=None) -> None:
        sup = self.sup
        r = actions.spawn(handler, ctr.c, ctr.pid, sup.pod.network.get("ip", ""), sup.driver,
                          timeout)
        self.inflight[r.pid] = (ctr, ctr.instance, what, r, prober)

    # --- the supervisor calls these --------------------------------------------------------

    def started(self, ctr) -> None:
        """A container instance just started: its probers, and its postStart hook."""
        if ctr.kind != "init":  # plain init containers have no probes (sidecars do)
            ctr.probers = probes.for_container(ctr.c.spec, self.sup.clock())
        hook = (ctr.c.spec.get("lifecycle") or {}).get("postStart")
        if hook:
            ctr.phase = Phase.STARTING
            self._spawn(ctr, hook, "postStart", None)

    def run_due(self) -> None:
        now = self.sup.clock()
        for ctr in self.sup.ctrs.values():
            if ctr.phase != Phase.RUNNING:  # not while postStart runs, nor once stopping
                continue
            for p in ctr.probers:
                if p.due(now):
                    p.begin(now)
                    self._spawn(ctr, p.handler, "probe", p.timeout, p)

    def next_time(self) -> float | None:
        times = [p.next_time() for c in self.sup.ctrs.values() if c.running
                 for p in c.probers]
        t = min((x for x in times if math.isfinite(x)), default=None)
        return t

    def pre_stop(self, ctr, deadline: float) -> bool:
        """Run the preStop hook inside the grace period; True if one was started."""
        hook = (ctr.c.spec.get("lifecycle") or {}).get("preStop")
        now = self.sup.clock()
        if not hook or deadline <= now:
            return False
        self._spawn(ctr, hook, "preStop", max(deadline - now, 0.1))
        return True

    def cancel(self, ctr=None, keep_hooks: bool = False) -> None:
        """Kill in-flight actions (of one container, or all); they are still reaped later."""
        for ctr_, _, what, r, _ in self.inflight.values():
            if (ctr is None or ctr_ is ctr) and not (keep_hooks and what == "preStop"):
                r.cancel()

    def reaped(self, pid: int, status: int) -> bool:
        """Handle a reaped child if it was one of ours; False if it was not."""
        entry = self.inflight.pop(pid, None)
        if entry is None:
            return False
        ctr, instance, what, r, prober = entry
        ok, msg = r.finish(status)
        if instance != ctr.instance or not ctr.running:
            return True  # about an instance that is gone
        sup = self.sup
        if what == "postStart":
            if ctr.phase == Phase.STARTING:
                ctr.phase = Phase.RUNNING
            if not ok:
                sup.event("Warning", "FailedPostStartHook", msg, ctr)
                sup.stop_container(ctr, sup.clock(),
                                   f"FailedPostStartHook: {msg}")
            sup.write_state()
            sup.advance()
        elif what == "preStop":
            if not ok:
                sup.event("Warning", "FailedPreStopHook", msg, ctr)
            sup.send_stop_signal(ctr)
        else:
            self._probe_result(ctr, prober, ok, msg)
        return True

    def _probe_result(self, ctr, prober, ok: bool, msg: str) -> None:
        sup = self.sup
        kind = prober.kind.capitalize()
        if not ok:
            sup.event("Warning", "Unhealthy", f"{kind} probe failed: {msg}", ctr)
        elif msg:
            sup.event("Warning", "ProbeWarning", f"{kind} probe warning: {msg}", ctr)
        change = prober.record(ok, sup.clock())
        if change == "restart":
            grace = prober.grace if prober.grace is not None else sup.plan.grace_seconds
            why = "liveness" if prober.kind == "liveness" else "startup"
            sup.stop_container(ctr, sup.clock() + grace,
                               f"Container {ctr.name} failed {why} probe, will be restarted")
        elif change:
            sup.write_state()
            if change == "started":
                sup.advance()
