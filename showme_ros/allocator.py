"""Keep a long-running image server's memory flat: large buffers go back to the OS when freed.

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), after
which buffers of camera-frame size come from per-thread heaps and stay resident when freed. Under
a multi-threaded executor every worker thread's heap then holds its own few frames: the node's
RSS climbs by hundreds of MiB with large frames. A fixed threshold (which also turns that
adjustment off) makes every buffer of at least ``LARGE_BUFFER_BYTES`` an mmap of its own, unmapped
on free. Smaller allocations are unaffected. The cost: the model's activations of that size
are mapped and unmapped (and their pages faulted in) at every use. An 8-frame rollout of the
shipped model at guidance 2 has some of 4 and 8 MiB: its UNet forward took 1.35x and the whole
PyTorch call 1.07x the CPU time with this threshold as without it (``docs/BENCHMARKS.md``,
"CPU speed of the shipped model").
"""

from __future__ import annotations

import ctypes
import ctypes.util

LARGE_BUFFER_BYTES = 4 << 20
_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


def return_large_buffers_to_the_os(threshold: int = LARGE_BUFFER_BYTES) -> bool:
    """Serve allocations of ``threshold`` bytes or more with mmap; False where libc is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
