"""Process-wide settings that make CPU training faster; the entry points apply them at start.

1. glibc's allocator keeps freed tensor memory instead of unmapping it. By default glibc serves
   every allocation above a (dynamic) threshold with a fresh ``mmap`` and returns it to the OS
   on free, so each training step page-faults its activations in again, which slows small
   element-wise ops many times over (measurements in docs/performance.md). Raising the mmap
   and trim thresholds (what ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do from the
   environment) makes freed blocks reusable.
2. No GPU probe per step. On a machine without a GPU, a CUDA build of torch asks NVML for the
   device count in every ``Adam.step`` (a library load that fails, every step). When no GPU is
   visible, ``CUDA_VISIBLE_DEVICES=""`` makes that answer immediate.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum: blocks up to 32 MB come from the reusable heap
TRIM_THRESHOLD = 256 << 20  # keep up to 256 MB of freed memory at the top of the heap
TOP_PAD = 64 << 20  # grow the heap in 64 MB steps (fewer brk calls)


def tune_cpu_runtime() -> None:
    """Apply both settings (each is a no-op where it does not apply)."""
    tune_allocator()
    skip_gpu_probe()


def skip_gpu_probe() -> bool:
    """Hide CUDA when there is none, so later availability checks answer at once."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None or torch.cuda.is_available():
        return False
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return True


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
