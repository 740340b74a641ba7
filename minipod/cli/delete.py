"""`minipod delete`, as kubectl delete behaves for pods (staging kubectl pkg/cmd/delete).

Graceful by default: SIGTERM, the pod's terminationGracePeriodSeconds, SIGKILL, then the pod is
removed from the host. kubectl's rules for the grace period:
    --now               = --grace-period=1 (and not together with --grace-period)
    --grace-period=0    = 1, unless --force (0 asks for immediate deletion only when forced)
    --force             alone means --grace-period=0, with kubectl's warning
A missing pod is reported as the API server reports it and the others are still deleted; the
exit code is 1 if any was missing (unless --ignore-not-found).
"""

from __future__ import annotations

import sys

from minipod.errors import MinipodError, NotFound, UsageError

FORCE_WARNING = ("Warning: Immediate deletion does not wait for confirmation that the running"
                 " resource has been terminated. The resource may continue to run on the"
                 " cluster indefinitely.")


def grace_period(grace: int, now: bool, force: bool) -> int:
    """The effective --grace-period (-1: the pod's own)."""
    if now:
        if grace != -1:
            raise UsageError("--now and --grace-period cannot be specified together")
        grace = 1
    if grace == 0 and not force:
        grace = 1
    if force and grace < 0:
        grace = 0
    return grace


def _names(names: list[str], filename: str | None) -> list[str]:
    if names[:1] in (["pod"], ["pods"], ["po"]):
        names = names[1:]
    for n in names:
        if n.startswith(("pod/", "pods/")):
            names = [x.split("/", 1)[1] if x.startswith(("pod/", "pods/")) else x for x in names]
            break
    if filename:
        if names:
            raise UsageError("delete: give pod names or -f FILE, not both")
        from minipod.spec import spec

        return [lp.pod.metadata.name for lp in spec.load(filename).pods]
    if not names:
        raise UsageError("delete: a pod name or -f FILE is required (minipod delete POD)")
    return names


def run(cfg, names: list[str], filename: str | None, grace: int, now: bool, force: bool,
        ignore_not_found: bool = False) -> int:
    from minipod.cli import runner

    grace = grace_period(grace, now, force)
    if force and grace == 0:
        print(FORCE_WARNING, file=sys.stderr)
    code = 0
    for name in _names(names, filename):
        try:
            if force and grace == 0:
                runner.remove(name, cfg, force=True)
            else:
                try:
                    runner.stop(name, cfg, None if grace < 0 else grace)
                except NotFound:
                    raise
                except MinipodError as e:
                    if "not found" in str(e):
                        raise NotFound(str(e)) from None
                    raise
                runner.remove(name, cfg, force=True)
        except NotFound:
            if not ignore_not_found:
                print(f'Error from server (NotFound): pods "{name}" not found', file=sys.stderr)
                code = 1
            continue
        print(f'pod "{name}" {"force " if force and grace == 0 else ""}deleted', flush=True)
    return code
