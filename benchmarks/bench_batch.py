"""A folder of photos through rembg's `rembg p` and through `bgremove batch`, in one run, on the same
folder: images/s and peak memory, and the ratio to rembg.

Contenders (each a fresh process on the same folder, one after another; outputs into new folders):
- ``rembg p -m u2netp IN OUT`` (rembg 2.0.86, ``U2NET_HOME=models/``: the same model file, offline).
  rembg's `p` command is loaded from its own module, ``rembg/commands/p_command.py``, and run with
  its own click parsing: its package's ``__init__`` imports every command, and the server's
  (fastapi, uvicorn, aiohttp, gradio's stack) is not installed here; `p` uses none of it, and its
  memory would only have made rembg's figure larger;
- ``bgremove batch IN OUT --workers 1`` and ``--workers 2``: the service's pipeline in process,
  with its default edge matting, then with ``-s EDGE_MATTING=plain`` (the mask resized as rembg's is:
  the same work as rembg's, at a better SAD, 38.1 against 41.0);
- ``bgremove batch IN OUT --server URL --concurrency 2``: the same batch against a local gunicorn
  (``config/gunicorn.conf.py``, the default settings: one inference at a time, a queue of 8),
  started before and warmed up (its boot is not timed); its memory is the server's process tree's,
  plus the client's.

images/s: photos / the command's wall time, from its start to its exit (its imports and the model's
loading included: what a user waits for). Peak memory, sampled every 20 ms over the process tree
(workers included): RSS summed (a page shared by a pool's processes counts in each: an upper bound)
and PSS (each shared page divided among the processes sharing it: the tree's real footprint).

Usage: python benchmarks/bench_batch.py [--copies 3] [--keep DIR]
The folder is the fixture photos (tests/data/fixtures/images, 0.2-1.5 MP) copied --copies times.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tests.serverkit import fixture_images, running_server  # noqa: E402

BGREMOVE = Path(sys.executable).parent / "bgremove"
# rembg's `p` command, as `rembg p ARGS` runs it, without importing the other commands' modules
REMBG_P = """
import importlib.util, pathlib, sys, types
import rembg
folder = pathlib.Path(rembg.__file__).parent / "commands"
package = types.ModuleType("rembg.commands")
package.__path__ = [str(folder)]
sys.modules["rembg.commands"] = package
spec = importlib.util.spec_from_file_location("rembg.commands.p_command", folder / "p_command.py")
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module.p_command.main(sys.argv[1:], prog_name="rembg p")
"""


def tree_mb(pid: int) -> tuple[float, float]:
    """The process tree's RSS and PSS (proportional: a page shared by n processes counts 1/n in each)."""
    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    rss = pss = 0
    for proc in procs:
        try:
            full = proc.memory_full_info()
            rss += full.rss
            pss += getattr(full, "pss", full.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return rss / 2**20, pss / 2**20


def run(command: list[str], env: dict[str, str], also: int | None = None) -> tuple[float, tuple, tuple, str]:
    """``command`` to its end: wall seconds, its tree's peak (RSS, PSS), the peaks of ``also``'s tree (a
    server) sampled alongside, and its stderr's tail."""
    peak, also_peak = [0.0, 0.0], [0.0, 0.0]
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for into, pid in ((peak, proc.pid), (also_peak, also)):
                if pid is not None:
                    rss, pss = tree_mb(pid)
                    into[0], into[1] = max(into[0], rss), max(into[1], pss)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    if proc.returncode not in (0,):
        raise RuntimeError(f"{command[:3]} exited {proc.returncode}: {stderr.decode()[-2000:]}")
    return seconds, tuple(peak), tuple(also_peak), stderr.decode()[-500:]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=3, help="how many times the fixture photos are copied in")
    ap.add_argument("--keep", type=Path, help="keep the folders here (default: a temporary folder, removed)")
    args = ap.parse_args()
    if not BGREMOVE.is_file():
        sys.exit(f"{BGREMOVE}: not installed (pip install -e .)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    photos = work / "in"
    photos.mkdir(parents=True, exist_ok=True)
    for copy in range(args.copies):
        for path in fixture_images():
            shutil.copyfile(path, photos / f"{path.stem}-{copy}{path.suffix}")
    count = len(list(photos.iterdir()))
    env = {**os.environ, "U2NET_HOME": str(ROOT / "models"),
           "XDG_CONFIG_HOME": str(work / "no-config")}  # no user's settings file
    print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores available; load average before: "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{count} photos ({args.copies} x the {len(fixture_images())} fixture photos, 0.2-1.5 MP), PNG out\n")

    results: dict[str, tuple[float, float, float]] = {}  # images/s, peak RSS, peak PSS
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    rows = [
        ("rembg p (u2netp)", [sys.executable, "-c", REMBG_P, "-m", "u2netp", str(photos), str(out / "rembg")]),
        ("bgremove batch, 1 worker", [str(BGREMOVE), "batch", str(photos), str(out / "w1"), "--workers", "1",
                                      "--no-progress"]),
        ("bgremove batch, 2 workers", [str(BGREMOVE), "batch", str(photos), str(out / "w2"), "--workers", "2",
                                       "--no-progress"]),
        # rembg's own edge (the map resized plainly; mean SAD 38.1 against rembg's 41.0 on the AM-2k animals)
        ("bgremove batch, 1 worker, plain", [str(BGREMOVE), "batch", str(photos), str(out / "p1"), "--workers", "1",
                                             "--no-progress", "-s", "EDGE_MATTING=plain"]),
        ("bgremove batch, 2 workers, plain", [str(BGREMOVE), "batch", str(photos), str(out / "p2"), "--workers", "2",
                                              "--no-progress", "-s", "EDGE_MATTING=plain"]),
    ]
    for label, command in rows:
        seconds, (rss, pss), _, _ = run(command, env)
        results[label] = (count / seconds, rss, pss)
        print(f"{label:<34} {count / seconds:6.2f} images/s  peak RSS {rss:5.0f} MB, PSS {pss:5.0f} MB "
              f"({seconds:.1f} s)", flush=True)
    with running_server(log_dir=work) as server:  # booted and warmed up before the clock starts
        label = "bgremove batch --server (gunicorn)"
        seconds, client, served, _ = run(
            [str(BGREMOVE), "batch", str(photos), str(out / "server"), "--server", server.url, "--concurrency", "2",
             "--no-progress"], env, also=server.process.pid)
        results[label] = (count / seconds, client[0] + served[0], client[1] + served[1])
        print(f"{label:<34} {count / seconds:6.2f} images/s  peak RSS {client[0] + served[0]:5.0f} MB, PSS "
              f"{client[1] + served[1]:5.0f} MB ({seconds:.1f} s; server {served[0]:.0f} MB RSS + client "
              f"{client[0]:.0f} MB)", flush=True)
    for name in ("rembg", "w1", "w2", "p1", "p2", "server"):
        made = len(list((out / name).rglob("*.png")))
        assert made == count, f"{name}: {made} outputs for {count} photos"

    rate, rss, pss = results["rembg p (u2netp)"]
    print(f"\n{'':<34} {'images/s':>9} {'x rembg':>8} {'peak RSS':>9} {'x rembg':>8} {'peak PSS':>9} {'x rembg':>8}")
    for label, (r, m, q) in results.items():
        print(f"{label:<34} {r:9.2f} {r / rate:8.2f} {m:6.0f} MB {m / rss:8.2f} {q:6.0f} MB {q / pss:8.2f}")
    print("\nRSS: summed over the process tree (a pool's shared pages counted in each process); PSS: each "
          "shared page divided among its processes (the tree's real footprint). The goal: an in-process "
          "batch at >= 1.5x rembg's images/s and <= 0.5x its peak memory. 'plain': EDGE_MATTING=plain, the "
          "mask resized as rembg resizes it (mean SAD 38.1 against rembg's 41.0; the default's edge matting: 26.8).")
    for label in ("bgremove batch, 1 worker", "bgremove batch, 2 workers", "bgremove batch, 1 worker, plain",
                  "bgremove batch, 2 workers, plain"):
        r, m, q = results[label]
        print(f"  {label}: {r / rate:.2f}x images/s, {m / rss:.2f}x RSS, {q / pss:.2f}x PSS")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
