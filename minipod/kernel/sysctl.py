"""sysctl primitive: write a kernel parameter through /proc/sys.

The namespaced ones (net.*, the ipc kernel.* ones) belong to the namespaces of the process that
opens the file: write them from a process that has already unshared (or joined) the pod's
namespaces, and the host's values are untouched.
"""

from __future__ import annotations


def path(name: str) -> str:
    """`net.ipv4.ip_local_port_range` -> /proc/sys/net/ipv4/ip_local_port_range."""
    return "/proc/sys/" + name.replace(".", "/")


def write(name: str, value: str) -> None:
    try:
        with open(path(name), "w") as f:
            f.write(value)
    except OSError as e:
        raise OSError(e.errno, f"sysctl {name}={value!r}: {e.strerror}") from None


def read(name: str) -> str:
    with open(path(name)) as f:
        return f.read().strip()
