"""Device rules, policies and the BPF device program built from them (no kernel).

The program is checked twice: byte for byte for a one-rule policy (hand-assembled from
linux/bpf.h, as `bpftool prog dump xlated` would show it), and by running it through a small
interpreter of the few instructions it uses, against the policy's meaning written out here.
"""

from __future__ import annotations

import itertools

import pytest

from minipod.cgroups import CgroupError, Limits, devfilter, devices
from minipod.cgroups.devices import ALLOW_ALL, DEFAULT, Policy, Rule
from minipod.cgroups.systemd import device_properties, device_specifier


# -- the model ----------------------------------------------------------------------------------

def test_rule_lines_and_parse_round_trip():
    for line in ("c 1:3 rwm", "c 136:* rwm", "b *:* m", "c *:* rw", "a *:* rwm"):
        assert Rule.parse(line).line() == line
    assert Rule.parse("c 136:* rwm") == Rule("c", 136, None, "rwm")


@pytest.mark.parametrize("line, why", [
    ("x 1:3 rwm", "expected 'TYPE MAJOR:MINOR ACCESS'"),
    ("c 1:3 mr", "access must be some of r, w, m in that order"),
    ("c 1:3 rr", "access must be some of r, w, m in that order"),
    ("c 4096:0 r", "major must be 0..4095"),
    ("c 1:1048576 r", "minor must be 0..1048575"),
    ("a 1:3 rwm", "an 'a' rule covers every device"),
])
def test_bad_rules_are_refused_naming_them(line, why):
    with pytest.raises(CgroupError, match=why):
        Rule.parse(line)


def test_policies_deny_by_default_or_allow_after_a_leading_a():
    assert not DEFAULT.default_allow and not DEFAULT.allows_all
    assert DEFAULT.exceptions == DEFAULT.rules
    assert ALLOW_ALL.default_allow and ALLOW_ALL.allows_all and ALLOW_ALL.exceptions == ()
    assert not Policy(()).default_allow  # no rules: nothing allowed
    deny_list = Policy((Rule("a"), Rule("b", 8, None, allow=False)))
    assert deny_list.default_allow and not deny_list.allows_all


def test_policies_the_kernel_would_not_keep_as_written_are_refused():
    with pytest.raises(CgroupError, match="can only be the first rule"):
        Policy((Rule("c", 1, 3), Rule("a")))
    with pytest.raises(CgroupError, match="repeats the default"):
        Policy((Rule("c", 1, 3, allow=False),))  # denying in a deny-all policy


def test_default_is_runcs_allowed_devices():
    """containerd's CRI spec denies all; runc appends these to every container."""
    assert [r.line() for r in DEFAULT.rules] == [
        "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm", "c 5:0 rwm",
        "c 1:5 rwm", "c 1:9 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm"]
    assert all(r.allow for r in DEFAULT.rules)


def test_limits_default_to_the_allow_list_and_take_a_name():
    assert Limits().devices is DEFAULT
    assert Limits(devices="allow-all").devices is ALLOW_ALL
    assert Limits(**{"devices": "default"}).devices is DEFAULT  # from a JSON plan
    assert Limits(devices=None).devices is None
    with pytest.raises(CgroupError, match="devices: unknown policy 'all'"):
        Limits(devices="all")


# -- the BPF program ----------------------------------------------------------------------------

def test_program_bytes_for_one_rule():
    code = devfilter.assemble(devfilter.program(Policy((Rule("c", 1, 3),))))
    assert code.hex(" ", 8).split() == [
        "6112000000000000",  # r2 = *(u32 *)(r1 + 0)
        "54020000ffff0000",  # w2 &= 0xffff             type
        "6113000000000000",  # r3 = *(u32 *)(r1 + 0)
        "7403000010000000",  # w3 >>= 16                access
        "6114040000000000",  # r4 = *(u32 *)(r1 + 4)    major
        "6115080000000000",  # r5 = *(u32 *)(r1 + 8)    minor
        "5502040002000000",  # if r2 != 2 (char) goto +4
        "5504030001000000",  # if r4 != 1 goto +3
        "5505020003000000",  # if r5 != 3 goto +2
        "b400000001000000",  # w0 = 1
        "9500000000000000",  # exit
        "b400000000000000",  # w0 = 0                   the default: deny
        "9500000000000000",  # exit
    ]


def test_partial_access_is_checked_with_a_mask():
    insns = devfilter.program(Policy((Rule("b", None, None, "m"),)))
    block = insns[6:]
    assert block[:4] == [
        devfilter.Insn(devfilter.JNE_K, devfilter.R2, off=5, imm=devfilter.DEV_BLOCK),
        devfilter.Insn(devfilter.ALU32_MOV_X, devfilter.R1, devfilter.R3),
        devfilter.Insn(devfilter.ALU32_AND_K, devfilter.R1, imm=devfilter.ACC_MKNOD),
        devfilter.Insn(devfilter.JNE_X, devfilter.R1, devfilter.R3, off=2),
    ]


