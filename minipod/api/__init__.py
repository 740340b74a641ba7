"""`minipod serve`: the part of the Kubernetes API that kubectl uses for pods (see README)."""
