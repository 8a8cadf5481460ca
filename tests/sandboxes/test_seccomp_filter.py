"""The seccomp program bubblewrap installs, run through a small classic-BPF interpreter (the
kernel's semantics for the few instructions it uses), so every decision is checked fast; the
isolation tests check the kernel applies it in a real sandbox."""

from __future__ import annotations

import errno
import struct

import pytest

from sandboxes.local import seccomp
from sandboxes.local.layout import Layout
from sandboxes.local.supervisor import UNCAPPED_SCRATCH_MB, bwrap_argv


def run_filter(program: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    code = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
        elif op == 0x06:
            return k
        elif op in (0x15, 0x35, 0x45):
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[op]
            pc += jt if taken else jf
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_filter_refuses_the_kernel_surface_and_allows_the_rest(machine: str) -> None:
    program = seccomp.program(machine)
    numbers = seccomp.syscall_numbers(machine)
    arch = seccomp.audit_arch(machine)
    eperm = seccomp.RET_ERRNO | errno.EPERM
    for name in ("ptrace", "mount", "keyctl", "bpf", "unshare", "setns", "init_module"):
        assert run_filter(program, numbers[name], arch) == eperm, name  # type: ignore[arg-type]
    clone = numbers["clone"]
    assert clone is not None
    assert run_filter(program, clone, arch, arg0=seccomp.CLONE_NEWUSER | 0x11) == eperm
    assert run_filter(program, clone, arch, arg0=0x003D0F00) == seccomp.RET_ALLOW  # a thread
    clone3 = numbers["clone3"]
    assert clone3 is not None
    assert run_filter(program, clone3, arch) == seccomp.RET_ERRNO | errno.ENOSYS
    for allowed in (0, 1, 2, 3, 60, 59, 231):  # read, write, open(at), close, exit, execve...
        if allowed not in {n for n in numbers.values() if n is not None}:
            assert run_filter(program, allowed, arch) == seccomp.RET_ALLOW, allowed
    # Another architecture's calls (32-bit `int 0x80`, say) never reach the table.
    assert run_filter(program, 1, 0x40000003) == seccomp.RET_KILL_PROCESS
    if machine == "x86_64":
        assert run_filter(program, seccomp.X32_SYSCALL_BIT | 101, arch) == eperm


def test_bwrap_gets_the_filter_and_bounded_scratch_without_cgroups(tmp_path) -> None:
    state = {"disk_mb": 2048, "network": "none"}
    layout = Layout(tmp_path)
    capped = bwrap_argv(layout, state, cgroups_ok=True, seccomp_fd=7)
    uncapped = bwrap_argv(layout, state, cgroups_ok=False, seccomp_fd=7)
    assert capped[capped.index("--seccomp") + 1] == "7"
    sizes = [uncapped[i + 1] for i, arg in enumerate(uncapped) if arg == "--size"]
    assert sizes == [str(UNCAPPED_SCRATCH_MB * 1024 * 1024)] * 3
    capped_sizes = [capped[i + 1] for i, arg in enumerate(capped) if arg == "--size"]
    assert capped_sizes == [str(2048 * 1024 * 1024)] * 3
