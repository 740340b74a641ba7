"""ConfigMaps and Secrets kept on the node, as an API server keeps them in etcd: what
`kubectl create configmap/secret` and `kubectl apply` put there, and what a pod's configMap and
secret volumes, env valueFrom and envFrom read when neither the pod's own file nor a
`run --configmap FILE` holds the object (spec.load's lookup order: file, flag, store).

Where they live:
    configmaps  <data_root>/objects/configmaps/<namespace>/<name>.json   node disk
    secrets     <root>/objects/secrets/<namespace>/<name>.json           tmpfs, 0600, dirs 0700

The kubelet never writes a secret's data to the node's disk (its secret volumes are tmpfs), so
neither does this store. <root> is /run/minipod, a tmpfs on every systemd host; where it is not
(a test's root under /tmp, a custom config), the store mounts a tmpfs of its own on the secrets
directory when it writes the first secret, and unmounts it when the last one is deleted, so
that nothing is left behind. Documents are the API's JSON: a Secret's `data` is base64 there.

One lock (<root>/objects.lock) orders every read and write: the API server's threads and a
`minipod run` in another process see whole documents only (each is also written atomically).
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager

from minipod.errors import MinipodError

RESOURCES = {"ConfigMap": "configmaps", "Secret": "secrets"}
KINDS = {v: k for k, v in RESOURCES.items()}
SECRETS_TMPFS = "minipod-secrets"  # the source name of the store's own tmpfs: ours to unmount
TMPFS_OPTIONS = "mode=0700,size=64m"  # 64 secrets at the API's 1 MiB limit each

# Namespaces are DNS labels; names DNS subdomains: neither can hold '/' or be '..', so a name
# from a URL is a file name and never a path.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class StoreError(MinipodError):
    """The object store could not be read or written (the message names the path)."""


def valid_namespace(ns: str) -> bool:
    return len(ns) <= 63 and bool(_NAMESPACE.match(ns))


def valid_name(name: str) -> bool:
    return len(name) <= 253 and bool(_NAME.match(name))


def fs_type(path: str) -> tuple[str, str, str]:
    """(mount point, filesystem type, source) of the mount that holds `path`."""
    path = os.path.realpath(path)
    best = ("/", "", "")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            fstype, source = (right.split() + ["", ""])[:2]
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):  # the later of equal points is on top
                best = (point, fstype, source)
    return best


class Store:
    def __init__(self, cfg):
        self.cfg = cfg
        self.lock_path = os.path.join(cfg.root, "objects.lock")

    def dir(self, kind: str) -> str:
        base = self.cfg.root if kind == "Secret" else self.cfg.data_root
        return os.path.join(base, "objects", RESOURCES[kind])

    def _path(self, kind: str, ns: str, name: str) -> str:
        if not valid_namespace(ns) or not valid_name(name):
            raise StoreError(f"{RESOURCES[kind]} {ns}/{name}: not a valid namespace and name")
        return os.path.join(self.dir(kind), ns, name + ".json")

    @contextmanager
    def locked(self):
        from minipod.kernel.lock import flock

        with flock(self.lock_path):
            yield self

    # --- reads (the caller holds the lock, or accepts a read between two writes) -------

    def read(self, kind: str, ns: str, name: str) -> dict | None:
        if not valid_namespace(ns) or not valid_name(name):
            return None
        path = self._path(kind, ns, name)
        try:
            with open(path, "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None
        except PermissionError:
            raise StoreError(f"read {path}: permission denied (the object store is root's)") \
                from None
        except (OSError, ValueError) as e:
            raise StoreError(f"read {path}: {e}") from None

    def namespaces(self) -> set[str]:
        out = set()
        for kind in RESOURCES:
            try:
                out.update(n for n in os.listdir(self.dir(kind)) if valid_namespace(n))
            except OSError:
                pass
        return out

    def list(self, kind: str, ns: str | None = None) -> list[dict]:
        d = self.dir(kind)
        try:
            namespaces = [ns] if ns is not None else sorted(os.listdir(d))
        except FileNotFoundError:
            return []
        out = []
        for n in namespaces:
            try:
                names = sorted(f[:-5] for f in os.listdir(os.path.join(d, n))
                               if f.endswith(".json"))
            except (FileNotFoundError, NotADirectoryError):
                continue
            out += [doc for doc in (self.read(kind, n, name) for name in names) if doc]
        return out

    def get(self, kind: str, ns: str, name: str):
        """The lookup spec.load falls back on: an objects.Obj, or None."""
        from minipod.spec import objects

        if kind not in RESOURCES or not os.path.isdir(self.dir(kind)):
            return None  # nothing stored (and no lock to take: `validate` as a user works)
        with self.locked():
            doc = self.read(kind, ns, name)
        if doc is None:
            return None
        obj, problems = objects.parse(doc)
        if obj is None:
            raise StoreError(f"{RESOURCES[kind]} {ns}/{name} in the store is broken: "
                             + "; ".join(problems))
        return obj

    # --- writes (under the lock) -------------------------------------------------------

    def write(self, kind: str, doc: dict) -> dict:
        """Store `doc` (metadata.namespace and name set), with the next resourceVersion."""
        from minipod import state

        meta = doc["metadata"]
        path = self._path(kind, meta["namespace"], meta["name"])
        old = self.read(kind, meta["namespace"], meta["name"])
        prev = int((old or {}).get("metadata", {}).get("resourceVersion") or 0)
        meta["resourceVersion"] = str(max(int(time.time() * 1000), prev + 1))
        if kind == "Secret":
            self._secret_tmpfs()
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        state.write_bytes(path, json.dumps(doc, sort_keys=True).encode(),
                          0o600 if kind == "Secret" else 0o644)
        return doc

    def delete(self, kind: str, ns: str, name: str) -> dict | None:
        doc = self.read(kind, ns, name)
        if doc is None:
            return None
        path = self._path(kind, ns, name)
        os.unlink(path)
        self._prune(kind, os.path.dirname(path))
        return doc

    def _secret_tmpfs(self) -> None:
        d = self.dir("Secret")
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
        point, fstype, _ = fs_type(d)
        if fstype == "tmpfs":
            return
        from minipod.kernel import _libc, mounts

        try:
            mounts.mount(SECRETS_TMPFS, d, "tmpfs",
                         _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC, TMPFS_OPTIONS)
        except OSError as e:
            raise StoreError(f"mount a tmpfs on {d} for secrets (never written to {fstype} "
                             f"at {point}): {e.strerror or e}") from None

    def _prune(self, kind: str, ns_dir: str) -> None:
        """Remove what a delete left empty: the namespace's directory, the kind's (our tmpfs
        first, for secrets), then objects/ itself."""
        try:
            os.rmdir(ns_dir)
        except OSError:
            return  # other objects in the namespace
        top = self.dir(kind)
        if os.listdir(top):
            return
        point, fstype, source = fs_type(top)
        if kind == "Secret" and point == os.path.realpath(top) and source == SECRETS_TMPFS:
            from minipod.kernel import _libc

            _libc.umount2(top, 0)
        for d in (top, os.path.dirname(top)):
            try:
                os.rmdir(d)
            except OSError:
                return
