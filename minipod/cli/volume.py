"""`minipod volume ls|rm`: the named volumes persistentVolumeClaims are mapped to."""

from __future__ import annotations

import json
import sys
import time


def cmd_ls(args) -> int:
    from minipod.pod.volumes import claims

    cfg = args.load_cfg(args)
    vols = claims.list_all(cfg.data_root, cfg.root)
    if args.output == "json":
        json.dump(vols, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.quiet:
        for v in vols:
            print(v["name"])
        return 0
    rows = [("NAME", "CREATED", "USED BY", "MOUNTPOINT")]
    for v in vols:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["created"])) \
            if v["created"] else ""
        rows.append((v["name"], created, ",".join(v["pods"]) or "-", v["mountpoint"]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("   ".join(x.ljust(w) for x, w in zip(r, widths)) + "   " + r[3])
    return 0


def cmd_rm(args) -> int:
    from minipod.pod.volumes import claims

    cfg = args.load_cfg(args)
    for name in args.names:
        claims.remove(cfg.data_root, cfg.root, name)
        print(name)
    return 0


def add_parsers(subparsers, load_cfg) -> None:
    sp = subparsers.add_parser("volume", help="named volumes (persistentVolumeClaim): ls, rm",
                               description="named volumes (persistentVolumeClaim): ls, rm")
    sp.set_defaults(load_cfg=load_cfg)
    sub = sp.add_subparsers(dest="volume_cmd", required=True, metavar="ls|rm")
    ls = sub.add_parser("ls", help="list named volumes and the pods that use them")
    ls.set_defaults(func=cmd_ls)
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the names")
    ls.add_argument("-o", "--output", choices=["json"])
    rm = sub.add_parser("rm", help="remove named volumes (refused while a pod record names one)")
    rm.set_defaults(func=cmd_rm)
    rm.add_argument("names", nargs="+", metavar="NAME")
