"""minipod.kubelet.probes: the kubelet's probe defaults, thresholds and timing, on a fake clock."""

from __future__ import annotations

import math

import pytest

from minipod.kubelet.probes import Prober, for_container

EXEC = {"exec": {"command": ["true"]}}


def probe(**fields) -> dict:
    return {**EXEC, **fields}


def run(p: Prober, ok: bool, now: float) -> str | None:
    """One probe run as the supervisor does it: due, begin, record."""
    assert p.due(now), f"{p} not due at {now}"
    p.begin(now)
    return p.record(ok, now)


def due_times(p: Prober, until: float, step: float = 0.5, ok: bool = True) -> list[float]:
    """Walk a fake clock in small steps; run the probe (instantly) whenever it is due."""
    out = []
    t = 0.0
    while t <= until:
        if p.due(t):
            p.begin(t)
            p.record(ok, t)
            out.append(t)
        t += step
    return out


# --- defaults ----------------------------------------------------------------------------

def test_defaults_are_the_kubelets():
    p = Prober("liveness", probe(), started=0)
    assert (p.delay, p.period, p.timeout) == (0, 10, 1)
    assert (p.success_threshold, p.failure_threshold) == (1, 3)
    assert p.grace is None


def test_zero_means_default_and_values_are_kept():
    p = Prober("readiness", probe(periodSeconds=0, timeoutSeconds=0, successThreshold=0,
                                  failureThreshold=0), started=0)
    assert (p.period, p.timeout, p.success_threshold, p.failure_threshold) == (10, 1, 1, 3)
    p = Prober("liveness", probe(initialDelaySeconds=4, periodSeconds=2, timeoutSeconds=5,
                                 failureThreshold=7, terminationGracePeriodSeconds=3), started=0)
    assert (p.delay, p.period, p.timeout, p.failure_threshold, p.grace) == (4, 2, 5, 7, 3)


def test_bad_kind_and_bad_field_are_named():
    with pytest.raises(ValueError, match="probe kind 'alive'"):
        Prober("alive", probe(), 0)
    with pytest.raises(ValueError, match="periodSeconds"):
        Prober("liveness", probe(periodSeconds=-1), 0)


def test_handler_is_the_action_only():
    p = Prober("liveness", {"httpGet": {"port": 80}, "periodSeconds": 3}, 0)
    assert p.handler == {"httpGet": {"port": 80}}


def test_initial_state():
    live = Prober("liveness", probe(), 0)
    ready = Prober("readiness", probe(), 0)
    start = Prober("startup", probe(), 0)
    # readiness starts failed; liveness does not affect readiness; startup not yet started
    assert live.ready and live.started
    assert not ready.ready and ready.started
    assert not start.ready and not start.started


# --- timing -------------------------------------------------------------------------------

def test_first_probe_at_start_plus_initial_delay_then_every_period():
    p = Prober("liveness", probe(initialDelaySeconds=5, periodSeconds=10), started=100)
    assert not p.due(104.9)
    assert p.next_time() == 105
    assert due_times(p, 140) == [105, 115, 125, 135]


def test_no_delay_probes_at_container_start():
    p = Prober("readiness", probe(periodSeconds=3), started=0)
    assert p.due(0)
    assert due_times(p, 10) == [0, 3, 6, 9]


def test_a_probe_in_flight_is_not_started_again():
    p = Prober("liveness", probe(periodSeconds=10), started=0)
    p.begin(0)
    assert p.next_time() == math.inf
    assert not p.due(10) and not p.due(25)
    p.record(True, 4)
    assert p.next_time() == 10


def test_overrun_runs_again_at_once_and_missed_slots_are_not_made_up():
    p = Prober("liveness", probe(periodSeconds=10, timeoutSeconds=30), started=0)
    p.begin(0)
    p.record(True, 25)      # ran past two slots (10, 20)
    assert p.due(25)        # one late tick, like a Go ticker
    p.begin(25)
    p.record(True, 26)
    assert p.next_time() == 30  # back on the grid measured from the container's start
    assert not p.due(29.9)


def test_late_begin_stays_on_the_grid():
    p = Prober("liveness", probe(periodSeconds=10), started=0)
    assert p.due(13)        # the supervisor was busy; slot 10 is taken at 13
    p.begin(13)
    p.record(True, 13)
    assert p.next_time() == 20


# --- liveness -----------------------------------------------------------------------------

def test_liveness_restarts_after_failure_threshold_consecutive_failures():
    p = Prober("liveness", probe(periodSeconds=1, failureThreshold=3), started=0)
    assert run(p, False, 0) is None
    assert run(p, False, 1) is None
    assert run(p, False, 2) == "restart"


def test_liveness_success_resets_the_failure_count():
    p = Prober("liveness", probe(periodSeconds=1, failureThreshold=3), started=0)
    results = [run(p, ok, t) for t, ok in enumerate([False, False, True, False, False])]
    assert results == [None] * 5
    assert run(p, False, 5) == "restart"


def test_failure_threshold_one_restarts_at_once():
    p = Prober("liveness", probe(failureThreshold=1), started=0)
    assert run(p, False, 0) == "restart"


