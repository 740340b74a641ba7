"""Pull an image into the local store, and the imagePullPolicy that `minipod run` applies.

A pull, in order:
  1. ask each endpoint (mirrors first, then the registry: registries.py) for the manifest of
     the tag or digest; the first that answers is used for everything else;
  2. with a tag already in the store, a HEAD first: if the registry's digest is the one we
     have and the image is complete, stop there (as the kubelet's Always does: no download);
  3. store the index (if any), pick this host's linux/<arch> manifest, store it, fetch the
     config, then download and unpack the layers (in parallel), skipping those we have;
  4. tag the reference -- last, so a failed pull never leaves a tag pointing at an
     incomplete image; what it stored so far is untagged and `minipod image gc` removes it.

Blobs arrive in `<image root>/ingest/<hex>.partial` under an flock (a second pull of the same
blob waits, then finds it stored), are verified against their digest while they arrive, and
renamed into blobs/ only when complete. A partial file left by a killed pull is resumed (Range
request) by the next one. The whole pull holds the store's content lock shared, so rmi and gc
(exclusive) never delete a blob a pull has found present but not tagged yet.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import IO

from minipod.errors import MinipodError
from minipod.images.reference import parse
from minipod.images.store import ImageNotFound, ImageStore, StoreError

# Layer media types a pull accepts (all are tar or tar+gzip; the store sniffs the bytes anyway).
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}
POLICIES = ("Always", "IfNotPresent", "Never")
PARALLEL = 3  # layer downloads at once (docker and containerd use 3 too)


class PullError(MinipodError):
    """A pull failed; `unreachable` is True when no endpoint could be reached at all."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class ImageNeverPull(MinipodError):
    pass


@dataclass
class PullResult:
    ref: str  # normalized reference that was tagged
    digest: str  # what it points at (an index or a manifest)
    pulled: bool  # False: the store already had exactly this
    endpoint: str = ""
    warnings: list[str] = field(default_factory=list)


def default_policy(image: str) -> str:
    """Kubernetes' default imagePullPolicy: Always for `:latest` or no tag, IfNotPresent
    otherwise (a digest counts as a tag that never moves)."""
    r = parse(image)
    if r.digest:
        return "IfNotPresent"
    name = image.split("@", 1)[0]
    explicit_tag = ":" in name.rsplit("/", 1)[-1]
    return "Always" if not explicit_tag or r.tag == "latest" else "IfNotPresent"


def ensure(store: ImageStore, cfg, image_ref: str, policy: str | None, err: IO[str] | None = None) -> None:
    """Make `image_ref` resolvable in `store` according to imagePullPolicy (None = default).

    Always: ask the registry (a HEAD when the tag is here: nothing is downloaded when the
    digest did not change); if no registry endpoint can be reached at all and the image is
    here, use it and print a warning -- minipod runs on laptops that go offline.
    IfNotPresent: pull only when missing. Never: fail unless present.
    """
    err = sys.stderr if err is None else err
    policy = policy or default_policy(image_ref)
    if policy not in POLICIES:
        raise MinipodError(f"imagePullPolicy {policy!r}: must be one of {', '.join(POLICIES)}")
    if policy != "Always":
        try:
            store.resolve(image_ref)
            return
        except ImageNotFound:
            if policy == "Never":
                raise ImageNeverPull(
                    f'image "{image_ref}" is not present locally and imagePullPolicy is Never '
                    f"(minipod pull {image_ref}, or minipod image import, first)"
                ) from None
    from minipod.images import progress

    bar = progress.for_stream(err)
    try:
        result = pull(store, cfg, image_ref, bar)
    except PullError as e:
        if policy == "Always" and e.unreachable:
            try:
                store.resolve(image_ref)
            except (ImageNotFound, StoreError):
                raise e from None
            print(f"warning: {e}; using the local image", file=err)
            return
        raise
    finally:
        bar.close()
    for w in result.warnings:
        print(f"warning: {w}", file=err)


