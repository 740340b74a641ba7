"""`minipod describe` and `minipod events`: `kubectl describe pod` and `kubectl get events`.

Pure functions of PodRecords (plan + state on disk) and a clock. The layout follows kubectl 1.36
(k8s.io/kubectl pkg/describe/describe.go describePod, DescribeEvents; the event table follows
pkg/printers/internalversion printEvent): the same field order, wording, indentation and the same
column alignment, which comes from Go's text/tabwriter (see tabwrite()).

Describe lines are written as kubectl writes them: cells separated by tabs, two spaces per level.
"""

from __future__ import annotations

import calendar
import math
import time
from urllib.parse import quote

from minipod import state
from minipod.cli import status
from minipod.spec.quantity import Quantity

L1, L2, L3 = "  ", "    ", "      "  # kubectl's PrefixWriter levels 1-3

# The order in which the kubelet and the scheduler leave the conditions in a Pod's status.
CONDITION_ORDER = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                   "PodScheduled")
SKIP_ANNOTATIONS = {"kubectl.kubernetes.io/last-applied-configuration"}
MAX_ANNOTATION_LEN = 140
EVENT_SOURCE = "kubelet"


# --- Go's text/tabwriter ----------------------------------------------------------------------

def tabwrite(text: str, padding: int = 2) -> str:
    """Align tab-separated cells as Go's tabwriter does (minwidth 0, padding 2, pad with ' ').

    A column is aligned over a *block*: consecutive lines that all have a tab-terminated cell in
    that column. A line without one (`Containers:`) ends every block, which is why kubectl's
    sections line up independently. The last cell of a line is never padded; an empty cell that
    is tab-terminated is (hence the trailing spaces of `Medium:` in kubectl's output).
    """
    rows = [line.split("\t") for line in text.split("\n")]
    out = [""] * len(rows)

    def write(lo: int, hi: int, widths: list[int]) -> None:
        for i in range(lo, hi):
            out[i] = "".join(cell.ljust(widths[j]) if j < len(widths) else cell
                             for j, cell in enumerate(rows[i]))

    def has_cell(i: int, column: int) -> bool:
        return column < len(rows[i]) - 1

    def align(lo: int, hi: int, widths: list[int]) -> None:
        column = len(widths)
        done = lo
        i = lo
        while i < hi:
            if not has_cell(i, column):
                i += 1
                continue
            write(done, i, widths)
            start = i
            width = 0
            while i < hi and has_cell(i, column):
                width = max(width, len(rows[i][column]) + padding)
                i += 1
            align(start, i, widths + [width])
            done = i
        write(done, hi, widths)

    align(0, len(rows), [])
    return "\n".join(out)


# --- times -------------------------------------------------------------------------------------

def _epoch(iso: str | None) -> float | None:
    """'2024-03-09T23:34:21.123456789Z' (the runtime's timestamps) -> seconds since the epoch."""
    if not iso:
        return None
    base, _, frac = iso.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float("0." + frac) if frac else 0.0)


def rfc1123z(t: float | None) -> str:
    """Go's time.RFC1123Z in local time, as kubectl prints Start Time, Started and Finished.
    A missing time is Go's zero time, which kubectl prints as it is."""
    if not t:
        return "Mon, 01 Jan 0001 00:00:00 +0000"
    return time.strftime("%a, %d %b %Y %H:%M:%S %z", time.localtime(t))


def since(t: float | None, now: float) -> str:
    """kubectl's translateTimestampSince: HumanDuration of now - t."""
    if not t:
        return "<unknown>"
    if int(now - t) < -1:  # more than a second in the future (duration.HumanDuration)
        return "<invalid>"
    return status.age(now - t)


# --- the header --------------------------------------------------------------------------------

def _multiline(title: str, pairs: list[str]) -> list[str]:
    """printLabelsMultiline: the first pair beside the title, the others under it."""
    if not pairs:
        return [f"{title}:\t<none>"]
    return [f"{title}:\t{pairs[0]}"] + [f"\t{p}" for p in pairs[1:]]


def _labels(title: str, labels: dict) -> list[str]:
    return _multiline(title, [f"{k}={labels[k]}" for k in sorted(labels)])


