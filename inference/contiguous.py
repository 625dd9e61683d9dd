"""Several files mapped back to back into one contiguous, read-only address range (no copy).

A tensor stored as N chunk atoms is N blob files; the runtime wants one buffer. Instead of joining the
chunks in RAM, reserve the whole range and map each file into its place with MAP_FIXED: the pages stay
in the page cache, shared with other processes, and the process allocates nothing. Every chunk but the
last must be a whole number of pages (CHUNK_BYTES is 16 MiB). POSIX only; `map_files` returns None
where that is not possible, and the caller joins the bytes instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from collections.abc import Sequence

_PAGE = mmap.PAGESIZE
_MAP_FIXED = 0x10  # the same value on Linux and the BSDs/macOS
_FAILED = ctypes.c_void_p(-1).value
_PROT_NONE = 0


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def _pages(n: int) -> int:
    return (n + _PAGE - 1) // _PAGE * _PAGE


class _Unmap:
    """Unmaps the range when the buffer that owns it is collected."""

    def __init__(self, libc, addr: int, length: int):
        self.libc, self.addr, self.length = libc, addr, length

    def __del__(self):
        self.libc.munmap(self.addr, self.length)


def map_files(paths: Sequence[str | os.PathLike]) -> memoryview | None:
    """A read-only memoryview over the files' bytes, back to back; None if they cannot be mapped so."""
    sizes = [os.path.getsize(p) for p in paths]
    total = sum(sizes)
    if os.name != "posix" or total == 0 or any(s % _PAGE for s in sizes[:-1]) or 0 in sizes:
        return None
    libc = _libc()
    length = _pages(total)
    base = libc.mmap(None, length, _PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if base in (None, _FAILED):
        return None
    owner = _Unmap(libc, base, length)
    offset = 0
    for path, size in zip(paths, sizes, strict=True):
        fd = os.open(path, os.O_RDONLY)
        try:
            got = libc.mmap(base + offset, _pages(size), mmap.PROT_READ, mmap.MAP_SHARED | _MAP_FIXED, fd, 0)
        finally:
            os.close(fd)
        if got != base + offset:
            return None  # `owner` unmaps the whole range as it goes
        offset += size
    buf = (ctypes.c_char * total).from_address(base)
    buf._unmap = owner  # lives as long as any view of `buf`
    return memoryview(buf).cast("B").toreadonly()
