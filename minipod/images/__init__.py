"""Images: references (reference.py), the local OCI store (store.py), and a busybox image
built offline from the host's busybox-static (busybox.py).

Nothing is imported here, so `import minipod.images.reference` stays cheap for the CLI.
"""
