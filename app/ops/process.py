"""Process-wide runtime policy: set once at boot (:func:`configure`), before the model loads,
and applied after each request's work (:func:`trim`). The model, the effects and the pipeline
all run under it, so it lives here rather than in an adapter. No-ops where glibc is absent.
"""

from __future__ import annotations

import ctypes

from config import Settings

try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _libc = None
_malloc_trim = getattr(_libc, "malloc_trim", None)

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters


def configure(settings: Settings) -> None:
    """The malloc policy of the onnx tier's lean and balanced modes, and torch's threads on CPU.

    Without its arena, onnxruntime mallocs and frees ~200 MB of activations per run. glibc's
    dynamic mmap threshold would soon serve those from the heap, where freed blocks stay
    resident and fragment; a fixed threshold keeps every large block an mmap that goes back to
    the OS on free, and two malloc arenas stop each request thread from growing its own. (Every
    array over 128 KiB is then a fresh mmap: the effects pay that in page faults,
    ``benchmarks/bench_effects.py``.)
    """
    if settings.segmenter == "onnx" and settings.onnx_memory_mode != "fast" and _libc is not None:
        _libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        _libc.mallopt(M_ARENA_MAX, 2)
    if settings.segmenter == "inspyrenet":
        import torch  # the GPU tier only: the CPU tier never imports torch

        # On CPU (as adapters.inspyrenet.pick_device decides) torch's intra-op pool runs the network.
        if settings.device == "cpu" or (settings.device == "auto" and not torch.cuda.is_available()):
            torch.set_num_threads(settings.inference_threads)


def trim() -> None:
    """Give freed memory back to the OS after a request's full-size work.

    A processing request allocates and frees tens of MB (decoded images, masks, encoded
    outputs). glibc keeps freed heap memory resident for reuse, so after a few large inputs the
    worker sat 20-25 MB above its boot size, and under load its peak rose with it (the 512 MB
    tier's load test: 348 MB without, 333 MB with trimming). ``malloc_trim(0)`` returns the free
    pages at the top and inside the heap; it costs well under a millisecond.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)
