"""The pod IP in a container's env and argv: planned as a mark, filled in at exec (env.py says
why). Imported by the container's process after it joined the container's mount namespace, so
it imports nothing."""

POD_IP_MARK = "\x01minipod:status.podIP\x01"  # no manifest value holds a \x01


def fill_pod_ip(values: list[str], ip: str) -> list[str]:
    """Replace the mark in env entries or argv (in the container's process, before exec)."""
    return [v.replace(POD_IP_MARK, ip) for v in values]
