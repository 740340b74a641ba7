"""Host configuration: where minipod keeps things, which bridge and subnet pods use.

Read from a TOML file (default /etc/minipod/config.toml, or $MINIPOD_CONFIG), then environment
overrides (MINIPOD_ROOT, ...). Tests point MINIPOD_CONFIG at a file of their own so that their
pods, bridge, subnet and cgroups never meet a user's or another session's.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from minipod.errors import MinipodError

DEFAULT_PATH = "/etc/minipod/config.toml"
CGROUP_DRIVERS = ("auto", "systemd", "cgroupfs")
# What holds a pod's namespaces (minipod/pod/pinned.py): a pause process, or bind mounts.
SANDBOX_MODES = ("pause", "pinned")
SANDBOX_ANNOTATION = "minipod.io/sandbox"  # a pod's own choice, over the `sandbox` setting


@dataclass(frozen=True)
class Config:
    # Pod state, locks, IP leases, container mount points: gone at reboot, like the pods.
    root: str = "/run/minipod"
    # Container writable layers, emptyDir volumes and logs: on disk, never in RAM (/run is tmpfs).
    data_root: str = "/var/lib/minipod"
    # Image store (blobs, unpacked layers, tags); default <data_root>/images.
    image_root: str = ""
    bridge: str = "minipod0"
    subnet: str = "10.244.0.0/16"
    # "auto" picks systemd when PID 1 is systemd, else cgroupfs (v1 or v2 by what is mounted).
    cgroup_driver: str = "auto"
    cgroup_root: str = "/sys/fs/cgroup"
    # Top slice; every pod lives in <cgroup_parent>/<prefix>-<pod>.slice.
    cgroup_parent: str = "minipod.slice"
    # kubelet --pod-max-pids: -1 = unlimited (the kubelet's default).
    pod_pids_limit: int = -1
    # Path of the pause binary; "" = search (see minipod.pod.pause).
    pause: str = ""
    # Path of the C janitor; "" = search (see minipod.kubelet.janitor), "python" = the Python janitor.
    janitor: str = ""
    # Where the kubelet would read the node's resolv.conf (dnsPolicy Default).
    resolv_conf: str = "/etc/resolv.conf"
    # Registry mirrors, insecure (plain HTTP) registries: see minipod/images/registries.py.
    registries: str = "/etc/minipod/registries.toml"
    # Registry credentials, docker-style ({"auths": {...}}); "" = $REGISTRY_AUTH_FILE, then
    # $DOCKER_CONFIG/config.json, then ~/.docker/config.json.
    auth_file: str = ""
    # Restart back-off (kubelet: 10 s doubling to 300 s); tests and labs use seconds.
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    # "pause": a pause process holds each pod's net/ipc/uts/pid namespaces (containerd);
    # "pinned": bind mounts hold net/ipc/uts and no pause runs (CRI-O's pinns). A pod's
    # annotation minipod.io/sandbox picks its own.
    sandbox: str = "pause"

    def __post_init__(self) -> None:
        if not self.image_root:
            object.__setattr__(self, "image_root", os.path.join(self.data_root, "images"))

    @property
    def cgroup_prefix(self) -> str:
        """'minipod.slice' -> 'minipod': a pod slice is '<prefix>-<pod>.slice' (systemd nesting)."""
        return self.cgroup_parent.rsplit("/", 1)[-1].removesuffix(".slice")


# Settings that name a file or directory. A relative one is taken from the working directory
# of the command that reads the config, here, once: the processes a command starts (a pod's
# janitor, supervisor and pause, the API server) run in /, so that they never pin the directory
# a command was typed in (nothing mounted there could be unmounted while the pod runs).
PATHS = ("root", "data_root", "image_root", "cgroup_root", "pause", "janitor", "resolv_conf",
         "registries", "auth_file")
NOT_A_PATH = {"pause": "python", "janitor": "python"}  # the Python ones, not files

_ENV = {
    "MINIPOD_ROOT": "root",
    "MINIPOD_DATA_ROOT": "data_root",
    "MINIPOD_IMAGE_ROOT": "image_root",
    "MINIPOD_BRIDGE": "bridge",
    "MINIPOD_SUBNET": "subnet",
    "MINIPOD_CGROUP_DRIVER": "cgroup_driver",
    "MINIPOD_CGROUP_PARENT": "cgroup_parent",
    "MINIPOD_PAUSE": "pause",
    "MINIPOD_JANITOR": "janitor",
    "MINIPOD_REGISTRIES": "registries",
    "MINIPOD_SANDBOX": "sandbox",
}


def load(path: str | None = None, env: dict | None = None) -> Config:
    env = os.environ if env is None else env
    path = path or env.get("MINIPOD_CONFIG") or DEFAULT_PATH
    values: dict = {}
    if os.path.exists(path):
        import tomllib  # lazy: most commands never have a config file

        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise MinipodError(f"{path}: {e}") from None
    elif path != DEFAULT_PATH:
        raise MinipodError(f"{path}: config file not found")
    for var, key in _ENV.items():
        if env.get(var):
            values[key] = env[var]
    names = {f.name: f for f in dataclasses.fields(Config)}
    known = {k: v for k, v in values.items() if k in names}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise MinipodError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    for k, v in known.items():
        typ = names[k].type
        try:
            if typ in ("int", int):
                known[k] = int(v)
            elif typ in ("float", float):
                known[k] = float(v)
        except (TypeError, ValueError):
            raise MinipodError(f"{path}: {k}: expected a number, got {v!r}") from None
        if typ in ("str", str) and not isinstance(v, str):
            raise MinipodError(f"{path}: {k}: expected a string, got {v!r}")
    # Checked here, not when a driver is picked: that happens in a pod's supervisor, long
    # after the command that could have said what is wrong with the file.
    if known.get("cgroup_driver", "auto") not in CGROUP_DRIVERS:
        raise MinipodError(f"{path}: cgroup_driver: unknown driver {known['cgroup_driver']!r} "
                           f"({', '.join(CGROUP_DRIVERS)})")
    if known.get("sandbox", "pause") not in SANDBOX_MODES:
        raise MinipodError(f"{path}: sandbox: unknown sandbox mode {known['sandbox']!r} "
                           f"({', '.join(SANDBOX_MODES)})")
    for k in PATHS:
        v = known.get(k)
        if v and v != NOT_A_PATH.get(k):
            known[k] = os.path.abspath(v)
    return Config(**known)


def export(config_path: str | None, env=os.environ) -> None:
    """Make what the processes this command starts will read absolute, in `env`: they read
    the config again ($MINIPOD_CONFIG, then the MINIPOD_* overrides) and run in /. So
    `--config FILE` becomes $MINIPOD_CONFIG (they would read the default file otherwise), and
    a relative $MINIPOD_CONFIG, $MINIPOD_TRACE or path override is made absolute here."""
    if config_path:
        env["MINIPOD_CONFIG"] = config_path
    paths = {var for var, key in _ENV.items() if key in PATHS} | {"MINIPOD_CONFIG",
                                                                   "MINIPOD_TRACE"}
    for var in paths:
        v = env.get(var)
        if v and v != NOT_A_PATH.get(_ENV.get(var, "")) and not os.path.isabs(v):
            env[var] = os.path.abspath(v)
