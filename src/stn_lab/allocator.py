"""Tunes glibc's allocator for PyTorch on the CPU: keep freed tensor memory instead of unmapping it.

By default glibc serves every allocation above a (dynamic) threshold with a fresh ``mmap`` and
returns it to the OS on free, so each training step page-faults its activations in again. On
this project's 2-core machine that made an element-wise op on a 1.5 MB tensor cost 0.4-1.4 ms
instead of 0.07 ms, and an STN training step about 25% slower. Raising the mmap and trim
thresholds makes freed blocks reusable: the same effect as ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` in the environment, applied from inside the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum: blocks up to 32 MB come from the reusable heap
TRIM_THRESHOLD = 256 << 20  # keep up to 256 MB of freed memory at the top of the heap
TOP_PAD = 64 << 20  # grow the heap in 64 MB steps (fewer brk calls)


def tune_allocator() -> bool:
    """Apply the thresholds; ``True`` if glibc took them (``False`` elsewhere: macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
        )
    )
