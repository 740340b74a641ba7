"""bpf(2) for cgroup device programs: load, attach to a cgroup v2 directory, query, detach.

Through ctypes, no library: the four commands we need take a small fixed union bpf_attr that we
pack with struct (the kernel zero-fills what we do not pass, and refuses non-zero bytes it does
not know). Layouts from linux/bpf.h.

A program attached to a cgroup is held by the cgroup: our file descriptors can be closed right
after the attach, and the program goes away with the cgroup (rmdir). We attach with
BPF_F_ALLOW_MULTI, as runc and systemd do: programs of ancestors and of the group all run and
all must say yes, and a later program on an ancestor (systemd's, say) cannot be refused.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

from minipod.cgroups import CgroupError

# Commands (enum bpf_cmd).
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
BPF_F_ALLOW_MULTI = 1 << 1

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

_LOG_SIZE = 1 << 16

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, name: str, attr: ctypes.Array) -> int:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise CgroupError(f"bpf({name}): no syscall number known for {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _fail(name: str, e: OSError, hint: str = "") -> CgroupError:
    return CgroupError(f"bpf({name}): {e.strerror}{hint}")


def load_device_program(code: bytes, license: str = "Apache-2.0", name: str = "minipod_dev") -> int:
    """BPF_PROG_LOAD a BPF_PROG_TYPE_CGROUP_DEVICE program; returns its fd.

    The first try passes no log buffer (a buffer too small for the log would itself fail the
    load, ENOSPC); on failure we load again with one, so the error carries the verifier's words.
    """
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(license.encode())

    def attempt(log: ctypes.Array | None) -> int:
        # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version,
        # prog_flags, prog_name[16]
        attr = ctypes.create_string_buffer(struct.pack(
            "=IIQQIIQII16s", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
            ctypes.addressof(insns), ctypes.addressof(lic),
            1 if log is not None else 0, len(log) if log is not None else 0,
            ctypes.addressof(log) if log is not None else 0, 0, 0, name.encode()[:15]))
        return _bpf(BPF_PROG_LOAD, "BPF_PROG_LOAD", attr)

    try:
        return attempt(None)
    except OSError as first:
        log = ctypes.create_string_buffer(_LOG_SIZE)
        try:
            fd = attempt(log)  # a flaky first failure (EAGAIN from the verifier, say)
        except OSError:
            text = log.value.decode(errors="replace").strip()
            hint = ""
            if first.errno == errno.EPERM:
                hint = " (needs CAP_SYS_ADMIN; kernels before 5.11 also charge RLIMIT_MEMLOCK)"
            if text:
                hint += "; verifier log:\n" + text
            raise _fail("BPF_PROG_LOAD", first, hint) from None
        return fd


def _cgroup_fd(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"open {path}: {e.strerror}") from None


def attached_device_programs(cgroup_fd: int) -> list[int]:
    """IDs of the device programs attached to this cgroup itself (not to its ancestors)."""
    count = 8
    while True:
        ids = (ctypes.c_uint32 * count)()
        # target_fd, attach_type, query_flags, attach_flags (out), prog_ids, prog_cnt (in/out)
        attr = ctypes.create_string_buffer(struct.pack(
            "=IIIIQI4x", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), count))
        try:
            _bpf(BPF_PROG_QUERY, "BPF_PROG_QUERY", attr)
        except OSError as e:
            if e.errno == errno.ENOSPC and count < 1024:  # more than `count`: the kernel says how many
                count = struct.unpack_from("=I", attr.raw, 24)[0]
                continue
            raise _fail("BPF_PROG_QUERY", e) from None
        found = struct.unpack_from("=I", attr.raw, 24)[0]
        return list(ids[:found])


def _prog_fd(prog_id: int) -> int | None:
    """An fd of a loaded program by its ID; None if it is gone meanwhile."""
    attr = ctypes.create_string_buffer(struct.pack("=III", prog_id, 0, 0))  # prog_id, next_id, open_flags
    try:
        return _bpf(BPF_PROG_GET_FD_BY_ID, "BPF_PROG_GET_FD_BY_ID", attr)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise _fail(f"BPF_PROG_GET_FD_BY_ID {prog_id}", e) from None


def _attach_attr(cgroup_fd: int, prog_fd: int, flags: int = 0) -> ctypes.Array:
    # target_fd, attach_bpf_fd, attach_type, attach_flags, replace_bpf_fd
    return ctypes.create_string_buffer(struct.pack("=IIIII", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags, 0))


def set_device_program(cgroup_dir: str, code: bytes | None) -> None:
    """Make `code` the one device program of a cgroup v2 directory; None = no program (allow all).

    The new program is attached before the old ones are detached, so the group is never
    without a filter in between (runc's order). Every device program on the group is replaced:
    the group is ours.
    """
    cgroup_fd = _cgroup_fd(cgroup_dir)
    try:
        old = attached_device_programs(cgroup_fd)
        if code is not None:
            prog_fd = load_device_program(code)
            try:
                _bpf(BPF_PROG_ATTACH, "BPF_PROG_ATTACH", _attach_attr(cgroup_fd, prog_fd, BPF_F_ALLOW_MULTI))
            except OSError as e:
                raise _fail(f"BPF_PROG_ATTACH BPF_CGROUP_DEVICE to {cgroup_dir}", e) from None
            finally:
                os.close(prog_fd)  # the cgroup holds the program now
        for prog_id in old:
            fd = _prog_fd(prog_id)
            if fd is None:
                continue
            try:
                _bpf(BPF_PROG_DETACH, "BPF_PROG_DETACH", _attach_attr(cgroup_fd, fd))
            except OSError as e:
                if e.errno != errno.ENOENT:  # detached meanwhile
                    raise _fail(f"BPF_PROG_DETACH {prog_id} from {cgroup_dir}", e) from None
            finally:
                os.close(fd)
    finally:
        os.close(cgroup_fd)
