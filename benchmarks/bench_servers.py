"""Our server against rembg's, as a user sees them: the same photos, over HTTP, one request at a time
and with 4 clients at once, in one run.

Ours is the service as deployed (``config/serve``: the nginx edge in front of gunicorn) with its
default settings; rembg's is ``rembg s --no-ui`` (FastAPI on uvicorn) asked for ``model=u2netp``,
its default output (a PNG cut-out, no alpha matting), the same u2netp file (``models/u2netp.onnx``).
Printed: the CPU (model, cores, AVX2 / AVX-512 / VNNI), the precision and network ours chose and
why (/api/bg/status), median and p95 latency, the ratio to rembg, peak RSS of each server's process
tree, and where ours spends a request (its ``Server-Timing``: the model's run against the rest);
then the network's multiply-accumulates at its input size, this machine's float32 matrix-multiply
rate (numpy's sgemm), and the model's own run as a percentage of the floor those two give.

Usage: python benchmarks/bench_servers.py [--rounds 2] [--clients 4] [--photos fixtures|1mp]
Needs the dev extra (rembg's server: fastapi, uvicorn, aiohttp, asyncer, python-multipart).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import requests  # noqa: E402

from tests.serverkit import (  # noqa: E402
    RssSampler, Server, concurrent_clients, fixture_images, free_port, running_server,
)

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "u2netp.onnx"


def cpu() -> dict[str, object]:
    text = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {"model": model, "cores": len(os.sched_getaffinity(0)),
            "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "vnni": bool({"avx512_vnni", "avx_vnni"} & flags)}


def sgemm_gflops(n: int = 2048, repeat: int = 5) -> float:
    """numpy's float32 matrix multiply on this machine (all its threads), best of ``repeat``."""
    a = np.random.default_rng(0).random((n, n), np.float32)
    b = np.random.default_rng(1).random((n, n), np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def network_gmacs(path: Path, side: int = 320) -> float:
    """The multiply-accumulates of the network's convolutions at ``side`` x ``side`` (shape inference)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    graph_input = model.graph.input[0]
    for dim, value in zip(graph_input.type.tensor_type.shape.dim, (1, 3, side, side)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        w = weights.get(node.input[1])
        out = shapes.get(node.output[0]) if node.op_type == "Conv" else shapes.get(node.input[0])
        if not w or not out:
            continue
        out_elems = int(np.prod(out))
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv":  # w: (out_ch, in_ch/groups, kh, kw)
            macs += out_elems * w[1] * w[2] * w[3]
        else:  # per input element: w: (in_ch, out_ch/groups, kh, kw)
            macs += out_elems * w[1] * w[2] * w[3] // max(1, groups) * groups
    return macs / 1e9


def model_ms(repeat: int = 10) -> tuple[float, str]:
    """Our model's own run (the default settings' segmenter) on a photo at its input size, median."""
    from adapters import load_segmenter
    from config import Settings

    settings = Settings.from_env({**os.environ, "LOG_LEVEL": "warning"})
    segmenter = load_segmenter(settings)
    side = segmenter.info.input_size[0]
    rgb = np.random.default_rng(2).integers(0, 255, (side, side, 3), np.uint8)
    segmenter.mask(rgb)
    times = [_timed(lambda: segmenter.mask(rgb)) for _ in range(repeat)]
    return statistics.median(times) * 1000, segmenter.info.model_id


def post(url: str, path: Path, data: dict) -> requests.Response:
    with open(path, "rb") as f:
        resp = requests.post(url, files={"file": (path.name, f, "image/jpeg")}, data=data, timeout=300)
    resp.raise_for_status()
    return resp


def sequential(url: str, paths: list[Path], data: dict, rounds: int) -> tuple[list[float], list[dict[str, float]]]:
    post(url, paths[0], data)  # warm
    times, stages = [], []
    for _ in range(rounds):
        for path in paths:
            t0 = time.perf_counter()
            resp = post(url, path, data)
            times.append((time.perf_counter() - t0) * 1000)
            header = resp.headers.get("Server-Timing", "")
            stages.append({part.split(";dur=")[0]: float(part.split(";dur=")[1]) for part in header.split(", ") if ";dur=" in part})
    return times, stages


def concurrent(url: str, endpoint: str, paths: list[Path], data: dict, clients: int, rounds: int
               ) -> tuple[list[float], float]:
    """Latencies (ms) of ``clients`` sending every photo ``rounds`` times at once, and images/s."""
    t0 = time.perf_counter()
    results = concurrent_clients(url, clients, paths, rounds, endpoint, data)
    elapsed = time.perf_counter() - t0
    assert {status for status, _ in results} == {200}, results
    return [seconds * 1000 for _, seconds in results], len(results) / elapsed


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def rembg_server(home: Path):
    """``rembg s --no-ui`` on a free port, its models read from ``home`` (no download)."""
    port = free_port()
    script = ("import sys; from rembg.cli import main; "
              f"sys.argv = ['rembg', 's', '--host', '127.0.0.1', '--port', '{port}', '--no-ui']; main()")
    log = open(home / "rembg.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "U2NET_HOME": str(home)},
                            stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, port, home / "rembg.log")
    url = server.url
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/api", timeout=2)
            return server
        except requests.RequestException:
            if proc.poll() is not None:
                raise SystemExit("rembg's server did not start: " + (home / "rembg.log").read_text()[-2000:])
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("rembg's server did not answer within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    paths = fixture_images()
    info = cpu()
    print(f"CPU: {info['model']}, {info['cores']} cores; AVX2 {'yes' if info['avx2'] else 'no'}, "
          f"AVX-512 {'yes' if info['avx512'] else 'no'}, VNNI {'yes' if info['vnni'] else 'no'}")
    print(f"photos: the {len(paths)} fixture photos, {args.rounds} rounds; rembg {_version('rembg')} "
          f"(rembg s --no-ui, model=u2netp), onnxruntime {_version('onnxruntime')}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "u2netp.onnx").symlink_to(MODEL)
        rembg = rembg_server(home)
        try:
            with RssSampler(rembg, interval_s=0.02) as rss:
                seq, _ = sequential(rembg.url + "/api/remove", paths, {"model": "u2netp"}, args.rounds)
                conc, rate = concurrent(rembg.url, "/api/remove", paths, {"model": "u2netp"}, args.clients, args.rounds)
            rows.append(("rembg s (u2netp)", seq, conc, rate, rss.peak_mb, None))
        finally:
            rembg.process.terminate()
            rembg.process.wait(timeout=30)
    with running_server(edge=True, boot_timeout_s=180) as server:
        status = requests.get(server.url + "/api/bg/status", timeout=10).json()
        with RssSampler(server, interval_s=0.02) as rss:
            seq, stages = sequential(server.url + "/api/bg/remove", paths, {}, args.rounds)
            conc, rate = concurrent(server.url, "/api/bg/remove", paths, {}, args.clients, args.rounds)
        rows.append(("ours (/api/bg/remove, edge)", seq, conc, rate, rss.peak_mb, stages))
    runtime = status.get("runtime", {})
    print(f"ours: {status['model_info']['model']} ({runtime.get('precision', '?')}: {runtime.get('precision_reason', '')}), "
          f"edge matting {os.environ.get('EDGE_MATTING', 'band (default)')}")
    base = statistics.median(rows[0][1])
    print(f"\n| server | median ms | p95 ms | x rembg | {args.clients} clients: median ms | p95 ms | img/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seq, conc, rate, peak_mb, _ in rows:
        print(f"| {name} | {statistics.median(seq):.0f} | {p95(seq):.0f} | {statistics.median(seq) / base:.2f} | "
              f"{statistics.median(conc):.0f} | {p95(conc):.0f} | {rate:.2f} | {peak_mb:.0f} |")
    stages = rows[1][5]
    totals = {}
    for s in stages:
        for k, v in s.items():
            totals.setdefault(k, []).append(v)
    ours_median = statistics.median(rows[1][1])
    print("\nours, one request at a time, median ms by stage (Server-Timing): " +
          ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in totals.items()))
    segment = statistics.median(totals.get("segment", [0]))
    print(f"the model's run is {segment / ours_median:.0%} of a request; the rest {ours_median - segment:.0f} ms")
    gmacs = network_gmacs(MODEL)
    rate = sgemm_gflops()
    ms, model_id = model_ms()
    floor = 2 * gmacs / rate * 1000
    print(f"\nu2netp at 320x320: {gmacs:.2f} GMACs; numpy sgemm here: {rate:.0f} GFLOP/s, so an fp32 floor of "
          f"{floor:.0f} ms; ours ({model_id}) runs in {ms:.0f} ms in-process: {ms / floor:.0%} of that floor")


def _version(name: str) -> str:
    from importlib.metadata import version

    try:
        return version(name)
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
