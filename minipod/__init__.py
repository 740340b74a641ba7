"""minipod: Kubernetes-style pods from raw Linux primitives."""

__version__ = "0.1.0"