def _annotations(annotations: dict) -> list[str]:
    """printAnnotationsMultiline: long or multi-line values go under their key, cut at 140."""
    pairs = []
    for key in sorted(k for k in annotations if k not in SKIP_ANNOTATIONS):
        value = annotations[key].removesuffix("\n")
        if len(value) + len(key) + 2 > MAX_ANNOTATION_LEN or "\n" in value:
            limit = MAX_ANNOTATION_LEN - 2
            pairs.append(f"{key}:" + "".join(
                f"\n\t  {s[:limit] + '...' if len(s) > limit else s}" for s in value.split("\n")))
        else:
            pairs.append(f"{key}: {value}")
    return _multiline("Annotations", pairs)


def _status(rec: state.PodRecord, pod: dict, now: float) -> list[str]:
    phase = pod["status"]["phase"]
    if not rec.state.get("stopping") or phase in state.FINAL:
        return [f"Status:\t{phase}"]
    # A deleted pod's deletionTimestamp is the time of the request plus the grace period (the
    # API server sets it so), so during the grace period kubectl says "lasts <invalid>".
    grace = rec.state.get("stop_grace", rec.plan["grace_seconds"])
    asked = rec.state.get("stop_requested_at")
    deletion = asked + grace if asked else None
    return [f"Status:\tTerminating (lasts {since(deletion, now)})",
            f"Termination Grace Period:\t{grace}s"]


def _header(rec: state.PodRecord, pod: dict, now: float) -> list[str]:
    st = pod["status"]
    lines = [f"Name:\t{rec.plan['name']}", f"Namespace:\t{rec.plan['namespace']}", "Priority:\t0",
             f"Node:\t{pod['spec']['nodeName']}/{st.get('hostIP') or ''}"]
    if rec.state.get("started_at"):
        lines.append(f"Start Time:\t{rfc1123z(rec.state['started_at'])}")
    lines += _labels("Labels", rec.plan.get("labels") or {})
    lines += _annotations(rec.plan.get("annotations") or {})
    lines += _status(rec, pod, now)
    if st.get("message"):
        lines.append(f"Message:\t{st['message']}")
    lines.append(f"IP:\t{st.get('podIP') or ''}")
    ips = st.get("podIPs") or []
    if not ips:
        return lines + ["IPs:\t<none>"]
    return lines + ["IPs:"] + [f"{L1}IP:\t{ip['ip']}" for ip in ips]


# --- containers --------------------------------------------------------------------------------

def _ports(ports: list[dict], key: str) -> str:
    out = []
    for p in ports:
        s = f"{p.get(key) or 0}/{p.get('protocol') or 'TCP'}"
        out.append(f"{s} ({p['name']})" if p.get("name") else s)
    return ", ".join(out)


def _basic_info(c: dict, s: dict) -> list[str]:
    spec = c.get("spec") or {}
    lines = [f"{L1}{c['name']}:", f"{L2}Container ID:\t{s.get('containerID', '')}",
             f"{L2}Image:\t{c['image']}", f"{L2}Image ID:\t{s.get('imageID', '')}"]
    for title, key in (("Port", "containerPort"), ("Host Port", "hostPort")):
        text = _ports(spec.get("ports") or [], key)
        title = title + "s" if "," in text else title
        lines.append(f"{L2}{title}:\t{text or '<none>'}")
    return lines


def _command(spec: dict) -> list[str]:
    lines = []
    for title, key in (("Command", "command"), ("Args", "args")):
        if spec.get(key):
            lines.append(f"{L2}{title}:")
            lines += [f"{L3}{s}" for arg in spec[key] for s in arg.split("\n")]
    return lines


def _state(title: str, s: dict) -> list[str]:
    """describeStatus: one container state (running, waiting or terminated)."""
    if "running" in s:
        return [f"{L2}{title}:\tRunning",
                f"{L3}Started:\t{rfc1123z(_epoch(s['running'].get('startedAt')))}"]
    if "terminated" in s:
        t = s["terminated"]
        lines = [f"{L2}{title}:\tTerminated"]
        if t.get("reason"):
            lines.append(f"{L3}Reason:\t{t['reason']}")
        if t.get("message"):
            lines.append(f"{L3}Message:\t{t['message']}")
        lines.append(f"{L3}Exit Code:\t{t.get('exitCode', 0)}")
        if t.get("signal"):
            lines.append(f"{L3}Signal:\t{t['signal']}")
        lines += [f"{L3}Started:\t{rfc1123z(_epoch(t.get('startedAt')))}",
                  f"{L3}Finished:\t{rfc1123z(_epoch(t.get('finishedAt')))}"]
        return lines
    reason = (s.get("waiting") or {}).get("reason")
    return [f"{L2}{title}:\tWaiting"] + ([f"{L3}Reason:\t{reason}"] if reason else [])


