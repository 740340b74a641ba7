"""Kernel primitives with small typed APIs (libc calls, namespaces, mounts, capabilities).

They never import pod code."""
