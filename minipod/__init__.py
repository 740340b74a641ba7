"""minipod: Kubernetes-style pods from raw Linux primitives."""

__version__ = "0.1.0"


def python_m(module: str) -> list[str]:
    """The argv that runs `module` in this interpreter, for every Python process minipod
    starts: `python -P -m module`. Without -P, `-m` puts the working directory first on
    sys.path, and a minipod/ folder wherever root ran a command (another checkout, or one
    planted there) would be imported instead of this one: as root, in the agent or a pod's
    supervisor, for as long as it lives."""
    import sys

    return [sys.executable, "-P", "-m", module]