def run(insns: list[devfilter.Insn], dev_type: int, access: int, major: int, minor: int) -> int:
    """Interpret the program on a struct bpf_cgroup_dev_ctx; returns r0 at exit."""
    ctx = [access << 16 | dev_type, major, minor]
    reg = [0] * 11
    pc = steps = 0
    while True:
        steps += 1
        assert steps < 10_000 and 0 <= pc < len(insns), "ran off the program"
        i = insns[pc]
        pc += 1
        if i.code == devfilter.LDX_MEM_W:
            assert i.src == devfilter.R1 and i.off % 4 == 0
            reg[i.dst] = ctx[i.off // 4]
        elif i.code == devfilter.ALU32_AND_K:
            reg[i.dst] = reg[i.dst] & i.imm & 0xFFFFFFFF
        elif i.code == devfilter.ALU32_RSH_K:
            reg[i.dst] = (reg[i.dst] & 0xFFFFFFFF) >> i.imm
        elif i.code == devfilter.ALU32_MOV_K:
            reg[i.dst] = i.imm & 0xFFFFFFFF
        elif i.code == devfilter.ALU32_MOV_X:
            reg[i.dst] = reg[i.src] & 0xFFFFFFFF
        elif i.code in (devfilter.JNE_K, devfilter.JNE_X):
            other = i.imm if i.code == devfilter.JNE_K else reg[i.src]
            assert i.off >= 0, "backward jump"
            if reg[i.dst] != other:
                pc += i.off
        elif i.code == devfilter.EXIT:
            return reg[0]
        else:
            raise AssertionError(f"unknown opcode {i.code:#x}")


def meaning(policy: Policy, kind: str, access: str, major: int, minor: int) -> bool:
    """The policy by its definition: the first exception that covers the request decides."""
    for r in policy.exceptions:
        if r.type == kind and r.major in (None, major) and r.minor in (None, minor) \
                and set(access) <= set(r.access):
            return r.allow
    return policy.default_allow


POLICIES = [
    DEFAULT,
    ALLOW_ALL,
    Policy(()),
    Policy((Rule("a"), Rule("b", 7, None, "rw", allow=False), Rule("c", 1, 3, "w", allow=False))),
    Policy((Rule("c", 1, None, "r"), Rule("b", 8, 0, "rm"))),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: " ".join(r.line() for r in p.rules) or "empty")
def test_program_decides_as_the_policy_says(policy):
    insns = devfilter.program(policy)
    accesses = ["m", "r", "w", "rw", "rwm"]
    numbers = [(1, 3), (1, 5), (1, 4), (5, 2), (7, 0), (7, 9), (8, 0), (136, 4), (10, 200)]
    for kind, access, (major, minor) in itertools.product("cb", accesses, numbers):
        bits = sum(devfilter.ACCESS_BITS[c] for c in access)
        got = run(insns, devfilter.TYPES[kind], bits, major, minor)
        want = meaning(policy, kind, access, major, minor)
        assert got == int(want), (kind, major, minor, access)


def test_default_program_allows_the_container_nodes_and_no_disk():
    insns = devfilter.program(DEFAULT)
    char, block = devfilter.DEV_CHAR, devfilter.DEV_BLOCK
    rw = devfilter.ACC_READ | devfilter.ACC_WRITE
    assert run(insns, char, rw, 1, 3) == 1       # /dev/null
    assert run(insns, char, rw, 136, 7) == 1     # /dev/pts/7
    assert run(insns, block, rw, 7, 0) == 0      # /dev/loop0
    assert run(insns, block, devfilter.ACC_READ, 8, 0) == 0  # /dev/sda
    assert run(insns, block, devfilter.ACC_MKNOD, 8, 0) == 1  # mknod is allowed, open is not
    assert run(insns, char, rw, 1, 1) == 0       # /dev/mem


# -- systemd's spelling -------------------------------------------------------------------------

def test_device_allow_specifiers():
    assert device_specifier(Rule("c", 1, 3)) == "/dev/char/1:3"
    assert device_specifier(Rule("b", 7, 2)) == "/dev/block/7:2"
    assert device_specifier(Rule("c", 136, None)) == "char-136"
    assert device_specifier(Rule("b", None, None, "m")) == "block-*"
    with pytest.raises(CgroupError, match=r"'c \*:3 rwm': DeviceAllow= cannot name one minor"):
        device_specifier(Rule("c", None, 3))


def test_device_properties():
    clear = ("DeviceAllow", ("a(ss)", []))
    assert device_properties(ALLOW_ALL) == [clear, ("DevicePolicy", ("s", "auto"))]
    props = device_properties(Policy((Rule("c", 1, 3), Rule("c", None, None, "m"))))
    assert props == [clear, ("DevicePolicy", ("s", "strict")),
                     ("DeviceAllow", ("a(ss)", [("/dev/char/1:3", "rwm"), ("char-*", "m")]))]
    with pytest.raises(CgroupError, match="cannot be expressed"):
        device_properties(Policy((Rule("a"), Rule("b", 8, None, allow=False))))