def users(cfg) -> dict[str, set[str]]:
    """{image reference or digest or layer dir: names of the pods whose plan uses it}.

    Every pod with a plan counts, running or not: its containers may be restarted, and
    `minipod rm` is how a user says they are done with it.
    """
    out: dict[str, set[str]] = {}
    pods = os.path.join(cfg.root, "pods")
    try:
        names = sorted(n for n in os.listdir(pods) if not n.startswith("."))
    except FileNotFoundError:
        return out
    for name in names:
        try:
            with open(os.path.join(pods, name, "plan.json"), "rb") as f:
                plan = json.load(f)
        except (OSError, ValueError):
            continue
        for c in (plan.get("init_containers") or []) + (plan.get("containers") or []):
            for key in [c.get("image_ref"), c.get("image_digest"), *(c.get("layers") or [])]:
                if key:
                    out.setdefault(key, set()).add(name)
    return out


def in_use(cfg) -> set[str]:
    """Image references, digests and layer dirs used by some pod (see users())."""
    return set(users(cfg))


# -- the pull ---------------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


def _clients(cfg, ref, client_factory):
    from minipod.images import registries

    regs = registries.load(cfg.registries)
    auth: list = []

    def credentials(host: str):
        if not auth:  # read the auth file only when a registry asks for credentials
            auth.append(registries.AuthFile(registries.auth_file_path(getattr(cfg, "auth_file", ""))))
        return auth[0].lookup(host, ref.repository)

    factory = client_factory
    if factory is None:
        from minipod.images.registry import Client

        factory = Client
    return [factory(ep, ref.repository, credentials) for ep in regs.endpoints(ref.registry)]


def pull(store: ImageStore, cfg, image: str, progress=None, *, client_factory=None) -> PullResult:
    """Pull `image` for this host's platform into `store` and tag it. Raises PullError."""
    from minipod.images import registry as reg

    r = parse(image)
    key = str(r)
    name = r.familiar()
    if progress is None:
        from minipod.images.progress import Quiet

        progress = Quiet()
    if r.digest:
        try:
            store.resolve(key)  # content-addressed: what we have cannot be stale
            store.tag(key, r.digest)
            return PullResult(key, r.digest, pulled=False)
        except (ImageNotFound, StoreError):
            pass
    local = store.tags().get(key) if not r.digest else None
    errors: list[tuple[str, Exception]] = []
    top = client = None
    for client in _clients(cfg, r, client_factory):
        label = f"mirror {client.endpoint}" if client.endpoint.mirror else str(client.endpoint)
        try:
            if local:
                head = client.head_manifest(r.tag)
                if head == local:
                    try:
                        store.resolve(key)
                        return PullResult(key, local, pulled=False, endpoint=str(client.endpoint))
                    except (ImageNotFound, StoreError):
                        pass  # incomplete locally: fetch it again
            top = client.get_manifest(r.digest or r.tag)
            break
        except reg.RegistryError as e:
            errors.append((label, e))
    if top is None:
        unreachable = bool(errors) and all(isinstance(e, reg.Unreachable) for _, e in errors)
        why = "; ".join(f"{label}: {e}" for label, e in errors) or "no registry endpoint configured"
        raise PullError(f"pull {name}: {why}", unreachable=unreachable)
    try:
        with store.content_lock(exclusive=False):
            warnings = _fetch_image(store, client, top, name, progress)
            store.tag(key, top.digest)
    except reg.RegistryError as e:
        raise PullError(f"pull {name}: {client.endpoint}: {e}", unreachable=isinstance(e, reg.Unreachable)) from None
    except StoreError as e:
        raise PullError(f"pull {name}: {e}") from None
    return PullResult(key, top.digest, pulled=top.digest != local, endpoint=str(client.endpoint),
                      warnings=warnings)


