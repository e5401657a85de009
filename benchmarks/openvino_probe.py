"""Does OpenVINO run u2netp faster than onnxruntime here, and with the same masks? (ONNX_RUNTIME=auto
runs it where the CPU has VNNI: the int8 build, the rest in fp32.) It prints, for
onnxruntime and OpenVINO on the same model files (fp32 and the pinned int8 build), the network's
median ms on one 320x320 tensor (2 threads), the process's RSS before and after and its peak, and
how far each OpenVINO mask is from onnxruntime's on the 13 AM-2k photos (the service's own
preprocess and postprocess around both: mean |difference| in 8-bit levels, the share of pixels
that cross 128, and the mean SAD against the true mattes, as ``make quality`` scores it, without
the edge matting). Each configuration runs in a fresh process, so that its RSS is its own.

On a CPU with AMX (Intel Xeon 4th generation and later) OpenVINO left to itself runs bf16 and its
int8 kernels use AMX; elsewhere it runs fp32 and VNNI int8. The service asks for fp32 (hint f32)
but for the int8 build's quantized convolutions. Activations are kept between runs here
(``release=False``, as ONNX_MEMORY_MODE=fast); lean's hand-back is measured by the servers
(bench_servers.py).

Usage: python benchmarks/openvino_probe.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = [  # (runtime, model file, OpenVINO's inference precision hint: "" its own choice)
    ("onnxruntime lean", "u2netp.int8.onnx", None),
    ("onnxruntime fast", "u2netp.int8.onnx", None),
    ("openvino", "u2netp.int8.onnx", "f32"),  # the service's (ONNX_RUNTIME=auto on a CPU with VNNI)
    ("openvino", "u2netp.int8.onnx", ""),  # the rest in bf16 where the CPU has AMX
    ("onnxruntime lean", "u2netp.onnx", None),
    ("onnxruntime fast", "u2netp.onnx", None),
    ("openvino", "u2netp.onnx", ""),  # its own choice: bf16 where the CPU has AMX
    ("openvino", "u2netp.onnx", "f32"),
]


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def child(runtime: str, model: str, hint: str | None) -> dict:
    import numpy as np

    from app.quality import metrics
    from app.quality.score import load_truth, score

    path = ROOT / "models" / model
    start = _status("VmRSS")
    from adapters.onnx import OpenVinoSession, u2net_segmenter

    if runtime == "openvino":
        session = OpenVinoSession(path, 2, hint, release=False)
    else:
        from adapters.onnx import session_options
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), session_options(2, runtime.split()[1], "int8" in model),
                                       providers=["CPUExecutionProvider"])
    segmenter = u2net_segmenter(session)  # the service's preprocess, run and postprocess
    infer = segmenter.infer
    from PIL import Image

    tensor = np.random.default_rng(0).random((1, 3, 320, 320), np.float32)
    for _ in range(3):
        infer(tensor)
    times = []
    for _ in range(12):
        t0 = time.perf_counter()
        infer(tensor)
        times.append((time.perf_counter() - t0) * 1000)
    after = _status("VmRSS")
    masks, sads = {}, []
    am2k = ROOT / "tests" / "data" / "quality" / "am2k"
    for photo in sorted(am2k.glob("*.jpg")):
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        mask = segmenter.postprocess(infer(segmenter.preprocess(rgb)), *rgb.shape[:2])
        masks[photo.stem] = mask
        sads.append(score(mask, metrics.Truth(load_truth(photo)))["sad"])
    out = Path("/tmp") / f"probe-{runtime.replace(' ', '-')}-{model}-{hint or 'own'}.npz"
    np.savez_compressed(out, **masks)
    return {"ms": statistics.median(times), "start": start, "after": after, "peak": _status("VmHWM"),
            "sad": statistics.mean(sads), "masks": str(out)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], {"-": None, "own": ""}.get(sys.argv[4], sys.argv[4]))))
        return
    import numpy as np

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    print(f"CPU: {cpu}; AVX-512 {'avx512f' in flags}, VNNI {'avx512_vnni' in flags or 'avx_vnni' in flags}, "
          f"AMX {'amx_int8' in flags}")
    results = {}
    for runtime, model, hint in CONFIGS:
        proc = subprocess.run([sys.executable, __file__, "--child", runtime, model, {None: "-", "": "own"}.get(hint, hint)],
                              capture_output=True, text=True, check=True, cwd=ROOT)
        results[(runtime, model, hint)] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("\n| runtime | model | precision hint | ms | RSS before / after MB | peak MB | mean SAD (no matting) | "
          "mean abs diff to onnxruntime (levels) | pixels across 128 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for (runtime, model, hint), r in results.items():
        ref = np.load(results[("onnxruntime lean", model, None)]["masks"])
        got = np.load(r["masks"])
        diff = statistics.mean(float(np.abs(got[k].astype(int) - ref[k].astype(int)).mean()) for k in ref.files)
        cross = statistics.mean(float(((got[k] >= 128) != (ref[k] >= 128)).mean()) for k in ref.files)
        shown = {None: "—", "": "its own"}.get(hint, hint)
        print(f"| {runtime} | {model} | {shown} | {r['ms']:.1f} | {r['start']:.0f} / {r['after']:.0f} | "
              f"{r['peak']:.0f} | {r['sad']:.2f} | {diff:.2f} | {cross:.3%} |")


if __name__ == "__main__":
    main()
