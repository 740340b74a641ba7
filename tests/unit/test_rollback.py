"""The undo stack every setup step registers with (minipod/rollback.py)."""

from __future__ import annotations

import pytest

from minipod.rollback import Rollback


def test_undoes_newest_first_and_a_failing_undo_does_not_stop_the_rest(capsys):
    done = []

    def broken():
        raise OSError(16, "Device or resource busy")

    with pytest.raises(RuntimeError, match="step 3 failed"):
        with Rollback() as rb:
            rb.push("step 1", lambda: done.append(1))
            rb.push("step 2", broken)
            rb.push("step 3", lambda: done.append(3))
            raise RuntimeError("step 3 failed")  # the original error is what the user sees
    assert done == [3, 1]
    assert capsys.readouterr().err == \
        "minipod: rollback: could not undo step 2: [Errno 16] Device or resource busy\n"


def test_commit_keeps_what_was_set_up():
    done = []
    with Rollback() as rb:
        rb.push("step", lambda: done.append(1))
        rb.commit()
    assert done == []
    rb.run()  # nothing left to undo, also later
    assert done == []
