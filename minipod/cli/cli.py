"""The `minipod` command: argparse -> library calls. Errors become exit codes here and only here.

Imports are lazy: `minipod ps` must not pay for pydantic or pyroute2.
"""

from __future__ import annotations

import argparse
import os
import sys

from minipod.errors import MinipodError


def _cfg(args):
    from minipod import config

    return config.load(args.config)


def _records(cfg, names=None):
    from minipod import state
    from minipod.errors import NotFound

    if names:
        return [state.PodRecord(cfg.root, n) for n in names]
    out = []
    for n in state.names(cfg.root):
        try:
            rec = state.PodRecord(cfg.root, n)
        except NotFound:
            continue  # removed right now
        if not rec.creating:  # a `run` that claimed the name a moment ago is not a pod yet
            out.append(rec)
    return out


def cmd_run(args) -> int:
    from minipod.cli import runner

    return runner.run(args.file, _cfg(args), detach=args.detach, dry_run=args.dry_run)


def cmd_validate(args) -> int:
    from minipod.spec import spec

    res = spec.load(args.file)
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    names = ", ".join(lp.pod.metadata.name for lp in res.pods)
    print(f"{args.file}: valid ({len(res.pods)} pod{'s' if len(res.pods) != 1 else ''}: {names})")
    return 0


def cmd_ps(args) -> int:
    return _table(_records(_cfg(args)))


def _table(recs) -> int:
    """kubectl's table, and a note per damaged record on stderr."""
    from minipod.cli import status

    if not recs:
        print("No resources found", file=sys.stderr)
        return 0
    print(status.ps(recs))
    sys.stderr.write(status.damage_notes(recs))
    return 0


def cmd_get(args) -> int:
    from minipod.cli import status

    cfg = _cfg(args)
    if args.kind not in ("pod", "pods", "po"):
        raise MinipodError(f'the server doesn\'t have a resource type "{args.kind}" '
                           "(minipod knows pods)")
    recs = _records(cfg, [args.name] if args.name else None)
    if args.output in ("json", "yaml"):
        objs = [status.pod_object(r) for r in recs]
        obj = objs[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": objs}
        if args.output == "json":
            import json

            print(json.dumps(obj, indent=4))
        else:
            import yaml

            print(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False), end="")
        return 0
    if args.watch:
        return _watch(cfg, args.name)
    return _table(recs)


def _watch(cfg, name: str | None, interval: float = 0.5) -> int:
    """kubectl get -w: the table once, then a row whenever a pod's row changes."""
    import time

    from minipod import state
    from minipod.cli import status

    seen: dict[str, tuple] = {}
    header = True
    while True:
        names = [name] if name else state.names(cfg.root)
        recs = []
        for n in names:
            try:
                recs.append(state.PodRecord(cfg.root, n))
            except MinipodError:
                pass
        rows = status.ps(recs).splitlines() if recs else []
        for rec, row in zip(recs, rows[1:]):
            key = tuple(row.split()[1:4]) + tuple(row.split()[5:])  # all but AGE
            if seen.get(rec.name) != key:
                seen[rec.name] = key
                if header:
                    print(rows[0])
                    header = False
                print(row, flush=True)
        time.sleep(interval)


def cmd_inspect(args) -> int:
    import json

    from minipod.cli import status

    (rec,) = _records(_cfg(args), [args.name])
    print(json.dumps(status.inspect(rec), indent=2))
    return 0


def cmd_describe(args) -> int:
    from minipod.cli import describe

    names = args.names[1:] if args.names[:1] in (["pod"], ["pods"], ["po"]) else args.names
    recs = _records(_cfg(args), names or None)
    if not recs:
        print("No resources found", file=sys.stderr)
        return 0
    print("\n\n".join(describe.describe(r).rstrip("\n") for r in recs))
    return 0


def cmd_events(args) -> int:
    from minipod.cli import describe

    recs = _records(_cfg(args), [args.name] if args.name else None)
    text = describe.events(recs, wide=args.output == "wide")
    if not text:
        print("No resources found", file=sys.stderr)
        return 0
    print(text.rstrip("\n"))
    return 0


