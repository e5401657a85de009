"""What each output encoder holds while it writes a cut-out: peak RSS over the image itself, in MB
and in bytes a pixel, at 4, 8 and 12 MP, with and without alpha; each encode in a fresh process
under the 512 MB tier's malloc policy (app/ops/tuning.py), sampled every 2 ms.

These figures are ``imaging.ENCODER_BYTES_PER_PIXEL``: with ``MAX_ENCODE_MB`` they bound the
megapixels of a WebP/HEIC/AVIF output (a larger one is worked smaller and says so, X-Scaled-From).

Usage: python benchmarks/encode_memory.py [--formats png,jpeg,webp,heic,avif] [--megapixels 4,8,12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "fixtures" / "images" / "animal-1.jpg"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def measure(fmt: str, megapixels: float, alpha: bool) -> dict:
    """In this process: one encode of a cut-out of ``megapixels`` (4:3), its peak RSS over the image."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from PIL import Image

    from app.ops import tuning
    from app.pipeline.imaging import encode_image
    from config import Settings

    tuning.configure(Settings.from_env())
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = width * 3 // 4
    img = Image.open(FIXTURE).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    if alpha:  # a subject in the middle, a soft edge around it
        mask = np.zeros((height, width), np.uint8)
        mask[height // 6:-height // 6, width // 6:-width // 6] = 255
        img.putalpha(Image.fromarray(mask).resize((width // 8, height // 8)).resize((width, height), Image.Resampling.BILINEAR))
    tuning.trim()
    time.sleep(0.05)
    base = _rss_mb()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    data = encode_image(img, fmt, quality=90, png_compress_level=6)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    over = peak[0] - base
    return {"format": fmt, "alpha": alpha, "size": f"{width}x{height}", "megapixels": width * height / 1e6,
            "seconds": seconds, "over_mb": over, "bytes_per_pixel": over * 2**20 / (width * height),
            "file_mb": len(data) / 1e6}


def machine() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="png,jpeg,webp,heic,avif")
    parser.add_argument("--megapixels", default="4,8,12")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # fmt,megapixels,alpha: measure in this process
    args = parser.parse_args()
    if args.one:
        fmt, mp, alpha = args.one.split(",")
        print(json.dumps(measure(fmt, float(mp), alpha == "1")))
        return
    print(f"encoder memory over the image, {machine()}")
    print(f"{'format':6} {'alpha':5} {'size':>10} {'MP':>5} {'s':>6} {'MB over':>8} {'B/px':>6} {'file MB':>8}")
    for fmt in args.formats.split(","):
        for alpha in (True, False):
            if fmt == "jpeg" and alpha:
                continue
            for mp in (float(m) for m in args.megapixels.split(",")):
                out = subprocess.run([sys.executable, __file__, "--one", f"{fmt},{mp},{int(alpha)}"],
                                     capture_output=True, text=True, check=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"{r['format']:6} {str(r['alpha']):5} {r['size']:>10} {r['megapixels']:5.1f} {r['seconds']:6.2f} "
                      f"{r['over_mb']:8.0f} {r['bytes_per_pixel']:6.1f} {r['file_mb']:8.2f}")


if __name__ == "__main__":
    main()
