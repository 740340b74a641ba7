"""Path resolution inside a container's root: symlinks and ".." never lead out of it.

Both resolvers are checked: openat2(RESOLVE_IN_ROOT) where the kernel has it, and the
component-by-component walk older kernels get (forced by turning openat2 off)."""

from __future__ import annotations

import errno
import os

import pytest

from minipod.kernel import inroot
from minipod.pod.rootfs import secure_join


@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    if request.param == "walk":
        monkeypatch.setattr(inroot, "_have_openat2", False)
    return request.param


@pytest.fixture
def root(tmp_path, resolver):
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (r / "usr" / "lib").mkdir(parents=True)
    return r


def opened(root, path: str, create=None) -> str:
    """Where open_in_root's fd points, as a host path."""
    rfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = inroot.open_in_root(rfd, path, create)
    finally:
        os.close(rfd)
    try:
        return os.readlink(inroot.fd_path(fd))
    finally:
        os.close(fd)


def test_plain_paths(root):
    assert secure_join(str(root), "/etc/passwd") == f"{root}/etc/passwd"
    assert secure_join(str(root), "/") == str(root)
    assert secure_join(str(root), "/not/there/yet") == f"{root}/not/there/yet"


def test_absolute_symlink_stays_in_the_root(root):
    os.symlink("/etc", root / "hostetc")
    os.symlink("/", root / "data")
    assert secure_join(str(root), "/hostetc/passwd") == f"{root}/etc/passwd"
    assert secure_join(str(root), "/data") == str(root)
    assert opened(root, "/data") == str(root)
    assert opened(root, "/hostetc") == f"{root}/etc"


def test_dotdot_above_the_root_is_the_root(root):
    os.symlink("../../../../../etc", root / "usr" / "lib" / "up")
    assert secure_join(str(root), "/../../etc/passwd") == f"{root}/etc/passwd"
    assert secure_join(str(root), "/usr/lib/up/passwd") == f"{root}/etc/passwd"
    assert opened(root, "../../../usr/lib/up") == f"{root}/etc"
    # What does not exist is joined as written, and its ".." cannot climb out either.
    assert secure_join(str(root), "/new/../../../x") == f"{root}/x"


def test_symlink_loop_is_an_error(root):
    os.symlink("/b", root / "a")
    os.symlink("/a", root / "b")
    with pytest.raises(OSError) as e:
        secure_join(str(root), "/a/x")
    assert e.value.errno == errno.ELOOP
    with pytest.raises(OSError) as e:
        opened(root, "/a", "dir")
    assert e.value.errno == errno.ELOOP


def test_symlink_to_a_file(root):
    os.symlink("/etc/passwd", root / "pw")
    assert secure_join(str(root), "/pw") == f"{root}/etc/passwd"
    assert opened(root, "/pw", "file") == f"{root}/etc/passwd"
    with pytest.raises(NotADirectoryError):
        opened(root, "/pw/x", "dir")  # a file is no directory to create things in


def test_dangling_symlink_is_created_inside_the_root(root, tmp_path):
    # CVE-2024-45310: making a mount point through a symlink must not create it on the host.
    host = tmp_path / "host-only"
    os.symlink(str(host / "x"), root / "data")
    assert opened(root, "/data", "dir") == f"{root}{host}/x"
    assert not host.exists()
    os.symlink(str(host / "f"), root / "file")
    assert opened(root, "/file", "file") == f"{root}{host}/f"
    assert os.path.isfile(f"{root}{host}/f") and not host.exists()


def test_missing_without_create_is_an_error_naming_the_path(root):
    with pytest.raises(FileNotFoundError, match="/etc/nope"):
        opened(root, "/etc/nope")


def test_magic_links_are_not_followed(root):
    # A symlink into /proc inside the image names the container's /proc, not ours.
    os.symlink("/proc/self/root", root / "escape")
    assert secure_join(str(root), "/escape/etc") == f"{root}/proc/self/root/etc"