def cmd_logs(args) -> int:
    from minipod import state
    from minipod.kubelet import logs

    cfg = _cfg(args)
    (rec,) = _records(cfg, [args.name])
    if args.container is None and len(rec.plan["containers"]) > 1:
        names = ", ".join(c["name"] for c in rec.plan["containers"])
        print(f'Defaulted container "{rec.plan["containers"][0]["name"]}" out of: {names}',
              file=sys.stderr)
    c, st = rec.container(args.container)
    inst = int(st.get("instance", 0))
    if args.previous:
        if inst == 0:
            raise MinipodError(f'previous terminated container "{c["name"]}" in pod '
                               f'"{rec.name}" not found')
        inst -= 1
    out = sys.stdout.buffer
    if not args.follow or args.previous:
        out.write(logs.read(logs.path(c["log_dir"], inst), args.tail, args.timestamps))
        out.flush()
        return 0

    def instance() -> int:
        r = state.PodRecord(cfg.root, args.name)
        return int(r.container(c["name"])[1].get("instance", inst))

    def alive() -> bool:
        r = state.PodRecord(cfg.root, args.name)
        s = r.container(c["name"])[1]
        return r.active and ("running" in (s.get("state") or {}) or
                             "waiting" in (s.get("state") or {}))

    logs.follow(c["log_dir"], instance, alive, out, args.tail, args.timestamps)
    return 0


def cmd_exec(args) -> int:
    from minipod import cgroups
    from minipod.cli import execute

    cfg = _cfg(args)
    argv = args.command + args.after_dashes
    if not argv:
        raise MinipodError("exec: no command given (minipod exec POD -- CMD ...)")
    (rec,) = _records(cfg, [args.name])
    driver = cgroups.detect(cfg.cgroup_root, cfg.cgroup_driver)
    return execute.run(rec, args.container, argv, args.stdin or args.tty, args.tty, driver)


def cmd_stop(args) -> int:
    from minipod.cli import runner

    cfg = _cfg(args)
    for name in args.names:
        runner.stop(name, cfg, args.grace)
        print(name)
    return 0


def cmd_rm(args) -> int:
    from minipod.cli import runner

    cfg = _cfg(args)
    for name in args.names:
        runner.remove(name, cfg, force=args.force)
        print(name)
    return 0


def cmd_lab(args) -> int:
    from minipod.cli import lab

    if args.lab_cmd == "list":
        return lab.main_list()
    return lab.main_run(args.name, args.config, args.step, args.record)


def cmd_ns(args) -> int:
    from minipod.cli import views

    recs = _records(_cfg(args), args.names)
    print(views.ns_view(recs, args.all, args.output))
    return 0


