"""Volumes other than the plain emptyDir, and the env that reads the same objects.

Pure planning (no host access): content.py (the files of configMap, secret, downwardAPI and
projected volumes), env.py (env valueFrom and envFrom), build.py (a volume's plan entry and a
container's mounts of it). On the host, run by the pod orchestrator before the sandbox exists:
setup.py (tmpfs, the atomic writer's layout, hostPath checks, named claim volumes), with
atomic.py, hostpath.py and claims.py as its parts.
"""
