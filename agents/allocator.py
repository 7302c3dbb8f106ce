"""Keep freed memory in the process for reuse (glibc only), set once by the ``gqn-rl`` CLI.

A training step frees and reallocates hundreds of MB of gradients and activations. By default
glibc returns large freed blocks to the kernel and the next step page-faults them back in;
on this project's 2-core CPU machine that costs 15-20% of a paper-size training step
(``gqn-rl speed train-step``). Raising the trim and mmap thresholds keeps them in the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory; returns whether it applied (Linux/glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all((mallopt(_M_MMAP_THRESHOLD, 32 << 20),      # glibc's largest allowed value
                mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1),
                mallopt(_M_TOP_PAD, 256 << 20)))