def _fetch_image(store: ImageStore, client, top, name: str, progress) -> list[str]:
    """Store the manifest(s), config and layers of `top` for this host; return warnings."""
    from minipod.images import registry as reg

    store.put_blob(top.data, expected=top.digest)
    manifest = top
    if top.media_type in reg.INDEXES:
        arch, variant = reg.host_platform()
        index = top.json()
        entry = reg.pick_platform(index, arch, variant)
        if entry is None:
            raise reg.BadContent(f"no linux/{arch} image in the index {top.digest} (it has: {reg.platforms(index)})")
        digest = entry["digest"]
        if store.has_blob(digest):
            data = store.read_blob(digest)
            manifest = reg.Manifest(data, reg.media_type(data, entry.get("mediaType", "")), digest)
        else:
            manifest = client.get_manifest(digest)
            store.put_blob(manifest.data, expected=digest)
        if manifest.media_type not in reg.MANIFESTS:
            raise reg.BadContent(f"index {top.digest} points at another index ({digest}); not supported")
    m = manifest.json()
    try:
        config_desc = m["config"]
        layers = list(m.get("layers") or [])
        config_digest = config_desc["digest"]
        for layer in layers:
            layer["digest"]  # noqa: B018 -- a KeyError here means a malformed manifest
    except (KeyError, TypeError) as e:
        raise reg.BadContent(f"manifest {manifest.digest} is malformed (missing {e})") from None
    ctype = config_desc.get("mediaType", "")
    if ctype and ctype not in CONFIG_TYPES:
        raise reg.BadContent(f"{name} is not a container image (its config is {ctype!r})")
    for layer in layers:
        lt = layer.get("mediaType", "")
        if "zstd" in lt:
            raise reg.BadContent(f"layer {layer['digest']} is zstd-compressed ({lt}); minipod reads tar and tar+gzip only")
        if lt and lt not in LAYER_TYPES:
            raise reg.BadContent(f"layer {layer['digest']} has unsupported media type {lt!r}")
    if store.has_blob(config_digest):
        config = store.read_json(config_digest)
    else:
        data = client.get_blob(config_digest)
        store.put_blob(data, expected=config_digest)
        config = json.loads(data)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise reg.BadContent(f"manifest {manifest.digest} has {len(layers)} layers but its config lists "
                             f"{len(diff_ids)} diff_ids")
    warnings = []
    arch, _ = reg.host_platform()
    if config.get("architecture") and config["architecture"] != arch:
        warnings.append(f"{name} is built for linux/{config['architecture']}, this host is linux/{arch}: "
                        "its programs may not run")
    _fetch_layers(store, client, list(zip(layers, diff_ids)), progress)
    return warnings


def _fetch_layers(store: ImageStore, client, layers: list[tuple[dict, str]], progress) -> None:
    import threading
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    todo = []
    for desc, diff_id in layers:
        if store.has_blob(desc["digest"]) and os.path.isdir(store.layer_dir(diff_id)):
            progress.start(desc["digest"], desc.get("size"), "Already exists")
        else:
            progress.start(desc["digest"], desc.get("size"), "Waiting")
            todo.append((desc, diff_id))
    if not todo:
        return
    cancel = threading.Event()
    if len(todo) == 1:
        _fetch_layer(store, client, *todo[0], progress, cancel)
        return
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(todo))) as pool:
        futures = [pool.submit(_fetch_layer, store, client, d, i, progress, cancel) for d, i in todo]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            cancel.set()  # the others stop at their next chunk; partial files stay for a resume
            for f in futures:
                f.cancel()
            raise failed[0].exception()


def _fetch_layer(store: ImageStore, client, desc: dict, diff_id: str, progress, cancel) -> None:
    digest = desc["digest"]
    size = desc.get("size") if isinstance(desc.get("size"), int) else None

    def advance(n: int) -> None:
        if cancel.is_set():
            raise _Cancelled()
        progress.advance(digest, n)

    with ingest_lock(store, digest) as partial:
        if not store.has_blob(digest):
            client.download(digest, partial, size, advance)
            store.adopt_blob(partial, digest)
        else:
            _unlink(partial)
        if not os.path.isdir(store.layer_dir(diff_id)):
            progress.status(digest, "Unpacking")
            store.add_layer(store.blob_path(digest), digest=digest, diff_id=diff_id)
    progress.status(digest, "Pull complete")


class ingest_lock:
    """`with ingest_lock(store, digest) as partial:` -- hold an flock on
    `<root>/ingest/<hex>.partial`, the file the blob is downloaded into.

    The lock is on the file itself, and the file is renamed into blobs/ when complete, so a
    waiter may wake holding a lock on a file that is no longer at that path: it checks the
    inode and tries again (then finds the blob stored and does nothing).
    """

    def __init__(self, store: ImageStore, digest: str) -> None:
        self.path = os.path.join(store.ingest, digest.partition(":")[2] + ".partial")
        self.store = store
        self.fd = -1

    def __enter__(self) -> str:
        import fcntl

        self.store._mkdir(self.store.ingest)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self.fd = fd
                    return self.path
            except FileNotFoundError:
                pass
            os.close(fd)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # releases the flock; the partial file stays for a resume


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

