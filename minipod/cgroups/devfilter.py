"""A device Policy as a BPF_CGROUP_DEVICE program: cgroup v2's devices "controller".

cgroup v2 has no devices.allow file: the kernel runs the BPF programs attached to the cgroup on
every open(2)/mknod(2) of a device node and refuses (EPERM) when one returns 0. The program
gets a struct bpf_cgroup_dev_ctx (linux/bpf.h):
    u32 access_type   low 16 bits: type (1 block, 2 char); high 16: access (1 mknod, 2 read, 4 write)
    u32 major
    u32 minor
We generate what runc's devicefilter (after crun's ebpf.c) generates, assembled here by hand so
no compiler is needed at run time: load the four fields into r2..r5, then one block per rule
that jumps to the next block on the first mismatch and otherwise returns the rule's verdict,
then the default verdict:

    r2 = ctx->access_type & 0xffff        type
    r3 = ctx->access_type >> 16           access asked for
    r4 = ctx->major ; r5 = ctx->minor
  block i:
    if r2 != TYPE goto block i+1
    r1 = r3 ; r1 &= ACCESS ; if r1 != r3 goto block i+1     (skipped when the rule is rwm)
    if r4 != MAJOR goto block i+1                           (skipped when major is *)
    if r5 != MINOR goto block i+1                           (skipped when minor is *)
    r0 = VERDICT ; exit
  default:
    r0 = DEFAULT ; exit

Every path ends in `r0 = ...; exit` and every jump goes forward, as the verifier demands.
Pure code: unit tests check the bytes and run them through a small interpreter.
"""

from __future__ import annotations

import struct
import sys
from typing import NamedTuple

from minipod.cgroups.devices import Policy, Rule

# linux/bpf.h
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
ACCESS_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}

# Opcodes: class | operation | source (linux/bpf_common.h, linux/bpf.h).
LDX_MEM_W = 0x61   # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
ALU32_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K: dst &= imm (32 bit, upper half zeroed)
ALU32_RSH_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
ALU32_MOV_K = 0xB4  # BPF_ALU | BPF_MOV | BPF_K
ALU32_MOV_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X: dst = src
JNE_K = 0x55        # BPF_JMP | BPF_JNE | BPF_K: if dst != imm: pc += off
JNE_X = 0x5D        # BPF_JMP | BPF_JNE | BPF_X: if dst != src: pc += off
EXIT = 0x95         # BPF_JMP | BPF_EXIT: return r0

R0, R1, R2, R3, R4, R5 = range(6)


class Insn(NamedTuple):
    """struct bpf_insn: 8 bytes. `off` of a jump counts instructions after the next one."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def encode(self) -> bytes:
        # dst_reg:4 and src_reg:4 share a byte; C bit-fields fill from the low bits on
        # little-endian hosts and from the high bits on big-endian ones.
        regs = (self.src << 4 | self.dst) if sys.byteorder == "little" else (self.dst << 4 | self.src)
        return struct.pack("=BBhi", self.code, regs, self.off, self.imm)


_NEXT = -1  # placeholder offset of a "goto next block" jump, fixed once the block is complete


def _prologue() -> list[Insn]:
    return [
        Insn(LDX_MEM_W, R2, R1, 0),
        Insn(ALU32_AND_K, R2, imm=0xFFFF),
        Insn(LDX_MEM_W, R3, R1, 0),
        Insn(ALU32_RSH_K, R3, imm=16),
        Insn(LDX_MEM_W, R4, R1, 4),
        Insn(LDX_MEM_W, R5, R1, 8),
    ]


def _verdict(allow: bool) -> list[Insn]:
    return [Insn(ALU32_MOV_K, R0, imm=int(allow)), Insn(EXIT)]


def _block(rule: Rule) -> list[Insn]:
    access = sum(ACCESS_BITS[c] for c in rule.access)
    block = [Insn(JNE_K, R2, off=_NEXT, imm=TYPES[rule.type])]
    if rule.access != "rwm":
        # The access asked for (one bit or several, e.g. read+write for O_RDWR) must be a
        # subset of the rule's: r1 = asked & rule; mismatch if that lost a bit. r1 (the
        # context pointer) is free: every field is in r2..r5 by now.
        block += [Insn(ALU32_MOV_X, R1, R3), Insn(ALU32_AND_K, R1, imm=access),
                  Insn(JNE_X, R1, R3, off=_NEXT)]
    if rule.major is not None:
        block.append(Insn(JNE_K, R4, off=_NEXT, imm=rule.major))
    if rule.minor is not None:
        block.append(Insn(JNE_K, R5, off=_NEXT, imm=rule.minor))
    block += _verdict(rule.allow)
    # A jump at index i lands at i + 1 + off; the next block starts at len(block).
    return [i._replace(off=len(block) - n - 1) if i.off == _NEXT else i for n, i in enumerate(block)]


def program(policy: Policy) -> list[Insn]:
    """The instructions for a policy: its exceptions in order, then its default."""
    insns = _prologue()
    for rule in policy.exceptions:
        insns += _block(rule)
    return insns + _verdict(policy.default_allow)


def assemble(insns: list[Insn]) -> bytes:
    return b"".join(i.encode() for i in insns)
