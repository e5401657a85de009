"""Before and after in one run: each processing endpoint's latency and memory, base revision vs working tree.

The base defaults to dd25209, the request path before its reshaping (624f70d and later).

"base" is a git worktree of ``--base`` in a temporary directory, its C kernels built in place
(``setup.py build_ext --inplace``); "after" is this checkout as it is on disk, uncommitted changes
included. Both run on this interpreter and venv, the same model file (MODEL_PATH, this checkout's
models/u2netp.onnx) and the same fixture photos (this checkout's tests/data/fixtures/images).

What is measured, per revision, each in a fresh child process (PYTHONPATH = that tree; the child
checks that app, adapters, config and effects were imported from it):
- in process: ``create_app()`` with WARMUP=true, CACHE_BACKEND=none, then Flask's test client posts
  each case below ``--requests`` times per photo (animal-1, animal-2, car-1; use_cache=false), after
  one untimed request per case; the time is the request end to end in process (routing, form
  parsing, decoding, inference, effects, encoding, reading the body, closing the response), no
  network. Every status must be 200. The child also reports its RSS at rest (psutil, right after
  create_app, the model loaded and warmed up), its peak RSS (getrusage ru_maxrss), and its RSS
  after the last request;
- the cache-hit path: a second child with CACHE_BACKEND=local and a fresh CACHE_DIR; per photo one
  miss, then ``--requests`` hits (X-Cache: HIT checked), for /api/bg/remove and /api/v2/process with
  the four effects;
- with ``--server`` (default), once per revision at the end: that tree's own
  benchmarks/server_memory.py (real gunicorn, concurrent clients, every fixture photo; peak RSS of
  the process tree and client latency), its output shown for both, and its numbers tabled.

Revisions alternate (base, after, base, after, ...) for ``--rounds`` rounds, so that a drift of the
machine (thermal, another process) hits both. Per case, a revision's figure is the best (lowest) of
its round medians; "noise" is that revision's spread over rounds (slowest round median / fastest - 1).
A ratio after/base above 1 means after is slower; it is flagged SLOWER only when the excess is
more than both revisions' noise (and more than 2%), "~" when it is within it. Memory is the lowest
over rounds too, flagged HIGHER above +1% (and more than 2 MB).

    python benchmarks/compare_revisions.py [--base dd25209] [--rounds 3] [--requests 5]
                                           [--no-server] [--server-rounds 2] [--server-clients 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("animal-1.jpg", "animal-2.jpg", "car-1.jpg")
ALL_EFFECTS = '["blackwhite", "dither", "popart", "8bit"]'
# (label, endpoint, form fields besides the file and use_cache)
CASES = [
    ("bg/remove", "/api/bg/remove", {}),
    ("bg/remove only_mask", "/api/bg/remove", {"only_mask": "true"}),
    ("bg/change_color", "/api/bg/change_color", {"color": "#2a6fdb"}),
    ("remove-background jpeg", "/remove-background", {"output_format": "jpeg"}),
    ("v2/process 4 effects", "/api/v2/process", {"effects": ALL_EFFECTS}),
    ("v2/process dither, bg kept", "/api/v2/process", {"effects": '["dither"]', "remove_background": "false"}),
]
HIT_CASES = [
    ("HIT bg/remove", "/api/bg/remove", {}),
    ("HIT v2/process 4 effects", "/api/v2/process", {"effects": ALL_EFFECTS}),
]
MARK = "@@RESULT@@ "

# Run in the tree under test (cwd and PYTHONPATH = the tree). argv: mode (nocache | hit), JSON spec.
CHILD = r'''
import io, json, os, resource, statistics, sys, time
from pathlib import Path
import psutil

mode, spec = sys.argv[1], json.loads(sys.argv[2])
tree = Path.cwd().resolve()
try:  # the factory's home since the pipeline stopped importing Flask; earlier revisions: app/__init__.py
    from app.web.factory import create_app
except ImportError:
    from app import create_app
import adapters, config, effects, app as app_pkg
modules = {m.__name__: str(Path(m.__file__).resolve()) for m in (app_pkg, adapters, config, effects)}
stray = {k: v for k, v in modules.items() if not Path(v).is_relative_to(tree)}
if stray:
    sys.exit(f"imported from outside {tree}: {stray}")

app = create_app()
rest_mb = psutil.Process().memory_info().rss / 2**20
client = app.test_client()
photos = [(Path(p).name, Path(p).read_bytes()) for p in spec["photos"]]

def post(endpoint, fields, photo, expect_cache=None):
    name, data = photo
    form = {**fields, "file": (io.BytesIO(data), name, "image/jpeg")}
    started = time.perf_counter()
    with client.post(endpoint, data=form, content_type="multipart/form-data") as resp:
        body = resp.get_data()
    elapsed = (time.perf_counter() - started) * 1000
    if resp.status_code != 200:
        sys.exit(f"{endpoint} {fields} {name}: status {resp.status_code}: {body[:300]!r}")
    if expect_cache and resp.headers.get("X-Cache") != expect_cache:
        sys.exit(f"{endpoint} {fields} {name}: X-Cache {resp.headers.get('X-Cache')}, expected {expect_cache}")
    return elapsed

out = {"modules": modules, "rest_mb": rest_mb, "cases": {}}
for label, endpoint, fields in spec["cases"]:
    times = []
    if mode == "nocache":
        fields = {**fields, "use_cache": "false"}
        post(endpoint, fields, photos[0], "BYPASS")  # untimed: the case's code paths warmed
        for photo in photos:
            times += [post(endpoint, fields, photo, "BYPASS") for _ in range(spec["requests"])]
    else:
        for photo in photos:
            post(endpoint, fields, photo, "MISS")  # computed and stored when the response closes
            times += [post(endpoint, fields, photo, "HIT") for _ in range(spec["requests"])]
    out["cases"][label] = {"median_ms": statistics.median(times), "n": len(times)}
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
out["end_mb"] = psutil.Process().memory_info().rss / 2**20
print("@@RESULT@@ " + json.dumps(out), flush=True)
'''


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {os.cpu_count()} cores ({usable} usable), Python {sys.version.split()[0]}"


def child_env(tree: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "MODEL_PATH": str((ROOT / "models" / "u2netp.onnx").resolve()),
            "WARMUP": "true", "CACHE_BACKEND": "none", "LOG_LEVEL": "warning", "LOG_FORMAT": "text", **extra}


def run_child(tree: Path, mode: str, cases: list, requests: int, **env: str) -> dict:
    spec = {"cases": cases, "requests": requests,
            "photos": [str(ROOT / "tests" / "data" / "fixtures" / "images" / p) for p in PHOTOS]}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, json.dumps(spec)], cwd=tree,
                          env=child_env(tree, **env), capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"child ({tree}, {mode}) failed with {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def make_base(base: str, tmp: Path) -> Path:
    tree = tmp / "base"
    git("worktree", "add", "--detach", str(tree), base)
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree,
                           capture_output=True, text=True)
    if build.returncode != 0:
        raise SystemExit(f"building the kernels at {base} failed:\n{build.stdout[-2000:]}\n{build.stderr[-2000:]}")
    return tree


def best_and_noise(values: list[float]) -> tuple[float, float]:
    return min(values), max(values) / min(values) - 1


def flag_time(ratio: float, noise: float) -> str:
    if ratio > 1 + max(noise, 0.02):
        return "SLOWER"
    return "~" if ratio > 1 else ""


def flag_mem(base: float, after: float) -> str:
    return "HIGHER" if after > base * 1.01 and after - base > 2 else ""


def server_memory(tree: Path, rounds: int, clients: int) -> tuple[str, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "benchmarks/server_memory.py", "--rounds", str(rounds),
                           "--clients", str(clients)], cwd=tree, env=child_env(tree), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        return f"(failed with {proc.returncode})\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}", elapsed
    return proc.stdout, elapsed


SERVER_RE = {
    "head": re.compile(r"server memory, (\S+)( \(4 effects\))?: .* -> (\d+) requests, statuses (\[.*\])"),
    "rss": re.compile(r"idle (\d+) MB, peak (\d+) MB .* after (\d+) MB"),
    "lat": re.compile(r"p50 (\d+) ms, max (\d+) ms"),
}


def parse_server(text: str) -> dict[str, dict]:
    out, current = {}, None
    for line in text.splitlines():
        if m := SERVER_RE["head"].search(line):
            current = m.group(1) + (" 4 effects" if m.group(2) else "")
            out[current] = {"requests": int(m.group(3)), "statuses": m.group(4)}
        elif current and (m := SERVER_RE["rss"].search(line)):
            out[current].update(idle=int(m.group(1)), peak=int(m.group(2)), after=int(m.group(3)))
        elif current and (m := SERVER_RE["lat"].search(line)):
            out[current].update(p50=int(m.group(1)), max=int(m.group(2)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--base", default="dd25209", help="the revision to compare against (default dd25209)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating base and after (default 3)")
    parser.add_argument("--requests", type=int, default=5, help="timed requests per photo and case (default 5)")
    parser.add_argument("--server", action=argparse.BooleanOptionalAction, default=True,
                        help="also run each tree's benchmarks/server_memory.py once (default on)")
    parser.add_argument("--server-rounds", type=int, default=2, help="server_memory.py --rounds (default 2, its own)")
    parser.add_argument("--server-clients", type=int, default=4, help="server_memory.py --clients (default 4, its own)")
    args = parser.parse_args()

    started = time.perf_counter()
    base_commit = git("rev-parse", "--short", args.base)
    after_commit = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    print(f"# before/after: base {base_commit} ({git('log', '-1', '--format=%s', args.base)[:70]})")
    print(f"#               after {after_commit}{' + uncommitted changes' if dirty else ''} "
          f"({git('log', '-1', '--format=%s', 'HEAD')[:70]}), the working tree {ROOT}")
    print(f"# machine: {machine()}")
    print(f"# in process (Flask test client), {len(PHOTOS)} photos x {args.requests} requests per case, "
          f"use_cache=false; best of {args.rounds} round medians, ms")

    tmp = Path(tempfile.mkdtemp(prefix="compare-revisions-"))
    base_tree = None
    try:
        base_tree = make_base(args.base, tmp)
        trees = {"base": base_tree, "after": ROOT}
        runs: dict[str, list[dict]] = {"base": [], "after": []}
        hits: dict[str, list[dict]] = {"base": [], "after": []}
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(run_child(tree, "nocache", CASES, args.requests))
                with tempfile.TemporaryDirectory(prefix="cache-", dir=tmp) as cache_dir:
                    hits[name].append(run_child(tree, "hit", HIT_CASES, args.requests,
                                                CACHE_BACKEND="local", CACHE_DIR=cache_dir))
            print(f"  round {round_ + 1}/{args.rounds} done ({time.perf_counter() - started:.0f} s)", flush=True)

        print(f"{'case':<30}{'base ms':>10}{'after ms':>10}{'after/base':>12}{'base noise':>12}{'after noise':>13}"
              "          round medians [base | after]")
        for label, *_ in CASES + HIT_CASES:
            source = runs if not label.startswith("HIT") else hits
            bs = [r["cases"][label]["median_ms"] for r in source["base"]]
            as_ = [r["cases"][label]["median_ms"] for r in source["after"]]
            (b, bn), (a, an) = best_and_noise(bs), best_and_noise(as_)
            ratio = a / b
            rounds_txt = f"[{' '.join(f'{v:.0f}' for v in bs)} | {' '.join(f'{v:.0f}' for v in as_)}]"
            print(f"{label:<30}{b:>10.1f}{a:>10.1f}{ratio:>12.3f}{bn:>11.1%}{an:>12.1%}  "
                  f"{flag_time(ratio, max(bn, an)):<7}{rounds_txt}")

        print(f"# memory of the in-process child (MB), lowest of {args.rounds} rounds; per round in brackets")
        print(f"{'':<30}{'base MB':>10}{'after MB':>10}{'after/base':>12}")
        for key, label in (("peak_mb", "peak RSS (ru_maxrss)"), ("rest_mb", "RSS at rest (after create_app)"),
                           ("end_mb", "RSS after the last request")):
            bs, as_ = [r[key] for r in runs["base"]], [r[key] for r in runs["after"]]
            b, a = min(bs), min(as_)
            rounds_txt = f"[{' '.join(f'{v:.0f}' for v in bs)} | {' '.join(f'{v:.0f}' for v in as_)}]"
            print(f"{label:<30}{b:>10.1f}{a:>10.1f}{a / b:>12.3f}  {flag_mem(b, a):<7}{rounds_txt}")

        if args.server:
            print(f"# server_memory.py --rounds {args.server_rounds} --clients {args.server_clients}, "
                  "each tree's own script and code (real gunicorn, every fixture photo), once per revision")
            outputs, parsed = {}, {}
            for name, tree in trees.items():
                outputs[name], elapsed = server_memory(tree, args.server_rounds, args.server_clients)
                parsed[name] = parse_server(outputs[name])
                print(f"  {name}: {elapsed:.0f} s", flush=True)
            for name in trees:
                for line in outputs[name].strip().splitlines():
                    print(f"  {name:<6}| {line}")
            if parsed["base"] and parsed["base"].keys() == parsed["after"].keys():
                print(f"{'server, endpoint':<38}{'':<4}{'base':>8}{'after':>8}{'after/base':>12}")
                for endpoint, b in parsed["base"].items():
                    a = parsed["after"][endpoint]
                    for key, unit in (("peak", "MB"), ("idle", "MB"), ("after", "MB"), ("p50", "ms"), ("max", "ms")):
                        if key in b and key in a:
                            label = f"{endpoint} {'RSS ' if unit == 'MB' else ''}{key}"
                            print(f"{label:<38}{unit:<4}{b[key]:>8}{a[key]:>8}{a[key] / b[key]:>12.3f}")
                    if b["statuses"] != a["statuses"]:
                        print(f"  statuses differ: base {b['statuses']}, after {a['statuses']}")
            else:
                print("  (the two outputs could not be tabled; see them above)")
    finally:
        if base_tree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
    print(f"# total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
