"""The image commands of the CLI: pull, images, rmi, image import, image gc.

`add_parsers(subparsers)` registers them on cli.parser()'s subparsers; each handler takes the
parsed args and returns an exit code, raising MinipodError subclasses for the user's errors
(cli.main prints those as one line). Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import sys

from minipod.errors import Conflict, MinipodError


def _setup(args):
    from minipod import config
    from minipod.images.store import ImageStore

    cfg = config.load(getattr(args, "config", None))
    return cfg, ImageStore(cfg.image_root)


def cmd_pull(args) -> int:
    from minipod.images import progress, pull

    cfg, store = _setup(args)
    bar = progress.Quiet() if args.quiet else progress.for_stream(sys.stderr)
    try:
        result = pull.pull(store, cfg, args.ref, bar)
    finally:
        bar.close()
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not args.quiet:
        from minipod.images.reference import familiar

        print(f"Digest: {result.digest}")
        state = "Downloaded newer image" if result.pulled else "Image is up to date"
        print(f"Status: {state} for {familiar(result.ref)}")
    print(result.ref)
    return 0


def _size(n: int) -> str:
    if n < 0:
        return "?"
    from minipod.images.progress import human

    return human(n)


def cmd_images(args) -> int:
    from minipod.images.reference import parse

    _, store = _setup(args)
    rows = []
    for img in store.images():
        r = parse(img.ref)
        rows.append((r.familiar_name(), r.tag or "<none>", img.digest if args.no_trunc else img.digest[:19],
                     _size(img.size)))
    if args.quiet:
        for row in rows:
            print(f"{row[0]}:{row[1]}" if row[1] != "<none>" else f"{row[0]}@{row[2]}")
        return 0
    head = ("REPOSITORY", "TAG", "DIGEST", "SIZE")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(4)]
    for row in [head, *rows]:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def cmd_rmi(args) -> int:
    from minipod.images import pull
    from minipod.images.reference import parse

    cfg, store = _setup(args)
    users = pull.users(cfg)
    keep = [k for k in users if ":" in k and not k.startswith("/")]
    failed = 0
    for ref in args.refs:
        r = parse(ref)
        key = str(r)
        digest = store.tags().get(key)
        pods = sorted(users.get(key, set()) | (users.get(digest, set()) if digest else set()))
        if pods and not args.force:
            err = Conflict(f'image "{r.familiar()}" is in use by pod{"s" if len(pods) > 1 else ""} '
                           f'{", ".join(pods)} (minipod rm {pods[0]} first, or rmi -f to untag it and '
                           "keep its layers until the pod is gone)")
            if len(args.refs) == 1:
                raise err
            print(f"error: {err}", file=sys.stderr)
            failed = 1
            continue
        try:
            store.remove(ref, keep=keep)
        except MinipodError as e:
            if len(args.refs) == 1:
                raise
            print(f"error: {e}", file=sys.stderr)
            failed = 1
            continue
        print(f"Untagged: {r.familiar()}")
    return failed


def cmd_import(args) -> int:
    from minipod.images import archive

    _, store = _setup(args)
    for ref in archive.import_archive(store, args.file, args.name or ""):
        from minipod.images.reference import familiar

        print(f"Loaded image: {familiar(ref)}")
    return 0


def cmd_gc(args) -> int:
    from minipod.images import gc, pull
    from minipod.images.progress import human

    cfg, store = _setup(args)
    res = gc.collect(store, keep=pull.in_use(cfg), dry_run=args.dry_run)
    verb = "Would delete" if args.dry_run else "Deleted"
    print(f"{verb} {res.blobs} blobs, {res.layers} layers, {res.partials} partial downloads: "
          f"{human(res.bytes)}")
    return 0


def add_parsers(subparsers) -> None:
    """Register pull, images, rmi and image {import,gc} on cli.parser()'s subparsers."""

    def add(sub, name, fn, help_, **kw):
        sp = sub.add_parser(name, help=help_, description=help_, **kw)
        sp.set_defaults(func=fn)
        return sp

    sp = add(subparsers, "pull", cmd_pull, "pull an image from a registry (mirrors: registries.toml)")
    sp.add_argument("ref", metavar="REF", help="busybox, nginx:alpine, host:port/repo:tag, repo@sha256:...")
    sp.add_argument("-q", "--quiet", action="store_true", help="print only the reference")
    sp = add(subparsers, "images", cmd_images, "list local images (REPOSITORY TAG DIGEST SIZE)")
    sp.add_argument("-q", "--quiet", action="store_true", help="print only the references")
    sp.add_argument("--no-trunc", action="store_true", help="show full digests")
    sp = add(subparsers, "rmi", cmd_rmi, "remove images (refused while a pod uses them)")
    sp.add_argument("refs", nargs="+", metavar="REF")
    sp.add_argument("-f", "--force", action="store_true",
                    help="untag even if a pod uses it (its layers stay until the pod is removed)")
    sp = subparsers.add_parser("image", help="image subcommands: import, gc",
                               description="image subcommands: import, gc")
    sub = sp.add_subparsers(dest="image_cmd", required=True, metavar="COMMAND")
    sp = add(sub, "import", cmd_import, "load an OCI image layout or a `docker save` archive")
    sp.add_argument("file", metavar="FILE", help="a directory, or a tar (.tar, .tar.gz) of one")
    sp.add_argument("name", nargs="?", metavar="NAME[:TAG]",
                    help="name for an image the archive leaves unnamed (or to rename its only image)")
    sp = add(sub, "gc", cmd_gc, "delete blobs and layers that no image and no pod uses",
             aliases=["prune"])
    sp.add_argument("-n", "--dry-run", action="store_true", help="only say what would be deleted")
