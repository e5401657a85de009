"""Which onnxruntime session options give low peak memory at good speed? Prints a table.

Each configuration runs in a fresh subprocess (peak RSS is per process): session
creation, then the fixture images through the ONNX adapter's own preprocess, with
the options under test. Columns: median inference ms, peak RSS of the process (MB),
RSS after the runs (MB). Usage: python benchmarks/ort_options.py [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {
    # name: (arena, mem_pattern, optimisation level, shared arena "same as requested", spinning)
    "ort defaults (rembg's)": (True, True, "all", False, True),
    "fast: arena, no pattern, all": (True, False, "all", False, True),
    "shared arena, same-as-requested": (True, False, "all", True, True),
    "balanced: no arena, all": (False, False, "all", False, True),
    "lean: no arena, extended": (False, False, "extended", False, True),
    "lean without thread spinning": (False, False, "extended", False, False),
    "no arena, basic": (False, False, "basic", False, True),
}

CHILD = r"""
import json, resource, sys, time, glob
import numpy as np, onnxruntime as ort
from PIL import Image
sys.path.insert(0, ROOT)
import importlib.util
from adapters.onnx import OnnxSegmenter, PROFILES
from config import Settings
# app/ops/process.py by path: importing the app package would add the whole app (~30 MB) to the RSS measured here
spec = importlib.util.spec_from_file_location("process", ROOT + "/app/ops/process.py")
process = importlib.util.module_from_spec(spec)
spec.loader.exec_module(process)
from adapters.base import ModelInfo
arena, pattern, level, shared, spin = CFG
if not arena:
    process.configure(Settings())  # the malloc policy of the lean and balanced modes, as at boot
so = ort.SessionOptions()
so.intra_op_num_threads = THREADS
so.inter_op_num_threads = 1
so.enable_cpu_mem_arena = arena
so.enable_mem_pattern = pattern
so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
if not spin:
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
if shared:
    cfg = ort.OrtArenaCfg({"arena_extend_strategy": 1})
    ort.create_and_register_allocator(ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT), cfg)
    so.add_session_config_entry("session.use_env_allocators", "1")
sess = ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])
seg = OnnxSegmenter(sess, PROFILES["u2net"], ModelInfo("onnx", "m", (320, 320), 0, "cpu", "", 0))
images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(glob.glob(FIXTURES + "/*.jpg"))]
seg.mask(images[0])
times = []
for _ in range(2):
    for rgb in images:
        t = time.perf_counter(); seg.infer(seg.preprocess(rgb)); times.append(time.perf_counter() - t)
rss = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
print(json.dumps({"ms": float(np.median(times)) * 1000, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss": rss}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "models" / "u2netp.onnx"))
    parser.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "fixtures" / "images"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    print(f"onnxruntime session options on {Path(args.model).name}, {args.threads} threads, 16 runs each")
    print(f"{'configuration':34} {'median ms':>10} {'peak RSS MB':>12} {'RSS after MB':>13}")
    for name, cfg in CONFIGS.items():
        code = (CHILD.replace("ROOT", repr(str(ROOT))).replace("CFG", repr(cfg)).replace("THREADS", str(args.threads))
                .replace("MODEL", repr(args.model)).replace("FIXTURES", repr(args.fixtures)))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:34} {r['ms']:10.0f} {r['peak']:12.0f} {r['rss']:13.0f}")


if __name__ == "__main__":
    main()
