"""The seccomp filter bubblewrap installs on everything in a local sandbox (`bwrap --seccomp FD`).

A classic BPF program, assembled here with `struct` (standard library only: the supervisor
imports nothing else, and libseccomp's Python bindings are not on the worker). It fails with
EPERM the system calls a web app never needs and a kernel exploit or escape often does:
debugging other processes, mounting, kernel keyrings, eBPF, perf, module and kexec loading,
namespace changes (`unshare`, `setns`, and `clone` with CLONE_NEWUSER), swap, reboot, clocks.
`clone3` answers ENOSYS (its flags are behind a pointer that seccomp cannot read), so libc falls
back to `clone`, whose flags it can. Other architectures than the one the table is for are
killed outright, so a 32-bit (`int 0x80`) or x32 call cannot skip the table.
"""

from __future__ import annotations

import errno
import platform
import struct

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

# BPF opcodes (linux/filter.h)
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
CLONE_NEWUSER = 0x10000000
X32_SYSCALL_BIT = 0x40000000

BLOCKED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd", "lookup_dcookie",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "unshare", "setns",
    "swapon", "swapoff", "reboot", "acct", "quotactl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm", "syslog", "vhangup",
)  # fmt: skip
"""Refused with EPERM."""

# System call numbers per architecture (arch/x86/entry/syscalls/syscall_64.tbl, and the generic
# table asm-generic/unistd.h that arm64 uses). None: the call does not exist there.
_TABLES: dict[str, tuple[int, dict[str, int | None]]] = {
    "x86_64": (
        0xC000003E,  # AUDIT_ARCH_X86_64
        {
            "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
            "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "fsopen": 430,
            "fsconfig": 431, "fsmount": 432, "fspick": 433, "move_mount": 429,
            "open_tree": 428, "mount_setattr": 442, "keyctl": 250, "add_key": 248,
            "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
            "lookup_dcookie": 212, "init_module": 175, "finit_module": 313,
            "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "unshare": 272,
            "setns": 308, "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163,
            "quotactl": 179, "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305,
            "adjtimex": 159, "open_by_handle_at": 304, "name_to_handle_at": 303, "iopl": 172,
            "ioperm": 173, "syslog": 103, "vhangup": 153, "clone": 56, "clone3": 435,
        },
    ),
    "aarch64": (
        0xC00000B7,  # AUDIT_ARCH_AARCH64
        {
            "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
            "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "fsopen": 430,
            "fsconfig": 431, "fsmount": 432, "fspick": 433, "move_mount": 429,
            "open_tree": 428, "mount_setattr": 442, "keyctl": 219, "add_key": 217,
            "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
            "lookup_dcookie": 18, "init_module": 105, "finit_module": 273,
            "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294, "unshare": 97,
            "setns": 268, "swapon": 224, "swapoff": 225, "reboot": 142, "acct": 89,
            "quotactl": 60, "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266,
            "adjtimex": 171, "open_by_handle_at": 265, "name_to_handle_at": 264, "iopl": None,
            "ioperm": None, "syslog": 116, "vhangup": 58, "clone": 220, "clone3": 435,
        },
    ),
}  # fmt: skip


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes:
    """The filter for `machine` (default: this one's), as `struct sock_filter` records."""
    machine = machine or platform.machine()
    if machine not in _TABLES:
        raise OSError(f"no seccomp table for {machine}")
    arch, numbers = _TABLES[machine]
    eperm = RET_ERRNO | errno.EPERM
    blocked = sorted({n for name in BLOCKED if (n := numbers[name]) is not None})
    clone, clone3 = numbers["clone"], numbers["clone3"]
    out = [
        _ins(_LD_W_ABS, 0, 0, _ARCH),
        _ins(_JEQ_K, 1, 0, arch),
        _ins(_RET_K, 0, 0, RET_KILL_PROCESS),
        _ins(_LD_W_ABS, 0, 0, _NR),
    ]
    if machine == "x86_64":  # x32 calls share the arch value: refuse them all
        out += [_ins(_JGE_K, 0, 1, X32_SYSCALL_BIT), _ins(_RET_K, 0, 0, eperm)]
    for number in blocked:
        out += [_ins(_JEQ_K, 0, 1, number), _ins(_RET_K, 0, 0, eperm)]
    out += [
        _ins(_JEQ_K, 0, 1, clone3),
        _ins(_RET_K, 0, 0, RET_ERRNO | errno.ENOSYS),
        _ins(_JEQ_K, 0, 3, clone),  # clone: refuse a new user namespace (flags: arg 0)
        _ins(_LD_W_ABS, 0, 0, _ARG0_LOW),
        _ins(_JSET_K, 0, 1, CLONE_NEWUSER),
        _ins(_RET_K, 0, 0, eperm),
        _ins(_RET_K, 0, 0, RET_ALLOW),
    ]
    return b"".join(out)


def syscall_numbers(machine: str | None = None) -> dict[str, int | None]:
    return dict(_TABLES[machine or platform.machine()][1])


def audit_arch(machine: str | None = None) -> int:
    return _TABLES[machine or platform.machine()][0]
