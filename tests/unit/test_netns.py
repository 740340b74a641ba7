"""Named network namespaces: which mounts are pins."""

from __future__ import annotations

from minipod.net import netns

INFO = """\
45 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
46 45 0:4 net:[4026532178] /run/netns/minipod-web-1a2b3c4d rw shared:2 - nsfs nsfs rw
47 27 0:4 net:[4026532179] /var/run/other rw - nsfs nsfs rw
48 27 0:5 / /run/netns/not-a-pin rw - tmpfs tmpfs rw
"""


def test_only_nsfs_mounts_are_pins(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(INFO)
    assert netns._nsfs_mounts(str(info)) == ["/run/netns/minipod-web-1a2b3c4d", "/var/run/other"]


def test_unpin_of_nothing_is_done(tmp_path):
    netns.unpin("")
    netns.unpin(str(tmp_path / "gone"))  # gone = done
