"""Keep per-message buffers on the heap (glibc malloc).

zmq copies every frame below `transport.COPY_THRESHOLD` (4 MiB) into a buffer it mallocs, and
receives every message into one. glibc serves an allocation above its mmap threshold (128 KiB
at start) with a fresh mmap: page faults to fill it, a munmap when freed. The threshold only
rises on its own once a process happens to free such a block, so whether a node pays that for
every pull, push and batched read would depend on its history, and so would its throughput.
Nodes therefore fix the thresholds at start, the way glibc's own adjustment would leave them.
"""
from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20  # allocations up to this size come from the heap (= COPY_THRESHOLD)
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # free memory kept at the top of the heap before trimming
# A training worker's batches in flight (read ahead, featurized, being learned) are tens of MiB
# of arrays, freed and made again every batch: with the nodes' threshold the heap gives the
# freed ones back and takes them again, a page fault per 4 KiB every time.
WORKER_TRIM_THRESHOLD = 64 << 20


def keep_message_buffers_on_heap(keep_free: int = TRIM_THRESHOLD) -> bool:
    """Serve allocations up to 4 MiB from the heap, and keep up to `keep_free` bytes (8 MiB)
    of freed heap before returning it to the system. True if set; False where malloc is not
    glibc's.

    Larger thresholds buy a node nothing more (bigger frames are sent without copying) and
    cost resident memory: every node would keep more freed heap."""
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, keep_free))
