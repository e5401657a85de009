"""InSPyReNet: our adapter against the reference path, on the same device, weights and inputs, in one run.

Inputs are 1024x1024 photos (the fixtures, resized). "ours" is ``InSPyReNetSegmenter.mask``
end to end: resize, normalise on the device, forward (micro-batched), align_corners resize
back, uint8. The reference is transparent-background's network called the way its
``Remover.process`` calls it: PIL resize + numpy normalise, ``torch.no_grad`` forward,
``F.interpolate(align_corners=True)``, x255 uint8. Weights are random in the official
layout unless --checkpoint is given (speed does not depend on the values).

Reported: p50/p95 latency of one request at a time (fp32, and fp16 on CUDA), then
throughput in requests/s with 1, 4 and 8 concurrent clients: ours with micro-batching
(MAX_BATCH 8), ours without (MAX_BATCH 1), and the reference.

Usage: python benchmarks/bench_inspyrenet.py [--size 384] [--device auto] [--requests 4] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from adapters import inspyrenet  # noqa: E402
from app.ops import tuning  # noqa: E402
from tests.serverkit import fixture_images  # noqa: E402
from config import Settings  # noqa: E402


def photos(side: int = 1024) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)) for p in fixture_images()]


def reference_path(net: torch.nn.Module, device: torch.device, size: int):
    from transparent_background.utils import normalize, static_resize, tonumpy, totensor

    def transform(img):
        return totensor()(normalize(mean=list(inspyrenet.MEAN), std=list(inspyrenet.STD))(tonumpy()(static_resize([size, size])(img))))

    def remove(rgb: np.ndarray) -> np.ndarray:
        x = transform(Image.fromarray(rgb)).unsqueeze(0).to(device)
        with torch.no_grad():
            pred = net(x)
        pred = F.interpolate(pred, rgb.shape[:2], mode="bilinear", align_corners=True)
        return (pred.data.cpu().numpy().squeeze() * 255).astype(np.uint8)

    return remove


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency(fn, images, runs: int, device) -> tuple[float, float]:
    fn(images[0])  # warm
    times = []
    for i in range(runs):
        sync(device)
        t0 = time.perf_counter()
        fn(images[i % len(images)])
        sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]


def throughput(fn, images, clients: int, per_client: int) -> float:
    start = threading.Barrier(clients + 1)

    def client(offset: int) -> None:
        start.wait()
        for k in range(per_client):
            fn(images[(offset + k) % len(images)])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return clients * per_client / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=None, help="network input size (default: 1024 on CUDA, 384 on CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--requests", type=int, default=None, help="requests per client in the throughput runs")
    parser.add_argument("--runs", type=int, default=None, help="latency samples")
    parser.add_argument("--checkpoint", type=Path, default=None)
    args = parser.parse_args()

    device = inspyrenet.pick_device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (1024 if cuda else 384)
    per_client = args.requests or (8 if cuda else 2)
    runs = args.runs or (30 if cuda else 6)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"InSPyReNet Swin-B at {size}x{size} on {device} ({name}); inputs 1024x1024 photos; torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            torch.manual_seed(0)
            ckpt = Path(tmp) / "random.pth"
            torch.save(inspyrenet.build_network((size, size)).state_dict(), ckpt)
        state = inspyrenet.read_checkpoint(ckpt)
        ref_net = inspyrenet.InSPyReNet_SwinB(depth=64, pretrained=False, base_size=[size, size], threshold=None)
        ref_net.load_state_dict(state, strict=True)
        ref_net.eval().to(device)
        reference = reference_path(ref_net, device, size)

        def ours(max_batch: int, precision: str):
            env = {"SEGMENTER": "inspyrenet", "MODEL_PATH": str(ckpt), "TARGET_SIZE": str(size), "DEVICE": str(device),
                   "MAX_BATCH": str(max_batch), "PRECISION": precision, "BATCH_WINDOW_MS": "5"}
            settings = Settings.from_env(env)
            tuning.configure(settings)  # the service's thread pools, as create_app sets them
            return inspyrenet.load(settings)

        images = photos()
        fp32 = ours(8, "fp32")
        print(f"\nlatency, one request at a time, {runs} runs (ms)")
        print(f"{'path':34s} {'p50':>8s} {'p95':>8s}")
        rows = [("reference (Remover's calls), fp32", reference), ("ours, fp32", fp32.mask)]
        fp16 = None
        if cuda:
            fp16 = ours(8, "fp16")
            rows.append(("ours, fp16 autocast", fp16.mask))
        p50s = {}
        for label, fn in rows:
            p50, p95 = latency(fn, images, runs, device)
            p50s[label] = p50
            print(f"{label:34s} {p50:8.1f} {p95:8.1f}")
        base = p50s["reference (Remover's calls), fp32"]
        for label, p50 in p50s.items():
            print(f"  reference p50 / {label} p50 = {base / p50:.2f}")

        fast = fp16 or fp32
        unbatched = ours(1, "fp16" if cuda else "fp32")
        print(f"\nthroughput, requests/s ({per_client} requests per client)")
        print(f"{'clients':>7s} {'reference':>10s} {'ours, no batching':>18s} {'ours, batching':>15s} {'batching/ref':>13s}")
        for clients in (1, 4, 8):
            ref_rps = throughput(reference, images, clients, per_client)
            plain_rps = throughput(unbatched.mask, images, clients, per_client)
            batched_rps = throughput(fast.mask, images, clients, per_client)
            print(f"{clients:7d} {ref_rps:10.2f} {plain_rps:18.2f} {batched_rps:15.2f} {batched_rps / ref_rps:12.2f}x")
        print(f"batching stats: {fast.batcher.stats.as_dict()}")


if __name__ == "__main__":
    main()
