"""Container plans for unit tests: every field a real plan has, with harmless values, so a test
names only what it is about."""

from __future__ import annotations

from minipod.pod.plan import ContainerPlan


def container_plan(name: str = "app", **fields) -> ContainerPlan:
    base = dict(name=name, image="busybox", image_ref="docker.io/library/busybox:latest",
                image_digest="sha256:" + "0" * 64, layers=[], argv=["sh"], env=[], cwd="/",
                user="", caps=[], no_new_privs=False, privileged=False, readonly_rootfs=False,
                mounts=[], cgroup="unused", limits={}, oom_score_adj=0, stop_signal=15,
                rootfs="", upper="", work="", log_dir="")
    base.update(fields)
    return ContainerPlan(**base)