def _container_state(s: dict) -> list[str]:
    lines = _state("State", s.get("state") or {})
    if "terminated" in (s.get("lastState") or {}):
        lines += _state("Last State", s["lastState"])
    return lines + [f"{L2}Ready:\t{bool(s.get('ready'))}",
                    f"{L2}Restart Count:\t{s.get('restartCount', 0)}"]


def _requests(resources: dict) -> dict:
    """The API server's defaulting: a resource with a limit and no request requests the limit."""
    return {**(resources.get("limits") or {}), **(resources.get("requests") or {})}


def _resources(resources: dict) -> list[str]:
    lines = []
    for title, values in (("Limits", resources.get("limits") or {}),
                          ("Requests", _requests(resources))):
        if values:
            lines.append(f"{L2}{title}:")
            lines += [f"{L3}{name}:\t{values[name]}" for name in sorted(values)]
    return lines


def _probe_url(get: dict) -> str:
    """The URL Go's url.URL{Scheme, Host, Path}.String() gives (kubectl DescribeProbe)."""
    host, port = get.get("host") or "", str(get.get("port", ""))
    if ":" in host:  # net.JoinHostPort brackets IPv6 literals
        host = f"[{host}]"
    path = get.get("path", "/")
    if path and not path.startswith("/"):
        path = "/" + path
    # Go's path escaping keeps unreserved characters and $&+,/:;=@ (url.escape, encodePath).
    scheme = (get.get("scheme") or "HTTP").lower()
    return f"{scheme}://{host}:{port}{quote(path, safe='$&+,/:;=@')}"


def describe_probe(probe: dict) -> str:
    """kubectl's one-line probe: `http-get http://:80/ delay=0s timeout=1s period=10s ...`."""
    attrs = (f"delay={probe.get('initialDelaySeconds', 0)}s "
             f"timeout={probe.get('timeoutSeconds', 1)}s "
             f"period={probe.get('periodSeconds', 10)}s "
             f"#success={probe.get('successThreshold', 1)} "
             f"#failure={probe.get('failureThreshold', 3)}")
    if "exec" in probe:
        return f"exec [{' '.join(probe['exec'].get('command') or [])}] {attrs}"
    if "httpGet" in probe:
        return f"http-get {_probe_url(probe['httpGet'])} {attrs}"
    if "tcpSocket" in probe:
        tcp = probe["tcpSocket"]
        return f"tcp-socket {tcp.get('host') or ''}:{tcp.get('port', '')} {attrs}"
    if "grpc" in probe:
        grpc = probe["grpc"]
        return f"grpc <pod>:{grpc.get('port')} {grpc.get('service') or ''} {attrs}"
    return f"unknown {attrs}"


def _probes(spec: dict) -> list[str]:
    return [f"{L2}{title}:\t{describe_probe(spec[key])}"
            for title, key in (("Liveness", "livenessProbe"), ("Readiness", "readinessProbe"),
                               ("Startup", "startupProbe")) if spec.get(key)]


def _resource_value(ref: dict, spec: dict) -> str:
    """ExtractContainerResourceValue: a limit or request in units of the divisor, rounded up.
    kubectl reads the described container's resources whatever containerName says."""
    kind, _, name = ref["resource"].partition(".")
    resources = spec.get("resources") or {}
    values = (resources.get("limits") or {}) if kind == "limits" else _requests(resources)
    q, divisor = Quantity(values.get(name) or "0"), Quantity(ref.get("divisor") or "1")
    if name == "cpu":
        value = math.ceil(q.to_milli() / max(divisor.to_milli(), 1))
    else:
        value = math.ceil(q.to_bytes() / max(divisor.to_bytes(), 1))
    if value == 0 and ref["resource"] in ("limits.cpu", "limits.memory"):
        return "node allocatable"
    return str(value)


