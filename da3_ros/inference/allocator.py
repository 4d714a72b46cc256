"""Large allocations kept in the process heap (glibc), so a 1 MB message costs no page faults.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` with a fresh ``mmap`` and unmaps it on
``free``, and gives the heap's free top back to the system above ``M_TRIM_THRESHOLD``. A node
moves megabytes per frame through short-lived buffers (rclpy's take buffer and the ``bytes`` of
each received image, 0.9 MB for 640x480 rgb8; the inference process's copies of each frame), so
each one faulted its pages in again: receiving one 640x480 rgb8 image took 3.0-3.2 ms of CPU on
the 2-core machine, 0.8-1.0 ms with the thresholds here (bench/RESULTS.md, "Receiving an
image"). :func:`keep_large_allocations` raises them once at start (``mallopt``): allocations up
to 32 MiB come from the heap and freed memory is reused, the process keeping up to 256 MiB of
free heap instead of returning it. ``DA3_MALLOC_TUNING=0`` in the environment leaves glibc's
defaults. Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: ``mallopt`` parameters (glibc ``malloc.h``).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
#: Bytes: allocations below this come from the heap (glibc caps it at 32 MiB on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Bytes of free heap top a process keeps before giving memory back.
TRIM_THRESHOLD = 256 << 20
#: Bytes added to each heap growth.
TOP_PAD = 64 << 20


def keep_large_allocations(respect_env: bool = True) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see module docstring).

    Args:
        respect_env: honour ``DA3_MALLOC_TUNING=0`` (the benchmark's own processes pass False,
            so an A/B of the node changes the node only).

    Returns:
        True when the thresholds were set; False with ``DA3_MALLOC_TUNING=0`` or without
        glibc's ``mallopt``.
    """
    if respect_env and os.environ.get("DA3_MALLOC_TUNING", "1").strip() == "0":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(param, value) == 1 for param, value in settings)
