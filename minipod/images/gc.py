"""Garbage collection of the image store: delete what no tag and no pod needs.

Mark: the closure (manifests, configs, layer blobs, unpacked layers) of every tagged digest,
plus of every digest a pod's plan names, plus the layer directories plans name (a pod keeps
running on the image it started with after a pull moved the tag). Sweep: every other blob and
layer directory, leftover `.tmp-*`/`.trash-*` entries of crashed writers, and partial
downloads and import staging directories in ingest/.

All of it under the store's exclusive content lock: a pull or import in progress (shared
lock) has stored blobs it has not tagged yet, and must not lose them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from minipod.images.store import ImageStore, StoreError, _rmtree


@dataclass
class Collected:
    blobs: int = 0
    layers: int = 0
    partials: int = 0
    bytes: int = 0


def _size(path: str) -> int:
    total = 0
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return st.st_blocks * 512
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def collect(store: ImageStore, keep: Iterable[str] = (), dry_run: bool = False) -> Collected:
    """Delete unreferenced content. `keep`: digests and absolute layer dirs that pods use."""
    out = Collected()
    keep = set(keep)
    with store.content_lock(exclusive=True):
        roots = set(store.tags().values()) | {k for k in keep if ":" in k and not k.startswith("/")}
        live: set[str] = set()
        for digest in roots:
            live |= store.closure(digest)
        live_layers = {k for k in keep if k.startswith("/")}
        for item in live:
            if item.startswith("layer:"):
                try:
                    live_layers.add(store.layer_dir(item[6:]))
                except StoreError:
                    pass

        def drop(path: str) -> None:
            out.bytes += _size(path)
            if not dry_run:
                _rmtree(path)

        if os.path.isdir(store.blobs):
            for algo in sorted(os.listdir(store.blobs)):
                d = os.path.join(store.blobs, algo)
                if not os.path.isdir(d):
                    continue
                for name in sorted(os.listdir(d)):
                    if name.startswith(".tmp-"):
                        drop(os.path.join(d, name))
                    elif f"{algo}:{name}" not in live:
                        drop(os.path.join(d, name))
                        out.blobs += 1
        if os.path.isdir(store.layers):
            for name in sorted(os.listdir(store.layers)):
                path = os.path.join(store.layers, name)
                if name.startswith((".tmp-", ".trash-")):
                    drop(path)
                elif path not in live_layers:
                    if not dry_run:
                        # Out of sight first: a half-deleted layer must never look complete.
                        trash = os.path.join(store.layers, f".trash-{name}-{os.urandom(4).hex()}")
                        os.rename(path, trash)
                        path = trash
                    drop(path)
                    out.layers += 1
        if os.path.isdir(store.ingest):
            for name in sorted(os.listdir(store.ingest)):
                drop(os.path.join(store.ingest, name))
                out.partials += 1
    return out
