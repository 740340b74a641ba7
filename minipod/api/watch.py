"""Resource versions and watch events for pods, from the pod records on disk.

minipod has no database that numbers its changes, so the server does: one thread reads every
pod record every POLL seconds, and each pod whose object changed gets the next resourceVersion
and an ADDED, MODIFIED or DELETED event in a bounded history. Reads (get, list) go through the
same snapshot, so a list's resourceVersion and the watch that follows it agree.

Versions start at the server's start time in milliseconds, so they only grow, also across a
restart of the server; a version older than the history (or from before the restart) is 410
Expired, as etcd's compaction makes it, and kubectl then lists again.
"""

from __future__ import annotations

import collections
import json
import threading
import time

from minipod import state

POLL = 0.4
HISTORY = 2000


class Hub:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rv = int(time.time() * 1000)
        self.oldest = self.rv  # events with rv > oldest are all in the history
        # name -> (canonical json, object, (READY, STATUS) as `kubectl get` prints them)
        self.objects: dict[str, tuple[str, dict, tuple[str, str]]] = {}
        self.history: collections.deque = collections.deque(maxlen=HISTORY)
        self.deleting: dict[str, tuple[float, int]] = {}  # name -> (when, grace): API deletes
        self.cond = threading.Condition()
        self.refresh_lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="watch-hub", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(POLL):
            try:
                self.refresh()
            except Exception:  # never let one bad read end the server's watches
                import logging

                logging.getLogger("minipod.api").exception("refresh failed")

    def _read(self) -> dict[str, tuple[dict, tuple[str, str]]]:
        from minipod.cli import status
        from minipod.errors import MinipodError

        out = {}
        for n in state.names(self.cfg.root):
            try:
                rec = state.PodRecord(self.cfg.root, n)
            except MinipodError:
                continue
            if rec.creating:
                continue
            obj = status.pod_object(rec)
            obj.setdefault("metadata", {}).setdefault("namespace", "default")
            if n in self.deleting or rec.state.get("stopping"):
                when, grace = self.deleting.get(n, (time.time(), rec.plan.get("grace_seconds",
                                                                              30)))
                obj["metadata"]["deletionTimestamp"] = time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(when + grace))
                obj["metadata"]["deletionGracePeriodSeconds"] = grace
            shown = "Terminating" if "deletionTimestamp" in obj["metadata"] \
                else status.display_status(rec)
            out[n] = (obj, (status.ready(rec), shown))
        return out

    def refresh(self) -> None:
        """Read the records; number and publish what changed."""
        with self.refresh_lock:
            now = self._read()
            with self.cond:
                changed = False
                for name, (obj, printed) in now.items():
                    canon = json.dumps([obj, printed], sort_keys=True)
                    old = self.objects.get(name)
                    if old and old[0] == canon:
                        continue
                    self.rv += 1
                    obj["metadata"]["resourceVersion"] = str(self.rv)
                    self.objects[name] = (canon, obj, printed)
                    self.history.append((self.rv, "MODIFIED" if old else "ADDED", obj,
                                         printed))
                    changed = True
                for name in [n for n in self.objects if n not in now]:
                    _, obj, printed = self.objects.pop(name)
                    self.deleting.pop(name, None)
                    self.rv += 1
                    gone = json.loads(json.dumps(obj))
                    gone["metadata"]["resourceVersion"] = str(self.rv)
                    # An API server's last word on a deleted pod carries its deletionTimestamp
                    # (kubectl prints it as Terminating), also when the pod went faster than a
                    # poll could see it stopping (`minipod rm -f`).
                    if "deletionTimestamp" not in gone["metadata"]:
                        gone["metadata"]["deletionTimestamp"] = time.strftime(
                            "%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                        gone["metadata"]["deletionGracePeriodSeconds"] = 0
                        printed = (printed[0], "Terminating")
                    self.history.append((self.rv, "DELETED", gone, printed))
                    changed = True
                if len(self.history) == HISTORY:
                    self.oldest = self.history[0][0] - 1
                if changed:
                    self.cond.notify_all()

    def snapshot(self) -> tuple[int, list[tuple[dict, tuple[str, str]]]]:
        """(resourceVersion, [(object, printed)]) as of now, in name order."""
        self.refresh()
        with self.cond:
            return self.rv, [(o, p) for _, (_, o, p) in sorted(self.objects.items())]

    def events_since(self, rv: int, timeout: float) -> list[tuple] | None:
        """The events after rv, waiting up to timeout for one; None: rv is too old (410)."""
        with self.cond:
            if rv < self.oldest:
                return None
            if self.rv <= rv:
                self.cond.wait(timeout)
            return [e for e in self.history if e[0] > rv]
