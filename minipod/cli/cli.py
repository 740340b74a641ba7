"""The `minipod` command: argparse -> library calls. Errors become exit codes here and only here.

Imports are lazy: `minipod ps` must not pay for pydantic or pyroute2.
"""

from __future__ import annotations

import argparse
import functools
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
    from minipod import agent
    from minipod.cli import runner

    explain = ("json" if args.output == "json" else "text") if args.explain else None
    if args.output and not args.explain:
        raise MinipodError("run: -o json goes with --explain")
    return runner.run(args.file, _cfg(args), detach=args.detach, dry_run=args.dry_run,
                      configmaps=args.configmap, explain=explain, step=args.step,
                      spawn=agent.spawner())


def cmd_validate(args) -> int:
    from minipod import objectstore
    from minipod.spec import spec

    res = spec.load(args.file, args.configmap, objectstore.Store(_cfg(args)))
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    names = ", ".join(lp.pod.metadata.name for lp in res.pods)
    print(f"{args.file}: valid ({len(res.pods)} pod{'s' if len(res.pods) != 1 else ''}: {names})")
    return 0


def cmd_ps(args) -> int:
    return _table(_records(_cfg(args)))


def _table(recs, wide: bool = False) -> int:
    """kubectl's table, and a note per damaged record on stderr."""
    from minipod.cli import status

    if not recs:
        print("No resources found", file=sys.stderr)
        return 0
    print(status.ps(recs, wide=wide))
    sys.stderr.write(status.damage_notes(recs))
    return 0


def cmd_get(args) -> int:
    from minipod.cli import status

    cfg = _cfg(args)
    if args.kind not in ("pod", "pods", "po"):
        raise MinipodError(f'the server doesn\'t have a resource type "{args.kind}" '
                           "(minipod knows pods)")
    output = args.output or ""
    if output not in ("", "json", "yaml", "wide", "name") and not output.startswith("jsonpath="):
        raise MinipodError(f'unable to match a printer suitable for the output format "{output}",'
                           " allowed formats are: json, jsonpath, name, wide, yaml")
    recs = _records(cfg, [args.name] if args.name else None)
    if output == "name":
        print("".join(f"pod/{r.name}\n" for r in recs), end="")
        return 0
    if output in ("json", "yaml") or output.startswith("jsonpath="):
        objs = [status.pod_object(r) for r in recs]
        obj = objs[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": objs,
                                         "metadata": {"resourceVersion": ""}}
        if output == "json":
            import json

            print(json.dumps(obj, indent=4))
        elif output == "yaml":
            import yaml

            print(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False), end="")
        else:
            from minipod.cli import jsonpath

            print(jsonpath.render(output[len("jsonpath="):], obj), end="")
        return 0
    if args.watch:
        return _watch(cfg, args.name)
    return _table(recs, wide=output == "wide")


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
    return execute.run(rec, args.container, argv, args.stdin, args.tty, driver)


def cmd_attach(args) -> int:
    from minipod.cli import attach

    (rec,) = _records(_cfg(args), [args.name])
    return attach.run(rec, args.container, args.stdin, args.tty, args.quiet)


def cmd_port_forward(args) -> int:
    from minipod.cli import portforward

    kind, _, name = args.name.rpartition("/")  # kubectl's pod/NAME form
    if kind not in ("", "pod", "pods", "po"):
        raise MinipodError(f"port-forward: {args.name!r}: minipod forwards to pods only")
    (rec,) = _records(_cfg(args), [name])
    return portforward.run(rec, args.ports, args.address)


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


def cmd_delete(args) -> int:
    from minipod.cli import delete

    return delete.run(_cfg(args), args.names, args.filename, args.grace_period, args.now,
                      args.force, args.ignore_not_found)


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


def cmd_tree(args) -> int:
    from minipod import cgroups
    from minipod.cli import tree

    cfg = _cfg(args)
    recs = _records(cfg, [args.name] if args.name else None)
    if not recs:
        print("No resources found", file=sys.stderr)
        return 0
    print(tree.view(recs, cgroups.detect(cfg.cgroup_root, cfg.cgroup_driver), args.output))
    return 0


def cmd_explain(args) -> int:
    from minipod.cli import byhand, runner

    cfg = _cfg(args)
    plans = runner.load_plans(args.file, cfg)
    make = byhand.cleanup_script if args.cleanup else byhand.build_script
    print("\n".join(make(p.to_json(), cfg.root, cfg.cgroup_root) for p in plans), end="")
    return 0


def cmd_daemon(args) -> int:
    """The node agent of this config's root (minipod/agent/)."""
    import time

    from minipod import agent
    from minipod.agent import client

    root = _cfg(args).root
    sock = agent.path(root, agent.SOCKET)
    if args.daemon_cmd == "run":
        # A fresh interpreter under the same PID (systemd's LISTEN_PID stays true), with an
        # argv long enough for its forks' titles (client.TITLE_ROOM).
        argv = client.server_argv(root)
        sys.stdout.flush()
        os.execv(argv[0], argv)
    if args.daemon_cmd == "start" and not client.start(root, wait=30):
        raise MinipodError(f"the agent did not answer on {sock} within 30s (see "
                           f"{agent.path(root, agent.LOG)})")
    if args.daemon_cmd == "stop":
        if client.starting(root):  # one still warming up would start listening after us
            client.start(root, wait=30)
        msg = client.request(root, "stop")
        print(f"agent: stopped (pid {msg['stopped']})" if msg and "stopped" in msg
              else "agent: not running")
        return 0
    msg = client.request(root, "status")
    if not msg or "status" not in msg:
        print(f"agent: not running (nothing answers on {sock})")
        return 3  # as `systemctl status` says "not running"
    st = msg["status"]
    up = int(time.time() - st["since"])
    print(f"agent: running (pid {st['pid']}, up {up // 60}m{up % 60:02d}s, "
          f"{st['served']} requests, RSS {st['rss_kb'] / 1024:.1f} MB)\n"
          f"socket: {sock}\nlog: {agent.path(root, agent.LOG)}\ncode: {st['code']}")
    return 0


