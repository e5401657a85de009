"""Our server against rembg's, as a user sees them: the same photos, over HTTP, one request at a time
and with 4 clients at once, in one run.

Ours is the service as deployed (``config/serve``: the nginx edge in front of gunicorn) with its
default settings, and with ``EDGE_MATTING=plain`` (the fastest edge); rembg's is ``rembg s --no-ui``
(FastAPI on uvicorn) asked for ``model=u2netp``, its default output (a PNG cut-out) and with its
alpha matting (``a=true``), the same u2netp file (``models/u2netp.onnx``). Ours also runs with
``ONNX_RUNTIME=auto`` (OpenVINO where the CPU has VNNI, else onnxruntime), and with
``ONNX_PRECISION=fp32``: what ``auto`` runs on a CPU without VNNI, the nearest this machine comes to
one. Each is compared with the peer at the same or worse quality: each server's cut-outs of the 13 AM-2k animals are scored against
their true mattes (mean SAD, as ``make quality`` scores them).
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
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import requests  # noqa: E402
from PIL import Image  # noqa: E402

from tests.serverkit import (  # noqa: E402
    RssSampler, Server, concurrent_clients, fixture_images, free_port, running_server,
)

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "u2netp.onnx"
AM2K = ROOT / "tests" / "data" / "quality" / "am2k"


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


def model_ms(env: dict[str, str] | None = None, repeat: int = 10) -> tuple[float, str]:
    """Our model's own run (the segmenter of the default settings, with ``env`` over them) on a
    photo at its input size, median."""
    from adapters import load_segmenter
    from config import Settings

    settings = Settings.from_env({**os.environ, "LOG_LEVEL": "warning", **(env or {})})
    segmenter = load_segmenter(settings)
    side = segmenter.info.input_size[0]
    rgb = np.random.default_rng(2).integers(0, 255, (side, side, 3), np.uint8)
    segmenter.mask(rgb)
    times = [_timed(lambda: segmenter.mask(rgb)) for _ in range(repeat)]
    return statistics.median(times) * 1000, f"{segmenter.info.model_id} on {segmenter.runtime()['engine']}"


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


def served_sad(url: str, data: dict) -> float:
    """Mean SAD of the cut-outs' alpha (the PNG a default request answers) on the 13 AM-2k animals
    against their true mattes (as ``make quality`` scores them)."""
    from app.quality import metrics
    from app.quality.score import load_truth, score

    sads = []
    for path in sorted(AM2K.glob("am2k-*.jpg")):
        with Image.open(io.BytesIO(post(url, path, data).content)) as img:
            alpha = np.asarray(img.convert("RGBA").getchannel("A"))
        sads.append(score(alpha, metrics.Truth(load_truth(path)))["sad"])
    return float(np.mean(sads))


@dataclass
class Row:
    name: str
    seq: list[float]
    conc: list[float] | None
    rate: float | None
    peak_mb: float
    sad: float
    peer: int  # the row it is compared with: rembg's at the same or worse quality
    stages: list[dict[str, float]] | None = None


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
          f"(rembg s --no-ui, model=u2netp), onnxruntime {_version('onnxruntime')}, openvino {_version('openvino')}; SAD: the 13 AM-2k animals")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "u2netp.onnx").symlink_to(MODEL)
        rembg = rembg_server(home)
        try:
            url = rembg.url + "/api/remove"
            plain, matted = {"model": "u2netp"}, {"model": "u2netp", "a": "true"}
            with RssSampler(rembg, interval_s=0.02) as rss:
                seq, _ = sequential(url, paths, plain, args.rounds)
                conc, rate = concurrent(rembg.url, "/api/remove", paths, plain, args.clients, args.rounds)
            rows.append(Row("rembg s (u2netp)", seq, conc, rate, rss.peak_mb, served_sad(url, plain), 0))
            # its alpha matting (pymatting, ~5 s a photo): one request at a time, one round
            with RssSampler(rembg, interval_s=0.02) as rss:
                seq, _ = sequential(url, paths, matted, 1)
            rows.append(Row("rembg s (u2netp, alpha matting a=true)", seq, None, None, rss.peak_mb,
                            served_sad(url, matted), 1))
        finally:
            rembg.process.terminate()
            rembg.process.wait(timeout=30)
    status = {}
    # ONNX_PRECISION=fp32: what ``auto`` runs on a CPU without VNNI (int8 gains nothing there), as
    # near to such a CPU as this machine comes: both servers then run fp32 kernels
    auto = {"ONNX_RUNTIME": "auto"}
    for name, env, peer in (("ours (/api/bg/remove, edge; default: EDGE_MATTING=band)", {}, 1),
                            ("ours (EDGE_MATTING=plain)", {"EDGE_MATTING": "plain"}, 0),
                            ("ours (ONNX_RUNTIME=auto)", auto, 1),
                            ("ours (ONNX_RUNTIME=auto, EDGE_MATTING=plain)", {**auto, "EDGE_MATTING": "plain"}, 0),
                            ("ours (ONNX_PRECISION=fp32, as auto without VNNI)", {"ONNX_PRECISION": "fp32"}, 1),
                            ("ours (ONNX_PRECISION=fp32, EDGE_MATTING=plain)",
                             {"ONNX_PRECISION": "fp32", "EDGE_MATTING": "plain"}, 0)):
        with running_server(env=env, edge=True, boot_timeout_s=180) as server:
            status = status or requests.get(server.url + "/api/bg/status", timeout=10).json()
            with RssSampler(server, interval_s=0.02) as rss:
                seq, stages = sequential(server.url + "/api/bg/remove", paths, {}, args.rounds)
                conc, rate = concurrent(server.url, "/api/bg/remove", paths, {}, args.clients, args.rounds)
            rows.append(Row(name, seq, conc, rate, rss.peak_mb, served_sad(server.url + "/api/bg/remove", {}), peer,
                            stages))
    runtime = status.get("runtime", {})
    print(f"ours: {status['model_info']['model']} ({runtime.get('precision', '?')}: {runtime.get('precision_reason', '')})")
    print(f"\n| server | mean SAD | median ms | p95 ms | x its peer | {args.clients} clients: median ms | p95 ms | "
          "img/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        median = statistics.median(row.seq)
        peer = rows[row.peer]
        ratio = "1.00" if peer is row else f"{median / statistics.median(peer.seq):.2f} (vs {peer.name.split(' (')[0]}" \
            f"{', alpha matting' if row.peer == 1 else ''})"
        conc = "— | — | —" if row.conc is None else \
            f"{statistics.median(row.conc):.0f} | {p95(row.conc):.0f} | {row.rate:.2f}"
        print(f"| {row.name} | {row.sad:.2f} | {median:.0f} | {p95(row.seq):.0f} | {ratio} | "
              f"{conc} | {row.peak_mb:.0f} |")
    print("x its peer: our median over rembg's at the same or worse quality (SAD): the default against rembg's "
          "alpha matting, EDGE_MATTING=plain against rembg's default")
    for row in rows:
        if row.stages is None:
            continue
        totals: dict[str, list[float]] = {}
        for stage in row.stages:
            for k, v in stage.items():
                totals.setdefault(k, []).append(v)
        median = statistics.median(row.seq)
        segment = statistics.median(totals.get("segment", [0]))
        print(f"\n{row.name}, one request at a time, median ms by stage (Server-Timing): " +
              ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in totals.items()))
        print(f"the model's run is {segment / median:.0%} of a request; the rest {median - segment:.0f} ms")
    gmacs = network_gmacs(MODEL)
    rate = sgemm_gflops()
    floor = 2 * gmacs / rate * 1000
    print(f"\nu2netp at 320x320: {gmacs:.2f} GMACs; numpy sgemm here: {rate:.0f} GFLOP/s, so an fp32 floor of "
          f"{floor:.0f} ms")
    for label, env in (("default", {}), ("ONNX_RUNTIME=auto", {"ONNX_RUNTIME": "auto"})):
        ms, model_id = model_ms(env)
        print(f"ours ({label}: {model_id}) runs in {ms:.0f} ms in-process: {ms / floor:.0%} of that floor")


def _version(name: str) -> str:
    from importlib.metadata import version

    try:
        return version(name)
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
