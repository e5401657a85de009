"""Which onnxruntime session options (and malloc policy) give low peak memory at good speed? Prints a table.

Each configuration runs in its own subprocess (peak RSS is per process, and glibc's tunables are
read at process start), all of them alive at once: after two warm-up images each, the fixture
images are sent to the configurations one image at a time in a shuffled order, round after
round, so that every configuration sees the same machine load. Each call is the ONNX adapter's
own ``mask`` (preprocess, session run, postprocess) under the options being compared.
Columns: median ms per image, its ratio to the first row (the old lean default), minor page
faults per image, the process's peak RSS, its RSS after the runs (all MB), and whether its
masks are byte-identical to the first row's.
Usage: python benchmarks/ort_options.py [--model PATH] [--rounds 5] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.ops.tuning import MALLOC_TUNABLES  # noqa: E402

# name: arena (True; "same": a shared arena with arena_extend_strategy kSameAsRequested; "shared": the
# process's arena with a first chunk of ``chunk_mb``, as ONNX_MEMORY_MODE=fast runs it), memory
# pattern, optimisation level, the lean malloc policy (app.ops.tuning.configure; ``serving``: then
# app.ops.tuning.after_boot once warmed up; ``mmap_threshold``, ``trim_threshold``: glibc's, set
# at start), glibc tunables, arena shrinkage after every run, thread spinning.
CONFIGS = {
    "lean, old (no THP)": dict(arena=False, pattern=False, level="extended", policy=True, tunables=""),
    "lean, new: + THP tunable": dict(arena=False, pattern=False, level="extended", policy=True, tunables=MALLOC_TUNABLES),
    "lean + THP, 2 MB mmap threshold": dict(arena=False, pattern=False, level="extended", policy=True,
                                             tunables=MALLOC_TUNABLES, mmap_threshold=2 << 20),
    "lean, serving policy (1 MiB after warm-up)": dict(arena=False, pattern=False, level="extended", policy=True,
                                                        tunables=MALLOC_TUNABLES, serving=True),
    "balanced, serving policy": dict(arena=False, pattern=False, level="all", policy=True, tunables=MALLOC_TUNABLES,
                                     serving=True),
    "lean without thread spinning": dict(arena=False, pattern=False, level="extended", policy=True, tunables="", spin=False),
    "extended + arena (kept)": dict(arena=True, pattern=False, level="extended", policy=False, tunables=""),
    "extended + same-as-requested": dict(arena="same", pattern=False, level="extended", policy=True, tunables=""),
    "  ... + shrinkage every run": dict(arena="same", pattern=False, level="extended", policy=True, tunables="", shrink=True),
    "extended + pattern + same + shrink": dict(arena="same", pattern=True, level="extended", policy=True, tunables="", shrink=True),
    "balanced: no arena, all": dict(arena=False, pattern=False, level="all", policy=True, tunables=""),
    "balanced + THP tunable": dict(arena=False, pattern=False, level="all", policy=True, tunables=MALLOC_TUNABLES),
    "fast: arena, no pattern, all": dict(arena=True, pattern=False, level="all", policy=False, tunables=""),
    "ort defaults (rembg's)": dict(arena=True, pattern=True, level="all", policy=False, tunables=""),
    # the int8 build runs at the 'all' level in every mode (adapters.onnx.session_options): its rows
    # (run with --model models/u2netp.int8.onnx --only int8 fast)
    "int8: as served (serving policy)": dict(arena=False, pattern=False, level="all", policy=True,
                                             tunables=MALLOC_TUNABLES, serving=True),
    "int8: serving policy + 64 MB trim threshold": dict(arena=False, pattern=False, level="all", policy=True,
                                                         tunables=MALLOC_TUNABLES, serving=True, trim_threshold=64 << 20),
    "int8: fast as served (shared arena, 128 MB chunk)": dict(arena="shared", chunk_mb=128, pattern=False, level="all",
                                                               policy=True, tunables=MALLOC_TUNABLES, serving=True),
    "int8: arena + serving policy": dict(arena=True, pattern=False, level="all", policy=True, tunables=MALLOC_TUNABLES,
                                         serving=True),
    "int8: all + same-as-requested": dict(arena="same", pattern=False, level="all", policy=True, tunables=""),
    "int8: all + 16 MB mmap threshold": dict(arena=False, pattern=False, level="all", policy=True,
                                              tunables=MALLOC_TUNABLES, mmap_threshold=16 << 20),
    "int8: all + 64 MB mmap threshold": dict(arena=False, pattern=False, level="all", policy=True,
                                              tunables=MALLOC_TUNABLES, mmap_threshold=64 << 20),
}

CHILD = r"""
import glob, hashlib, importlib.util, json, resource, sys, time
import numpy as np, onnxruntime as ort
ROOT, MODEL, FIXTURES, THREADS, C = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
sys.path.insert(0, ROOT)
from adapters.base import ModelInfo
from adapters.onnx import PROFILES, OnnxSegmenter
from app.pipeline import decode
from config import Settings
# app/ops/tuning.py by path: importing the app package would add the whole app (~30 MB) to the RSS measured here
spec = importlib.util.spec_from_file_location("tuning", ROOT + "/app/ops/tuning.py")
tuning = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tuning)
if C["policy"]:
    tuning.configure(Settings())  # the malloc policy of the lean and balanced modes, as at boot