def cmd_version(args) -> int:
    from minipod import __version__

    print(f"minipod {__version__}")
    return 0


@functools.cache
def parser() -> argparse.ArgumentParser:
    """Built once per process: the node agent builds it while warming up, so that its forks
    do not pay ~5 ms (most of it argparse asking gettext, and the disk, for a catalogue for
    each of ~100 help strings) on every command. Parsing does not change it."""
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
    configmap = dict(action="append", default=[], metavar="FILE", help=(
        "a file of ConfigMap/Secret documents for the pods to read (repeatable)"))
    sp.add_argument("--configmap", **configmap)
    sp.add_argument("--explain", action="store_true", help="print every primitive as it is "
                    "done: real values, the system call, a shell command for it")
    sp.add_argument("-o", "--output", choices=["json"], help="with --explain: JSON lines")
    sp.add_argument("--step", action="store_true", help="stop after each stage (cgroups, "
                    "sandbox, network, each container) until Enter")
    sp = add("validate", cmd_validate, "check a manifest without running it")
    sp.add_argument("file")
    sp.add_argument("--configmap", **configmap)
    add("ps", cmd_ps, "list pods (NAME READY STATUS RESTARTS AGE IP)")
    sp = add("get", cmd_get, "get pods, as kubectl get does")
    sp.add_argument("kind", help="pod | pods")
    sp.add_argument("name", nargs="?")
    sp.add_argument("-o", "--output", metavar="FORMAT",
                    help="json | yaml | wide | name | jsonpath=TEMPLATE (kubectl's JSONPath)")
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
    sp.add_argument("-t", "--tty", action="store_true",
                    help="allocate a terminal (its input is ours only with -i, as in docker)")
    sp.add_argument("command", nargs="*", help="the command (after --)")
    sp = add("attach", cmd_attach, "attach to a running container's own stdio: "
             "minipod attach POD [-c C] [-i] [-t] (Ctrl-P Ctrl-Q detaches)")
    sp.add_argument("name")
    sp.add_argument("-c", "--container")
    sp.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the container")
    sp.add_argument("-t", "--tty", action="store_true", help="stdin is a terminal")
    sp.add_argument("-q", "--quiet", action="store_true",
                    help="only print output from the container")
    sp = add("port-forward", cmd_port_forward, "forward local ports to a pod's ports: "
             "minipod port-forward POD [LOCAL:]REMOTE ...")
    sp.add_argument("name")
    sp.add_argument("ports", nargs="+", metavar="[LOCAL:]REMOTE")
    sp.add_argument("--address", action="append", default=[], help="addresses to listen on, "
                    "comma-separated (default localhost: 127.0.0.1 and ::1)")
    sp = add("stop", cmd_stop, "stop pods (SIGTERM, grace period, SIGKILL)")
    sp.add_argument("names", nargs="+", metavar="name")
    sp.add_argument("--grace", "--grace-period", dest="grace", type=int,
                    help="seconds before SIGKILL (default: the pod's "
                         "terminationGracePeriodSeconds)")
    sp = add("rm", cmd_rm, "remove pods (-f stops running ones with grace 0 first)")
    sp.add_argument("names", nargs="+", metavar="name")
    sp.add_argument("-f", "--force", action="store_true")
    sp = add("delete", cmd_delete, "delete pods as kubectl delete does: stop gracefully, then "
             "remove")
    sp.add_argument("names", nargs="*", metavar="name", help="pod names (`delete pod NAME` "
                    "works too)")
    sp.add_argument("-f", "--filename", help="delete the pods of this manifest")
    sp.add_argument("--grace-period", type=int, default=-1, help="seconds before SIGKILL "
                    "(default -1: the pod's terminationGracePeriodSeconds)")
    sp.add_argument("--now", action="store_true", help="--grace-period=1")
    sp.add_argument("--force", action="store_true", help="with --grace-period=0: do not wait")
    sp.add_argument("--ignore-not-found", action="store_true")
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
    sp = add("tree", cmd_tree, "a pod's process tree, cgroup tree and network path")
    sp.add_argument("name", nargs="?")
    sp.add_argument("-o", "--output", choices=["json", "dot"])
    sp = add("explain", cmd_explain, "print a bash script that builds the pod by hand "
             "(util-linux, iproute2, coreutils), or --cleanup: one that removes it")
    sp.add_argument("file")
    sp.add_argument("--script", action="store_true", help="the build script (the default)")
    sp.add_argument("--cleanup", action="store_true", help="the script that removes it")
    sp = add("daemon", cmd_daemon, "the node agent: one warm minipod process that serves "
             "the short commands (started on demand; $MINIPOD_AGENT=0: never)")
    sp.add_argument("daemon_cmd", choices=["status", "start", "stop", "run"],
                    help="run: in the foreground (systemd: systemd/minipod.service)")
    add("version", cmd_version, "print the version")
    from minipod.cli import volume as volume_commands  # volume ls, volume rm

    volume_commands.add_parsers(sub, _cfg)
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
    from minipod import config

    config.export(args.config)  # for the processes we start: they read it again, in /
    trace.PATH = os.environ.get("MINIPOD_TRACE", "")
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


if __name__ == "__main__":
    from minipod.cli.entry import entry  # as the minipod command: the agent first, then main()

    entry()
