"""Keep a long-running image server's memory flat: one malloc arena for every thread.

glibc gives each thread that allocates while another holds the main arena an arena of its own
(up to 8 per core). Under a multi-threaded executor each worker thread's arena then keeps its own
freed camera-frame buffers resident: the node's RSS climbs by hundreds of MiB with large frames.
With a single arena every freed buffer is free for the next request, whichever thread makes it,
and the top of the heap is given back to the OS as usual.

An earlier version fixed glibc's mmap threshold at 4 MiB instead, which also kept RSS flat but
mapped and faulted in every activation of 4 MiB or more at each use: an 8-frame rollout of the
shipped model took 1.17-1.25x the CPU time it takes with one arena (``docs/BENCHMARKS.md``, "The
node's allocator"). The cost of one arena is a shared lock, taken by the executor threads only
while they allocate.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_ARENA_MAX = -8  # from glibc's malloc.h


def keep_memory_flat(arenas: int = 1) -> bool:
    """Limit glibc to ``arenas`` malloc arenas; False where libc is not glibc.

    Call it at process start, before other threads allocate.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))
