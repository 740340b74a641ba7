"""`pods/{name}/log`: a container's log as text, followed with ?follow=true -- the same files
and readers as `minipod logs` (kubelet/logs.py)."""

from __future__ import annotations

from minipod.api.status import ApiError


def log(api, req, ns: str, name: str):
    from minipod import state
    from minipod.api import pods
    from minipod.errors import MinipodError
    from minipod.kubelet import logs

    pods._find(api, ns, name)  # 404 in another namespace
    rec = state.PodRecord(api.cfg.root, name)
    container = req.arg("container") or None
    if container is None and len(rec.plan["containers"]) > 1:
        names = " ".join(c["name"] for c in rec.plan["containers"])
        raise ApiError(400, f"a container name must be specified for pod {name}, choose one "
                            f"of: [{names}]")
    try:
        c, st = rec.container(container)
    except MinipodError as e:
        raise ApiError(400, str(e)) from None
    tail = req.int_arg("tailLines")
    tail = -1 if tail is None else tail
    stamps = req.flag("timestamps")
    inst = int(st.get("instance", 0))
    if req.flag("previous"):
        if inst == 0:
            raise ApiError(400, f'previous terminated container "{c["name"]}" in pod '
                                f'"{name}" not found')
        inst -= 1
    if "running" not in (st.get("state") or {}) and "terminated" not in (st.get("state") or {}) \
            and inst == int(st.get("instance", 0)) and not req.flag("previous"):
        reason = ((st.get("state") or {}).get("waiting") or {}).get("reason", "ContainerCreating")
        if reason in ("ContainerCreating", "PodInitializing"):
            raise ApiError(400, f'container "{c["name"]}" in pod "{name}" is waiting to start:'
                                f" {reason}")
    out = req.stream("text/plain")
    try:
        if not req.flag("follow") or req.flag("previous"):
            out.write(logs.read(logs.path(c["log_dir"], inst), tail, stamps))
        else:
            # One container instance, as the kubelet streams it: the stream ends when this
            # instance ends, even if the container restarts (kubectl logs -f then exits).
            def instance() -> int:
                return inst

            def alive() -> bool:
                if out.client_gone():
                    return False
                try:
                    r = state.PodRecord(api.cfg.root, name)
                    s = r.container(c["name"])[1]
                except MinipodError:
                    return False
                return (r.active and int(s.get("instance", inst)) == inst and
                        ("running" in (s.get("state") or {}) or
                         "waiting" in (s.get("state") or {})))

            logs.follow(c["log_dir"], instance, alive, out, tail, stamps)
        out.close()
    except OSError:
        pass
    return None
