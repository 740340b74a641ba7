"""netns pins as `ip netns` makes them, on a host where the runtime directory's parent is a
shared mount (systemd makes / and /run shared): the bind of the runtime directory on itself is
then a peer of its parent, so every pin is mounted twice -- once visible, once under the bind.
A sandbox's private copy of the mount table must drop both, or it keeps the pod's network
namespace alive after the pod is gone."""

from __future__ import annotations

import os
import subprocess

import pytest

from minipod.kernel import _libc, mounts, ns
from minipod.net import netns

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def nsfs_under(prefix: str, pid: int | str = "self") -> list[str]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return [ln.split()[4] for ln in f
                if ln.partition(" - ")[2].startswith("nsfs") and ln.split()[4].startswith(prefix)]


@pytest.fixture
def shared_run(tmp_path):
    """Where a tmpfs, shared, stands in for systemd's /run -- mounted in a mount namespace of
    the test's own (a child process), so nothing of it can reach the host."""
    run = tmp_path / "run"
    run.mkdir()
    return str(run)


def test_a_private_copy_drops_the_pins_hidden_under_the_shared_bind(shared_run):
    holder = subprocess.Popen(["sleep", "60"], start_new_session=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # everything below happens in a mount namespace that dies with this child
        code = 1
        try:
            os.close(r)
            ns.unshare("mnt")
            mounts.make_private("/")
            mounts.mount("tmpfs", shared_run, "tmpfs", 0, "mode=0755")
            mounts.mount(None, shared_run, None, _libc.MS_SHARED)
            d = os.path.join(shared_run, "netns")
            netns.pin(holder.pid, os.path.join(d, "pod"))
            before = len(nsfs_under(d))
            sandbox = os.fork()
            if sandbox == 0:  # the sandbox's steps: a copy, made private, then detach_copies
                try:
                    ns.unshare("mnt")
                    mounts.make_private("/")
                    netns.detach_copies(d)
                    os._exit(len(nsfs_under(d)))
                finally:
                    os._exit(100)
            _, status = os.waitpid(sandbox, 0)
            netns.unpin(os.path.join(d, "pod"))  # and the node's own pin goes with both mounts
            os.write(w, f"{before} {os.waitstatus_to_exitcode(status)} {len(nsfs_under(d))}"
                     .encode())
            code = 0
        except BaseException as e:
            os.write(w, f"error {e!r}".encode())
        finally:
            os._exit(code)
    os.close(w)
    try:
        got = os.read(r, 100).decode()
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(r)
        holder.kill()
        holder.wait()
    assert os.waitstatus_to_exitcode(status) == 0, got
    before, in_sandbox, after_unpin = map(int, got.split())
    assert before == 2  # the pin and its copy under the bind: what systemd's shared /run gives
    assert in_sandbox == 0
    assert after_unpin == 0
