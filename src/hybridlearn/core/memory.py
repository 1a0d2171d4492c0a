"""Freed memory kept for reuse (glibc malloc): the `malloc_keep_mb` key of the config.

glibc hands large freed blocks back to the kernel: blocks above a moving threshold are mmap'd and
unmapped one by one, and the heap is trimmed whenever its free top grows past twice that threshold.
A CPU run that allocates tensors of the same few sizes batch after batch (video frames,
activations) then page-faults them in again every time: stylizing the 640x360 demo clip spent
4.4 s of its 40 CPU-seconds in the kernel zeroing pages. With the mmap threshold at glibc's
ceiling (32 MiB) and up to `keep_mb` of freed memory kept, the same batches come from the heap:
the model's predict step went from 28.1 to 24.8 ms per frame (benchmarks/results_style_video.md).

Both settings go together: either one alone turns off glibc's moving threshold and was slower
than the defaults (45-50 ms per frame). Not glibc (macOS, Windows, musl): nothing changes.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_MAX_MB = 32  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit: larger blocks are always mmap'd
DEFAULT_KEEP_MB = 256  # conf/train.yaml's malloc_keep_mb, and stylize()'s


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no mallopt thresholds)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory(keep_mb: int | None) -> bool:
    """Keep up to keep_mb MiB of freed memory in the heap for reuse, and serve blocks up to 32 MiB
    from it (None: leave glibc's defaults). True when applied; process-wide, later allocations only."""
    libc = _libc() if keep_mb is not None else None
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_MAX_MB << 20) == 1
    return ok and libc.mallopt(M_TRIM_THRESHOLD, int(keep_mb) << 20) == 1
