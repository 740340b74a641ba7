import pytest

from minipod.spec.expand import expand, expand_env

VARS = {"VAR_A": "A", "VAR_B": "B", "EMPTY": "", "DOLLAR": "$"}


# Cases from the kubelet's own rules (third_party/forked/golang/expansion).
@pytest.mark.parametrize("given, want", [
    ("$(VAR_A)", "A"),
    ("___$(VAR_A)___", "___A___"),
    ("$(VAR_A)-$(VAR_B)", "A-B"),
    ("$(VAR_A)$(VAR_B)", "AB"),
    ("$(EMPTY)", ""),
    ("$(UNDEFINED)", "$(UNDEFINED)"),          # undefined: kept verbatim
    ("x$(UNDEFINED)y$(VAR_A)", "x$(UNDEFINED)yA"),
    ("$$(VAR_A)", "$(VAR_A)"),                 # escaped: not expanded
    ("$$$(VAR_A)", "$A"),
    ("$$$$(VAR_A)", "$$(VAR_A)"),
    ("$$", "$"),
    ("$$$", "$$"),                             # "$$" -> "$", then a trailing "$" kept
    ("$", "$"),                                # lone / trailing "$"
    ("abc$", "abc$"),
    ("$VAR_A", "$VAR_A"),                      # shell syntax is not Kubernetes syntax
    ("${VAR_A}", "${VAR_A}"),
    ("$(VAR_A", "$(VAR_A"),                    # unterminated
    ("$(", "$("),
    ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),    # no nesting: the name is "VAR_A$(VAR_B"
    ("$(VAR_A)$(", "A$("),
    ("$()", "$()"),
    ("$(DOLLAR)(VAR_A)", "$(VAR_A)"),          # one pass: a value is not expanded again
    ("no vars here", "no vars here"),
    ("", ""),
    ("(VAR_A)", "(VAR_A)"),
    ("ünïcödé $(VAR_A)", "ünïcödé A"),
])
def test_expand(given, want):
    assert expand(given, VARS) == want


def test_env_refers_to_earlier_vars_only():
    env = [("A", "a"), ("B", "$(A)-b"), ("C", "$(D)"), ("D", "d"), ("E", "$(C)/$(D)")]
    assert expand_env(env, {}) == {"A": "a", "B": "a-b", "C": "$(D)", "D": "d", "E": "$(D)/d"}


def test_env_uses_base_after_its_own_vars():
    base = {"PATH": "/bin", "HOME": "/root"}
    env = [("PATH", "$(PATH):/opt/bin"), ("X", "$(HOME) $(PATH)")]
    got = expand_env(env, base)
    assert got == {"PATH": "/bin:/opt/bin", "X": "/root /bin:/opt/bin"}
    assert base == {"PATH": "/bin", "HOME": "/root"}  # not modified


def test_env_without_base_keeps_image_vars_literal():
    # What the kubelet does: it never sees the image's ENV.
    assert expand_env([("P", "$(PATH):/x")], {}) == {"P": "$(PATH):/x"}


def test_env_redefinition_and_escapes():
    env = [("A", "1"), ("A", "$(A)2"), ("B", "$$(A)"), ("C", "")]
    assert expand_env(env, {}) == {"A": "12", "B": "$(A)", "C": ""}
