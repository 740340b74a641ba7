"""kernel/inotify.py on the real kernel: what the agent asks before every request."""

from __future__ import annotations

import os

from minipod.kernel import inotify


def test_a_watch_sees_changes_to_matching_files_only(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "a.py").write_text("x = 1\n")
    w = inotify.Watch([str(tmp_path), str(sub)], (".py",))
    try:
        assert not w.changed()
        (tmp_path / "notes.txt").write_text("not code\n")
        (sub / ".a.py.swp").write_text("an editor's\n")
        assert not w.changed()
        (sub / "a.py").write_text("x = 2\n")  # modified in place
        assert w.changed()
        assert not w.changed()  # said once
        os.rename(sub / "a.py", sub / "b.py")  # moved (a reinstall, a checkout)
        assert w.changed()
        os.utime(sub / "b.py")  # touched
        assert w.changed()
        (sub / "b.py").unlink()
        assert w.changed()
    finally:
        w.close()


def test_a_removed_directory_is_a_change(tmp_path):
    sub = tmp_path / "pkg"
    sub.mkdir()
    w = inotify.Watch([str(sub)], (".py",))
    try:
        sub.rmdir()
        assert w.changed()
    finally:
        w.close()


def test_a_missing_directory_is_an_error(tmp_path):
    try:
        inotify.Watch([str(tmp_path / "gone")], (".py",))
    except OSError as e:
        assert "inotify_add_watch" in str(e) and str(tmp_path / "gone") in str(e)
    else:
        raise AssertionError("no error")
