"""Mount primitive: thin, typed wrappers with errors that name the mount."""

from __future__ import annotations

import os

from minipod import explain
from minipod.kernel import _libc
from minipod.kernel._libc import (MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE,
                           MS_RDONLY, MS_REC, MS_REMOUNT, MS_SLAVE)

__all__ = ["mount", "bind", "remount_bind", "make_private", "make_slave", "readonly", "mask",
           "pivot_root", "overlay", "MS_NOSUID", "MS_NODEV", "MS_NOEXEC", "MS_RDONLY"]

from minipod.kernel._libc import MS_STRICTATIME  # noqa: E402
_OPTS = ((MS_RDONLY, "ro"), (MS_NOSUID, "nosuid"), (MS_NODEV, "nodev"), (MS_NOEXEC, "noexec"),
         (MS_STRICTATIME, "strictatime"))


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    _libc.mount(source, target, fstype, flags, data)
    if explain.ON:
        # Mounts made through an fd (/proc/self/fd/N: never through a path an image could
        # redirect) are shown at the path the fd stands for.
        src, dst = _shown(source), _shown(target)
        kind = fstype or ("remount" if flags & MS_REMOUNT else "bind" if flags & MS_BIND
                          else "propagation")
        explain.say(f"mount {kind} on {dst}",
                    f"mount({source!r}, {target!r}, {fstype!r}, 0x{flags:x}, {data!r})",
                    shell_command(src, dst, fstype, flags, data), target=dst, fstype=fstype)


def _shown(path: str | None) -> str | None:
    if path and path.startswith("/proc/self/fd/"):
        try:
            return os.readlink(path)
        except OSError:
            pass
    return path


def shell_command(source: str | None, target: str, fstype: str | None, flags: int,
                  data: str | None) -> str:
    """mount(8)'s spelling of a mount(2) call."""
    if flags & (MS_PRIVATE | MS_SLAVE):
        kind = "private" if flags & MS_PRIVATE else "slave"
        return f"mount --make-{'r' if flags & MS_REC else ''}{kind} {target}"
    opts = [name for bit, name in _OPTS if flags & bit]
    if flags & MS_REMOUNT:
        return f"mount -o {','.join(['remount'] + (['bind'] if flags & MS_BIND else []) + opts)} {target}"
    if flags & MS_BIND:
        return f"mount --{'r' if flags & MS_REC else ''}bind {source} {target}"
    if data:
        opts.append(data)
    o = f" -o {','.join(opts)}" if opts else ""
    return f"mount -t {fstype}{o} {source} {target}"


def make_private(path: str = "/") -> None:
    """Stop mount events propagating out of (and into) this mount namespace.

    After unshare(CLONE_NEWNS) the copy still shares propagation with the host when / is a
    shared mount (systemd makes it so): without this, a tmpfs we mount would appear on the host.
    """
    mount(None, path, None, MS_REC | MS_PRIVATE)


def make_slave(path: str = "/") -> None:
    mount(None, path, None, MS_REC | MS_SLAVE)


def bind(src: str, dst: str, readonly: bool = False, recursive: bool = True,
         flags: int = 0) -> None:
    mount(src, dst, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly or flags:
        # A bind mount ignores flags on creation: read-only etc. need a remount of the bind.
        mount(None, dst, None, MS_REMOUNT | MS_BIND | flags | (MS_RDONLY if readonly else 0))


def remount_bind(path: str, flags: int) -> None:
    """Set the per-mount flags (MS_RDONLY, MS_NODEV, ...) of the bind mount at `path` to exactly
    `flags`: a flag left out is cleared, so a caller that wants nodev kept passes it again."""
    mount(None, path, None, MS_REMOUNT | MS_BIND | flags)


def readonly(path: str) -> None:
    """Make `path` a read-only bind of itself (runc's readonlyPaths)."""
    try:
        bind(path, path, readonly=True, flags=MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except FileNotFoundError:
        pass


def mask(path: str) -> None:
    """Hide `path` (runc's maskedPaths): /dev/null over a file, an empty ro tmpfs over a dir."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        mount("tmpfs", path, "tmpfs", MS_RDONLY)
    else:
        mount("/dev/null", path, None, MS_BIND)


def overlay(lower: list[str], upper: str, work: str, target: str, flags: int = 0) -> None:
    """Mount an overlay with `lower` listed top-first (overlayfs order); `flags` e.g. MS_NODEV.

    The option string is limited to one page (4096 bytes), which is why the image store keeps
    layer paths short.
    """
    data = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    if len(data) >= 4096:
        raise OSError(7, f"overlay options for {target} exceed one page ({len(data)} bytes)")
    mount("overlay", target, "overlay", flags, data)


def pivot_root(new_root: str) -> None:
    """Make `new_root` the root and detach the old one (runc's pivotRoot trick).

    pivot_root(".", ".") stacks the old root on top of the new one at "/"; unmounting "/" with
    MNT_DETACH then removes the old root, with no put_old directory left inside the container.
    chroot would be escapable; pivot_root is not.
    """
    os.chdir(new_root)
    _libc.pivot_root(".", ".")
    # The old root must not propagate the unmount to the host: make it a slave first.
    _libc.mount(None, ".", None, MS_REC | MS_SLAVE)
    _libc.umount2(".", MNT_DETACH)
    os.chdir("/")
    if explain.ON:
        explain.say(f"pivot_root into {new_root}, the old root detached",
                    'chdir(new_root); pivot_root(".", "."); mount(NULL, ".", NULL, '
                    'MS_REC|MS_SLAVE); umount2(".", MNT_DETACH)',
                    f"cd {new_root} && pivot_root . . && mount --make-rslave . && umount -l .")
