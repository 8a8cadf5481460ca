"""mount(2)/umount2(2)/unshare(2) through libc, and listing what is mounted under a directory."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096


def mount(source: str, target: Path, fstype: str, options: str, flags: int = 0) -> None:
    rc = _libc.mount(
        source.encode(), str(target).encode(), fstype.encode(), flags, options.encode()
    )
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {fstype} on {target} ({options}): {os.strerror(errno)}")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare: {os.strerror(errno)}")


def umount(target: Path) -> None:
    """Lazy unmount; a target that is not mounted is fine."""
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        errno = ctypes.get_errno()
        if errno not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise OSError(errno, f"umount {target}: {os.strerror(errno)}")


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below `directory`, deepest first (the order to unmount them)."""
    prefix = str(directory).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix) or point == prefix.rstrip("/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)