def test_after_restart_the_prober_is_held():
    p = Prober("liveness", probe(periodSeconds=1, failureThreshold=1), started=0)
    assert run(p, False, 0) == "restart"
    assert p.held
    assert p.next_time() == math.inf and not p.due(100)
    assert p.record(False, 1) is None  # a late result changes nothing


def test_liveness_successes_never_transition():
    p = Prober("liveness", probe(periodSeconds=1), started=0)
    assert [run(p, True, t) for t in range(5)] == [None] * 5
    assert p.ready and p.started


# --- readiness ----------------------------------------------------------------------------

def test_readiness_becomes_ready_after_success_threshold():
    p = Prober("readiness", probe(periodSeconds=1, successThreshold=3), started=0)
    assert run(p, True, 0) is None
    assert run(p, True, 1) is None
    assert not p.ready
    assert run(p, True, 2) == "ready"
    assert p.ready
    assert run(p, True, 3) is None  # no repeated transition


def test_readiness_initial_failures_are_no_transition():
    p = Prober("readiness", probe(periodSeconds=1, failureThreshold=1), started=0)
    assert [run(p, False, t) for t in range(4)] == [None] * 4
    assert not p.ready


def test_readiness_becomes_unready_after_failure_threshold_and_back():
    p = Prober("readiness", probe(periodSeconds=1, failureThreshold=2), started=0)
    assert run(p, True, 0) == "ready"
    assert run(p, False, 1) is None
    assert run(p, True, 2) is None  # the single failure was below the threshold
    assert run(p, False, 3) is None
    assert run(p, False, 4) == "unready"
    assert not p.ready
    assert run(p, False, 5) is None
    assert run(p, True, 6) == "ready"


def test_readiness_failure_never_restarts():
    p = Prober("readiness", probe(periodSeconds=1, failureThreshold=1), started=0)
    run(p, True, 0)
    assert [run(p, False, t) for t in range(1, 10)] == ["unready"] + [None] * 8
    assert not p.held


def test_success_threshold_needs_consecutive_successes():
    p = Prober("readiness", probe(periodSeconds=1, successThreshold=2), started=0)
    assert [run(p, ok, t) for t, ok in enumerate([True, False, True, True])] == \
        [None, None, None, "ready"]


# --- startup ------------------------------------------------------------------------------

def test_startup_holds_off_liveness_and_readiness():
    spec = {"startupProbe": probe(periodSeconds=5, failureThreshold=10),
            "livenessProbe": probe(periodSeconds=10),
            "readinessProbe": probe(periodSeconds=10)}
    start, live, ready = for_container(spec, started=0)
    assert (start.kind, live.kind, ready.kind) == ("startup", "liveness", "readiness")
    for t in (0, 5, 10, 20):
        assert not live.due(t) and not ready.due(t)
        assert live.next_time() == math.inf
    assert run(start, False, 0) is None
    assert run(start, False, 5) is None
    assert run(start, True, 23) == "started"
    assert start.started and start.ready
    # readiness runs as soon as the container is started, liveness at its next slot
    assert ready.due(23)
    assert not live.due(29.9)
    assert live.next_time() == 30


def test_startup_is_not_run_again_after_success():
    start = Prober("startup", probe(periodSeconds=1), started=0)
    assert run(start, True, 0) == "started"
    assert start.next_time() == math.inf
    assert not start.due(1000)
    assert start.record(False, 1001) is None  # a late result changes nothing


def test_startup_failure_threshold_restarts_and_others_never_ran():
    spec = {"startupProbe": probe(periodSeconds=1, failureThreshold=3),
            "livenessProbe": probe(periodSeconds=1)}
    start, live = for_container(spec, started=0)
    assert run(start, False, 0) is None
    assert run(start, False, 1) is None
    assert run(start, False, 2) == "restart"
    assert not live.due(3) and not start.due(3)
    assert not start.started


def test_readiness_waits_for_its_initial_delay_even_after_startup():
    spec = {"startupProbe": probe(periodSeconds=1),
            "readinessProbe": probe(initialDelaySeconds=20, periodSeconds=10)}
    start, ready = for_container(spec, started=0)
    assert run(start, True, 2) == "started"
    assert not ready.due(19.9)
    assert ready.next_time() == 20


def test_liveness_starts_at_once_when_startup_succeeds_on_a_slot_boundary_after():
    spec = {"startupProbe": probe(periodSeconds=10), "livenessProbe": probe(periodSeconds=10)}
    start, live = for_container(spec, started=0)
    assert run(start, True, 0) == "started"
    # the liveness slot at 0 passed while the container was not started: next one is 10
    assert live.next_time() == 10


def test_container_ready_and_started_aggregate():
    spec = {"startupProbe": probe(periodSeconds=1), "livenessProbe": probe(periodSeconds=1),
            "readinessProbe": probe(periodSeconds=1)}
    ps = for_container(spec, started=0)
    start, live, ready = ps
    assert not all(p.started for p in ps) and not all(p.ready for p in ps)
    run(start, True, 0)
    assert all(p.started for p in ps) and not all(p.ready for p in ps)
    run(ready, True, 0)
    assert all(p.ready for p in ps)


def test_for_container_without_probes_and_without_startup():
    assert for_container({"name": "x"}, 0) == []
    (live,) = for_container({"livenessProbe": probe(periodSeconds=2)}, started=7)
    assert live.kind == "liveness" and live.after is None
    assert live.due(7)
