"""Process tuning: the runtime policy of the whole process, set once at boot (:func:`configure`),
before the model loads, and applied after each request's work (:func:`trim`). The model, the effects and the pipeline
all run under it, so it lives here rather than in an adapter. No-ops where glibc is absent.
"""

from __future__ import annotations

import ctypes
import os
import sys

from config import Settings

try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _libc = None
_malloc_trim = getattr(_libc, "malloc_trim", None)

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters

# glibc >= 2.35: malloc madvises its large mmaps MADV_HUGEPAGE, so where transparent huge pages
# are "madvise" (or "always") the activations onnxruntime mallocs per run fault in 2 MB at a time.
# glibc reads it once, at process start: see :func:`exec_with_malloc_tunables`.
MALLOC_TUNABLES = "glibc.malloc.hugetlb=1"


def configure(settings: Settings) -> None:
    """The malloc policy of the onnx tier (every memory mode), and torch's threads on CPU.

    Without its arena (lean, balanced), onnxruntime mallocs and frees ~200 MB of activations per
    run. glibc's dynamic mmap threshold would soon serve those from the heap, where freed blocks
    stay resident and fragment; a fixed threshold keeps every large block an mmap that goes back
    to the OS on free, and two malloc arenas stop each request thread from growing its own. (Every
    array over 128 KiB is then a fresh mmap: the effects pay that in page faults,
    ``benchmarks/bench_effects.py``.) In ``fast`` the activations stay in onnxruntime's arena and
    the policy keeps the rest (decoded photos, the matting's arrays) from fragmenting the heap: the
    4-client server's peak 304 against 334 MB without it (int8, ``EDGE_MATTING=plain``).
    """
    if _onnx_tier(settings):
        _libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        _libc.mallopt(M_ARENA_MAX, 2)
    if settings.segmenter == "inspyrenet":
        import torch  # the GPU tier only: the CPU tier never imports torch

        # On CPU (as adapters.inspyrenet.pick_device decides) torch's intra-op pool runs the network.
        if settings.device == "cpu" or (settings.device == "auto" and not torch.cuda.is_available()):
            torch.set_num_threads(settings.inference_threads)


def _onnx_tier(settings: Settings) -> bool:
    """The onnx tier under glibc: the malloc policy's case."""
    return settings.segmenter == "onnx" and _libc is not None


def wants_malloc_tunables(settings: Settings) -> bool:
    """The onnx tier runs under :data:`MALLOC_TUNABLES`."""
    return _onnx_tier(settings)


def exec_with_malloc_tunables(settings: Settings) -> None:
    """Restart this process (same pid, same command line) with :data:`MALLOC_TUNABLES` in
    ``GLIBC_TUNABLES`` where :func:`wants_malloc_tunables` and it is not there yet; else return.

    Without an arena, each run of u2netp mallocs ~220 MB of activations as fresh mmaps, and the
    fixed mmap threshold of :func:`configure` gives each back to the OS on free: that is what
    keeps the lean mode's peak low, and it costs ~55,000 4 KiB page faults per image. With huge
    pages the same memory faults in ~13,000 (``benchmarks/ort_options.py``), same peak, same
    masks. For the gunicorn master (``config/gunicorn.conf.py``, before it binds or forks: the
    workers inherit it) and the benchmarks. A ``glibc.malloc.hugetlb`` already in
    ``GLIBC_TUNABLES`` (e.g. ``=0`` to opt out) is left as it is.
    """
    current = os.environ.get("GLIBC_TUNABLES", "")
    if not wants_malloc_tunables(settings) or "glibc.malloc.hugetlb" in current or not sys.executable:
        return
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = [a.decode(errors="surrogateescape") for a in f.read().split(b"\0") if a]
    except OSError:  # no procfs: run without
        return
    os.environ["GLIBC_TUNABLES"] = f"{current}:{MALLOC_TUNABLES}" if current else MALLOC_TUNABLES
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def after_boot(settings: Settings) -> None:
    """The malloc policy for serving, once the model is loaded and warmed up: the mmap threshold of
    :func:`configure` raised to :data:`SERVING_MMAP_THRESHOLD`.

    At 128 KiB every array over 128 KiB is a fresh mmap, faulted in page by page on first touch
    and unmapped on free, and a request makes thousands of them below 1 MiB: onnxruntime's smaller
    activations, the edge matting's grids, the review's 640 px planes. On this VM a fault costs
    ~2.5 µs: ~29,000 of them made the matting 190 ms instead of 140. Above the threshold (the large
    activations, full-size images) nothing changes; below it, blocks are reused from the heap, and
    :func:`trim` gives the free ones back after each request. Raised after the boot, not at it: the
    boot's own allocations then lie as before (idle RSS unchanged; at boot it was +10 MB). Measured
    by ``benchmarks/server_memory.py``: peak 234-239 MB against 225-230, requests ~10 % faster
    (docs/benchmarks.md)."""
    if _onnx_tier(settings):
        _libc.mallopt(M_MMAP_THRESHOLD, SERVING_MMAP_THRESHOLD)


SERVING_MMAP_THRESHOLD = 1 << 20

MADV_PAGEOUT = 21  # Linux 5.4
_PAGED_OUT: list[bool] = []  # whether this process has handed its model runtime's pages back


def page_out_model_runtime(settings: Settings) -> int:
    """Hand back the pages of the model runtime's libraries that this worker read while loading the
    model and no other process maps (``madvise(MADV_PAGEOUT)`` on their read-only mappings): the
    onnx tier, after the warm-up's run, which is then run again to bring back what a run needs. The
    bytes of the mappings advised (0 where nothing was: another tier, no glibc, an older kernel, or
    this process did it already: once a process, as the model loads once in a worker; a test run
    builds hundreds of apps in one process, and each hand-back made its next runs read the code back).

    A runtime's shared libraries are large, and building a network from a model file runs code
    that no run needs again: OpenVINO's graph import and kernel generation (~31 MB of its libraries
    resident after the boot, ~8 MB of which a run uses), onnxruntime's session building (~12 of its
    19 MB). Those clean pages count in the worker's RSS (and the container's memory) until the
    kernel reclaims them, which it may leave until the memory limit is near; this does it at boot.
    A page needed again is read back from the file (the page cache, else the disk)."""
    if not _onnx_tier(settings) or not hasattr(_libc, "madvise") or _PAGED_OUT:
        return 0
    _PAGED_OUT.append(True)  # once a process: the load's code runs once (tests build many apps in one)
    marker = f"/{settings.onnx_runtime}/"  # the package's directory: onnxruntime/capi/..., openvino/libs/...
    madvise = _libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or marker not in fields[5] or "w" in fields[1]:
            continue  # not the runtime's, or writable (its data: paging that out would mean swap)
        start, end = (int(v, 16) for v in fields[0].split("-"))
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += end - start
    return advised


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
