"""A pod's life with the kubelet's semantics: supervisor, probes, hooks, logs, janitor."""
