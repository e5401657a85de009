"""Our pipeline against rembg on the same model, same images, same process, same run.

Ours: decode -> mask (ONNX adapter) -> cut out -> encode PNG, exactly what
/api/bg/remove does minus HTTP: by default with the edge matting (more work than rembg's, for a
better cut-out), and with ``EDGE_MATTING=plain`` (the map resized as rembg resizes it: its work). rembg: ``remove(data, session=new_session("u2netp"))``
with ``U2NET_HOME=models/`` so it finds the same file offline. Prints per-image and
median latency, the ratio, output size, and peak RSS during each phase (sampled
every 5 ms; phases run one after another in this process, ours first). The latencies then
come from an interleaved pass: every image through the three in a shuffled order, round after
round (--rounds), so that a busy machine slows all three alike; the load average is printed.
The process runs under the lean mode's malloc tunables, as the server does
(app.ops.tuning.exec_with_malloc_tunables; GLIBC_TUNABLES=glibc.malloc.hugetlb=0 runs without).
Usage: python benchmarks/bench_pipeline.py [--repeat 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("U2NET_HOME", str(ROOT / "models"))

import psutil  # noqa: E402

from app.ops import tuning  # noqa: E402
from app.pipeline import IMAGE, Job  # noqa: E402
from app.pipeline.options import RemoveOptions  # noqa: E402
from app.pipeline.runtime import build_runtime  # noqa: E402
from config import Settings  # noqa: E402

FIXTURES = ROOT / "tests" / "data" / "fixtures" / "images"


class PeakRss:
    def __init__(self):
        self.proc = psutil.Process()

    def __enter__(self):
        self.start = self.proc.memory_info().rss / 2**20
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss / 2**20)
            self._stop.wait(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def time_each(fn, images, repeat):
    """Median seconds per image (after one warm-up call each) and output sizes."""
    per_image, sizes = {}, {}
    for path in images:
        data = path.read_bytes()
        out = fn(data)
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(data)
            runs.append(time.perf_counter() - t0)
        per_image[path.name] = statistics.median(runs)
        sizes[path.name] = len(out)
    return per_image, sizes


def ours(**env: str):
    """The service's own pipeline (app.pipeline.Job), as a request to /api/bg/remove runs it, without
    the cache; ``env``: settings over the defaults (ONNX_MEMORY_MODE, ONNX_PRECISION)."""
    runtime = build_runtime(Settings.from_env({**env, "CACHE_BACKEND": "none", "WARMUP": "false"}))
    print(f"  {env or 'defaults'}: {runtime.segmenter.info.model_id}, {runtime.segmenter.runtime()}")
    options = RemoveOptions(use_cache=False)

    def run(data: bytes) -> bytes:
        return Job(runtime, options, data).run().images[IMAGE]

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the interleaved pass the latencies come from")
    args = parser.parse_args()
    tuning.exec_with_malloc_tunables(Settings.from_env({}))  # as config/gunicorn.conf.py does
    images = sorted(FIXTURES.glob("*.jpg"))
    def rembg():
        from rembg import new_session, remove

        session = new_session("u2netp")
        return lambda d: remove(d, session=session)

    makers = {"ours (default)": ours,  # lean, ONNX_PRECISION=auto: int8 where the CPU has VNNI; the edge matting
              "ours (plain)": lambda: ours(EDGE_MATTING="plain"),  # rembg's own work: the map resized, no matting
              "ours (fp32 lean)": lambda: ours(ONNX_PRECISION="fp32"),
              "ours (fp32 fast)": lambda: ours(ONNX_PRECISION="fp32", ONNX_MEMORY_MODE="fast"),
              "rembg 2.0.86": rembg}
    ours_rows = 4
    phases = {}
    for label, make in makers.items():  # one at a time, each dropped after: the peak RSS is its own
        gc.collect()
        if label.startswith("rembg"):
            import rembg as _  # noqa: F401  imported before its phase, as ours are (its imports are not its peak)
        with PeakRss() as rss:
            fn = make()
            phases[label] = (*time_each(fn, images, args.repeat), rss)
        del fn
    if args.rounds:
        fns = {label: make() for label, make in makers.items()}
        interleaved = {label: {p.name: [] for p in images} for label in fns}
        for _ in range(args.rounds):
            for path in images:
                data = path.read_bytes()
                for label in random.sample(list(fns), len(fns)):
                    t0 = time.perf_counter()
                    fns[label](data)
                    interleaved[label][path.name].append(time.perf_counter() - t0)
        for label, runs in interleaved.items():
            phases[label] = ({name: statistics.median(r) for name, r in runs.items()}, *phases[label][1:])

    names = list(phases)
    ref = phases["rembg 2.0.86"][0]
    runs = f"{args.rounds} interleaved rounds" if args.rounds else f"{args.repeat} runs"
    print(f"Pipeline latency, median of {runs} per image (ms), {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}; ratio = ours / rembg")
    header = f"{'image':18}" + "".join(f"{n:>22}" for n in names) + "".join(f"{'ratio ' + n.split(' (')[1][:-1]:>22}" for n in names[:ours_rows])
    print(header)
    for path in images:
        row = f"{path.name:18}" + "".join(f"{phases[n][0][path.name] * 1000:22.0f}" for n in names)
        row += "".join(f"{phases[n][0][path.name] / ref[path.name]:22.2f}" for n in names[:ours_rows])
        print(row)
    medians = {n: statistics.median(phases[n][0].values()) for n in names}
    print(f"{'median':18}" + "".join(f"{medians[n] * 1000:22.0f}" for n in names)
          + "".join(f"{medians[n] / medians['rembg 2.0.86']:22.2f}" for n in names[:ours_rows]))
    print(f"{'PNG bytes (total)':18}" + "".join(f"{sum(phases[n][1].values()):22,}" for n in names))
    print(f"{'peak RSS MB':18}" + "".join(f"{phases[n][2].peak:22.0f}" for n in names))
    print(f"{'  + over start MB':18}" + "".join(f"{phases[n][2].peak - phases[n][2].start:22.0f}" for n in names))


if __name__ == "__main__":
    main()
