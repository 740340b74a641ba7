"""The `serve` and `kubeconfig` commands (cli.py calls these; imported only by them)."""

from __future__ import annotations

import os
import sys

from minipod import python_m
from minipod.errors import MinipodError, UsageError

DEFAULT_PORT = 6443  # the API server's


def add_parsers(sub) -> None:
    sp = sub.add_parser("serve", help="serve the Kubernetes API for pods on 127.0.0.1 (kubectl)",
                        description="serve the Kubernetes API subset kubectl uses for pods, over "
                        "HTTPS on 127.0.0.1; writes the kubeconfig (minipod kubeconfig)")
    sp.add_argument("--port", type=int, default=DEFAULT_PORT,
                    help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    sp.add_argument("-d", "--detach", action="store_true", help="run in the background")
    sp.set_defaults(func=cmd_serve)
    sp = sub.add_parser("kubeconfig", help="print the path of the kubeconfig minipod serve wrote",
                        description="print the kubeconfig's path (--show: its content)")
    sp.add_argument("--show", action="store_true", help="print the content, not the path")
    sp.set_defaults(func=cmd_kubeconfig)


def cmd_serve(args) -> int:
    from minipod import config

    cfg = config.load(args.config)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port: {args.port} is not a TCP port")
    if os.geteuid() != 0:
        raise MinipodError("minipod serve runs pods: run it as root")
    from minipod.api import server

    if args.detach:
        return _detach(cfg, args.port, args.config)

    def ready(port: int, path: str) -> None:
        print(f"serving the Kubernetes API on https://127.0.0.1:{port} "
              f"(export KUBECONFIG={path})", file=sys.stderr, flush=True)

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    try:
        server.serve(cfg, "127.0.0.1", args.port, ready, args.config)
    except OSError as e:
        raise MinipodError(f"cannot serve on 127.0.0.1:{args.port}: {e.strerror or e}") \
            from None
    return 0


def _detach(cfg, port: int, args_config: str | None) -> int:
    """Start `minipod serve` in its own session, logging to <root>/api/serve.log; answer once
    it listens (its first line there), or with its error."""
    import subprocess
    import time

    log = os.path.join(cfg.root, "api", "serve.log")
    os.makedirs(os.path.dirname(log), mode=0o700, exist_ok=True)
    with open(log, "ab") as f:
        offset = f.tell()
        conf = ["--config", os.path.abspath(args_config)] if args_config else []
        # In / (config.PATHS says why): a server that runs for days must not pin our directory.
        p = subprocess.Popen([*python_m("minipod"), *conf, "serve", "--port",
                              str(port)],
                             stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                             start_new_session=True, cwd="/")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(offset)
            line = f.readline().decode(errors="replace").strip()
        if line.startswith("serving"):
            print(f"{line}; pid {p.pid}, log {log}")
            return 0
        if p.poll() is not None:
            raise MinipodError(line.removeprefix("error: ") or f"minipod serve exited "
                               f"{p.returncode} (see {log})")
        time.sleep(0.1)
    raise MinipodError(f"minipod serve (pid {p.pid}) did not start within 60s (see {log})")


def cmd_kubeconfig(args) -> int:
    from minipod import config
    from minipod.api import certs

    path = certs.kubeconfig_path(config.load(args.config).root)
    if not os.path.exists(path):
        raise MinipodError(f"{path}: no kubeconfig yet (minipod serve writes it)")
    if args.show:
        with open(path) as f:
            sys.stdout.write(f.read())
    else:
        print(path)
    return 0