def _env_value_from(env: dict, spec: dict, pod: dict) -> str:
    src = env["valueFrom"]
    if "fieldRef" in src:
        ref = src["fieldRef"]
        # kubectl converts the path with client-go's scheme, which knows only these two: every
        # other field (status.podIP, spec.nodeName) shows an empty value.
        path = ref.get("fieldPath", "")
        value = {"metadata.name": pod["metadata"]["name"],
                 "metadata.namespace": pod["metadata"]["namespace"]}.get(path, "")
        return f"{env['name']}:\t{value} ({ref.get('apiVersion', 'v1')}:{path})"
    if "resourceFieldRef" in src:
        ref = src["resourceFieldRef"]
        return f"{env['name']}:\t{_resource_value(ref, spec)} ({ref['resource']})"
    return f"{env['name']}:\t"


def _environment(spec: dict, pod: dict) -> list[str]:
    envs = spec.get("env") or []
    if not envs:
        return [f"{L2}Environment:\t<none>"]
    lines = [f"{L2}Environment:"]
    for e in envs:
        if "valueFrom" in e:
            lines.append(L3 + _env_value_from(e, spec, pod))
            continue
        first, *more = (e.get("value") or "").split("\n")
        lines += [f"{L3}{e['name']}:\t{first}"] + [f"{L3}\t{s}" for s in more]
    return lines


def _mounts(spec: dict) -> list[str]:
    mounts = sorted(spec.get("volumeMounts") or [], key=lambda m: m["mountPath"])
    if not mounts:
        return [f"{L2}Mounts:\t<none>"]
    lines = [f"{L2}Mounts:"]
    for m in mounts:
        flags = ["ro" if m.get("readOnly") else "rw"]
        if m.get("subPath"):
            flags.append(f'path="{m["subPath"]}"')
        lines.append(f"{L3}{m['mountPath']} from {m['name']} ({','.join(flags)})")
    return lines


def _container(c: dict, s: dict, pod: dict) -> list[str]:
    spec = c.get("spec") or {}
    return (_basic_info(c, s) + _command(spec) + _container_state(s)
            + _resources(spec.get("resources") or {}) + _probes(spec)
            + _environment(spec, pod) + _mounts(spec))


def _containers(title: str, plans: list[dict], statuses: list[dict], pod: dict) -> list[str]:
    by_name = {s["name"]: s for s in statuses}
    lines = [f"{title}:" + ("" if plans else " <none>")]
    for c in plans:
        lines += _container(c, by_name.get(c["name"], {}), pod)
    return lines


# --- conditions, volumes, scheduling -----------------------------------------------------------

def _conditions(pod: dict) -> list[str]:
    conds = pod["status"].get("conditions") or []
    if not conds:
        return []

    def rank(c: dict) -> int:
        return CONDITION_ORDER.index(c["type"]) if c["type"] in CONDITION_ORDER else 99

    # The trailing spaces are kubectl's ("%v \t%v \n").
    return ["Conditions:", f"{L1}Type\tStatus"] + [
        f"{L1}{c['type']} \t{c['status']} " for c in sorted(conds, key=rank)]


def _volumes(rec: state.PodRecord) -> list[str]:
    """The pod's emptyDir volumes (the loader drops every other source, and its mounts)."""
    spec = (rec.plan.get("manifest") or {}).get("spec") or {}
    vols = [v for v in spec.get("volumes") or []
            if set(v) <= {"name", "emptyDir"}]  # no source at all means an emptyDir
    if not vols:
        return ["Volumes:\t<none>"]
    lines = ["Volumes:"]
    for v in vols:
        empty = v.get("emptyDir") or {}
        size = empty.get("sizeLimit")
        positive = size is not None and Quantity(size).value > 0
        lines += [f"{L1}{v['name']}:",
                  f"{L2}Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)",
                  f"{L2}Medium:\t{empty.get('medium') or ''}",
                  f"{L2}SizeLimit:\t{size if positive else '<unset>'}"]
    return lines


# --- events ------------------------------------------------------------------------------------

def _field_path(rec: state.PodRecord, obj: str) -> str:
    """The event's involvedObject.fieldPath: the kubelet names an init container
    spec.initContainers{NAME}, an app container spec.containers{NAME}."""
    prefix = "spec.containers{"
    name = obj[len(prefix):-1] if obj.startswith(prefix) and obj.endswith("}") else None
    if name in {c["name"] for c in rec.plan.get("init_containers") or []}:
        return f"spec.initContainers{{{name}}}"
    return obj