if C.get("mmap_threshold"):
    tuning._libc.mallopt(tuning.M_MMAP_THRESHOLD, C["mmap_threshold"])
if C.get("trim_threshold"):
    tuning._libc.mallopt(-1, C["trim_threshold"])  # M_TRIM_THRESHOLD
so = ort.SessionOptions()
so.intra_op_num_threads = THREADS
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.enable_cpu_mem_arena = bool(C["arena"])
so.enable_mem_pattern = C["pattern"]
so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[C["level"]]
if not C.get("spin", True):
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
if C["arena"] == "shared":  # ONNX_MEMORY_MODE=fast as served: the process's arena, one first chunk
    so.enable_cpu_mem_arena = False
    cfg = ort.OrtArenaCfg({"arena_extend_strategy": 0, "initial_chunk_size_bytes": C["chunk_mb"] << 20})
    ort.create_and_register_allocator(ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT), cfg)
    so.add_session_config_entry("session.use_env_allocators", "1")
if C["arena"] == "same":
    cfg = ort.OrtArenaCfg({"arena_extend_strategy": 1})
    ort.create_and_register_allocator(ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT), cfg)
    so.add_session_config_entry("session.use_env_allocators", "1")
run_options = None
if C.get("shrink"):
    run_options = ort.RunOptions()
    run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
sess = ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])
seg = OnnxSegmenter(sess, PROFILES["u2net"], ModelInfo("onnx", "m", (320, 320), 0, "cpu", "", 0))
settings = Settings()
images = [decode(open(p, "rb").read(), settings).rgb for p in sorted(glob.glob(FIXTURES + "/*.jpg"))]
def mask(rgb):
    prediction = sess.run([seg._output], {seg._input: seg.preprocess(rgb)}, run_options)[0]
    return seg.postprocess(prediction, *rgb.shape[:2])
for rgb in images[:2]:
    mask(rgb)
if C.get("serving"):
    tuning.after_boot(Settings())  # the serving policy: raised once the model is up, as build_runtime does
print(json.dumps({"images": len(images)}), flush=True)
for line in sys.stdin:
    if line.strip() == "quit":
        break
    i = int(line)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    m = mask(images[i])
    ms = (time.perf_counter() - t) * 1000
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"ms": ms, "faults": faults, "digest": hashlib.sha1(m.tobytes()).hexdigest()}), flush=True)
rss = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
print(json.dumps({"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss": rss}), flush=True)
"""


def start(cfg: dict, args) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if cfg["tunables"]:
        env["GLIBC_TUNABLES"] = cfg["tunables"]
    return subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), args.model, args.fixtures, str(args.threads),
                             json.dumps(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def ask(proc: subprocess.Popen, line: str) -> dict:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "models" / "u2netp.onnx"))
    parser.add_argument("--fixtures", default=str(ROOT / "tests" / "data" / "fixtures" / "images"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", metavar="NAME", help="configurations whose names start with NAME (the first row stays)")
    args = parser.parse_args()
    names = list(CONFIGS)
    if args.only:
        names = [names[0]] + [n for n in names[1:] if any(n.startswith(o) for o in args.only)]
    procs, count = {}, 0
    for name in names:  # started one after another: session creation is not what is measured
        procs[name] = start(CONFIGS[name], args)
        count = json.loads(procs[name].stdout.readline())["images"]
    times = {n: [] for n in names}
    faults = {n: [] for n in names}
    digests = {n: {} for n in names}
    for _ in range(args.rounds):
        for i in range(count):
            order = names[:]
            random.shuffle(order)
            for name in order:
                r = ask(procs[name], str(i))
                times[name].append(r["ms"])
                faults[name].append(r["faults"])
                digests[name][i] = r["digest"]
                time.sleep(0.02)  # the previous process's spinning threads settle
    load = os.getloadavg()[0]
    print(f"onnxruntime session options on {Path(args.model).name}, {args.threads} threads, "
          f"{args.rounds} rounds x {count} images, interleaved; load average at the end {load:.1f} "
          f"on {os.cpu_count()} CPUs{' (busy machine: compare the ratios)' if load > 0.5 * os.cpu_count() else ''}")
    print(f"{'configuration':36} {'median ms':>9} {'ratio':>6} {'faults/img':>10} {'peak RSS MB':>11} "
          f"{'RSS after MB':>12}  masks")
    reference = statistics.median(times[names[0]])
    for name in names:
        end = ask(procs[name], "quit")
        procs[name].wait()
        median = statistics.median(times[name])
        same = "identical" if digests[name] == digests[names[0]] else "differ"
        print(f"{name:36} {median:9.0f} {median / reference:6.2f} {statistics.median(faults[name]):10.0f} "
              f"{end['peak']:11.0f} {end['rss']:12.0f}  {same}")


if __name__ == "__main__":
    main()