def cmd_version(args) -> int:
    from minipod import __version__

    print(f"minipod {__version__}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minipod", description=(
        "Run Kubernetes v1 Pod manifests on this machine, built from raw Linux primitives."))
    p.add_argument("--config", help="config file (default $MINIPOD_CONFIG or "
                   "/etc/minipod/config.toml)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name, fn, help_, **kw):
        sp = sub.add_parser(name, help=help_, description=help_, **kw)
        sp.set_defaults(func=fn)
        return sp

    sp = add("run", cmd_run, "run the pods in a manifest (foreground; -d to detach)")
    sp.add_argument("file", help="a YAML file of v1 Pods, or - for stdin")
    sp.add_argument("-d", "--detach", action="store_true", help="run in the background")
    sp.add_argument("--dry-run", action="store_true", help="print the plan, create nothing")
    sp = add("validate", cmd_validate, "check a manifest without running it")
    sp.add_argument("file")
    add("ps", cmd_ps, "list pods (NAME READY STATUS RESTARTS AGE IP)")
    sp = add("get", cmd_get, "get pods, as kubectl get does")
    sp.add_argument("kind", help="pod | pods")
    sp.add_argument("name", nargs="?")
    sp.add_argument("-o", "--output", choices=["json", "yaml", "wide"])
    sp.add_argument("-w", "--watch", action="store_true", help="print a row at every change")
    sp = add("describe", cmd_describe, "show a pod in detail, as kubectl describe pod does")
    sp.add_argument("names", nargs="*", metavar="name", help="pod names (`describe pod NAME` "
                    "works too)")
    sp = add("events", cmd_events, "list events (Created, Started, Killing, BackOff, ...)")
    sp.add_argument("name", nargs="?")
    sp.add_argument("-o", "--output", choices=["wide"])
    sp = add("inspect", cmd_inspect, "runtime details of a pod (PIDs, namespaces, cgroups, IP)")
    sp.add_argument("name")
    sp = add("logs", cmd_logs, "print a container's logs")
    sp.add_argument("name")
    sp.add_argument("-c", "--container")
    sp.add_argument("-f", "--follow", action="store_true")
    sp.add_argument("-p", "--previous", action="store_true",
                    help="the previous instance of a restarted container")
    sp.add_argument("--tail", type=int, default=-1)
    sp.add_argument("--timestamps", action="store_true")
    sp = add("exec", cmd_exec, "run a command in a container: minipod exec POD [-c C] -- CMD")
    sp.add_argument("name")
    sp.add_argument("-c", "--container")
    sp.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the command")
    sp.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    sp.add_argument("command", nargs="*", help="the command (after --)")
    sp = add("stop", cmd_stop, "stop pods (SIGTERM, grace period, SIGKILL)")
    sp.add_argument("names", nargs="+", metavar="name")
    sp.add_argument("--grace", "--grace-period", dest="grace", type=int,
                    help="seconds before SIGKILL (default: the pod's "
                         "terminationGracePeriodSeconds)")
    sp = add("rm", cmd_rm, "remove pods (-f stops running ones with grace 0 first)")
    sp.add_argument("names", nargs="+", metavar="name")
    sp.add_argument("-f", "--force", action="store_true")
    sp = add("lab", cmd_lab, "teaching labs that run and check themselves (labs/)")
    labsub = sp.add_subparsers(dest="lab_cmd", required=True, metavar="list|run")
    labsub.add_parser("list", help="list the labs: ready, or pending and why")
    lr = labsub.add_parser("run", help="run a lab's steps and check what they show")
    lr.add_argument("name", help="a lab: 01-sandbox, 1 or sandbox")
    lr.add_argument("--step", action="store_true", help="wait for Enter between steps")
    lr.add_argument("--record", action="store_true",
                    help="write the run into the lab's README (its Steps and What you should "
                         "see)")
    sp = add("ns", cmd_ns, "namespace inodes of a pod's processes: shared with pause, own, host")
    sp.add_argument("names", nargs="+", metavar="name")
    sp.add_argument("--all", action="store_true", help="every process in the pod, not only "
                    "pause and each container's PID 1")
    sp.add_argument("-o", "--output", choices=["json"])
    add("version", cmd_version, "print the version")
    from minipod.images import commands as image_commands  # pull, images, rmi, image ...

    image_commands.add_parsers(sub)
    from minipod.api import commands as api_commands  # serve, kubeconfig (imports nothing big)

    api_commands.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from minipod import trace

    trace.mark("cli: main")
    argv = sys.argv[1:] if argv is None else argv
    # Everything after the first "--" is the command of `exec`, verbatim (argparse would read
    # its options as ours).
    after: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, after = argv[:i], argv[i + 1:]
    args = parser().parse_args(argv)
    args.after_dashes = after
    try:
        return args.func(args) or 0
    except MinipodError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: one line, unless asked for the traceback
        if os.environ.get("MINIPOD_DEBUG"):
            raise
        print(f"error: internal error: {type(e).__name__}: {e} "
              "(MINIPOD_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def entry() -> None:
    """The console script: main(), then leave without the interpreter's teardown (module
    cleanup and GC at exit cost 20-60 ms on every command and do nothing for us)."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