def pod_events(rec: state.PodRecord) -> list[dict]:
    """The pod's events as the API server would hold them: the kubelet's event correlator
    counts a repeat of an earlier event (same type, reason, object and message) into it, even
    when other events came in between. Sorted by last time seen, as kubectl sorts them."""
    merged: dict[tuple, dict] = {}
    if status.broken(rec):
        return []  # a damaged record's events cannot be trusted to be whole
    for e in rec.state.get("events") or []:
        path = _field_path(rec, e.get("object") or "")
        key = (e["type"], e["reason"], path, e["message"])
        first, last = e["firstTimestamp"], e.get("lastTimestamp") or e["firstTimestamp"]
        if key in merged:
            m = merged[key]
            m["count"] += e.get("count") or 1
            m["firstTimestamp"] = min(m["firstTimestamp"], first)
            m["lastTimestamp"] = max(m["lastTimestamp"], last)
        else:
            merged[key] = {"type": e["type"], "reason": e["reason"], "fieldPath": path,
                           "message": e["message"].strip(), "count": e.get("count") or 1,
                           "firstTimestamp": first, "lastTimestamp": last, "pod": rec.name}
    return sorted(merged.values(), key=lambda e: e["lastTimestamp"])


def _age(e: dict, now: float) -> str:
    """The Age column: `47s`, or `3m2s (x4 over 5m)` for an event seen more than once."""
    first = since(e["firstTimestamp"], now)
    if e["count"] > 1:
        return f"{since(e['lastTimestamp'], now)} (x{e['count']} over {first})"
    return first


def _events_table(evs: list[dict], now: float) -> list[str]:
    lines = ["Events:", f"{L1}Type\tReason\tAge\tFrom\tMessage",
             f"{L1}----\t------\t----\t----\t-------"]
    for e in evs:
        # kubectl >= 1.35 puts the container's field path in front of the message.
        msg = f"{e['fieldPath']}: {e['message']}" if e["fieldPath"] else e["message"]
        lines.append(f"{L1}{e['type']}\t{e['reason']}\t{_age(e, now)}\t{EVENT_SOURCE}\t{msg}")
    return lines


# --- the commands ------------------------------------------------------------------------------

def describe(rec: state.PodRecord, now: float | None = None) -> str:
    """`kubectl describe pod NAME` for one pod, ending with a newline."""
    now = time.time() if now is None else now
    if status.broken(rec):  # one line saying what is wrong, and the others still described
        return f'pod "{rec.name}" is damaged: {status.broken(rec)}\n'
    pod = status.pod_object(rec)
    plan, st = rec.plan, pod["status"]
    lines = _header(rec, pod, now)
    if plan.get("init_containers"):
        lines += _containers("Init Containers", plan["init_containers"],
                             st.get("initContainerStatuses") or [], pod)
    lines += _containers("Containers", plan["containers"], st.get("containerStatuses") or [], pod)
    lines += _conditions(pod) + _volumes(rec)
    lines += [f"QoS Class:\t{plan['qos_class']}", "Node-Selectors:\t<none>", "Tolerations:\t<none>"]
    evs = pod_events(rec)
    if not evs:
        return tabwrite("\n".join(lines + ["Events:\t<none>", ""]))
    # kubectl flushes its tabwriter before the events, so the table aligns on its own.
    return tabwrite("\n".join(lines + [""])) + tabwrite("\n".join(_events_table(evs, now) + [""]))


def events(records: list[state.PodRecord], now: float | None = None, wide: bool = False) -> str:
    """`kubectl get events` (`-o wide` with wide=True) for these pods, oldest last-seen first.
    Empty when there are none (kubectl then says "No resources found" on stderr)."""
    now = time.time() if now is None else now
    evs = sorted((e for r in records for e in pod_events(r)), key=lambda e: e["lastTimestamp"])
    if not evs:
        return ""
    head = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    if wide:
        head[4:4] = ["SUBOBJECT", "SOURCE"]
        head += ["FIRST SEEN", "COUNT", "NAME"]
        node = status.pod_object(records[0])["spec"]["nodeName"]
    rows = [head]
    for e in evs:
        row = [since(e["lastTimestamp"], now), e["type"], e["reason"], f"pod/{e['pod']}",
               e["message"]]
        if wide:
            # The kubelet names an event <object>.<first timestamp in ns, hex>.
            row[4:4] = [e["fieldPath"], f"{EVENT_SOURCE}, {node}"]
            row += [since(e["firstTimestamp"], now), str(e["count"]),
                    f"{e['pod']}.{round(e['firstTimestamp'] * 1e9):x}"]
        rows.append(row)
    return status.table(rows)
