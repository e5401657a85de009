"""Which u2netp layers int8 breaks, and what the chosen recipe costs and gains (issue 19, point 3).

The selection uses the calibration photos only (``tests/data/fixtures/images``): each candidate is
scored by how far its masks move from the fp32 model's own masks on those photos (mean absolute
difference of the 8-bit masks, and IoU at 128). The quality set (``tests/data/quality/am2k``) is
used only at the end, to report mean SAD / IoU against the true mattes, never to choose.

Steps (all single-threaded; speeds are medians of interleaved runs, so the ratio holds on a
busy machine even when the absolute milliseconds do not):

1. one group at a time: quantize only a run of 10 consecutive Convs (their inputs, weights and
   outputs), everything else fp32, and score it;
2. one layer at a time, inside the groups that moved the masks;
3. for each layer that alone breaks the masks, an fp32 island: the layer, the data-movement ops
   that feed it (Resize, Concat, MaxPool, Relu) and the Convs that produce those tensors, so the
   tensor that int8 cannot carry stays fp32 end to end; then each producing Conv is put back to
   int8 if that is free for the masks (mean error within 2%, worst photo's IoU within 0.005);
4. the whole model quantized but the islands: scores, then the final table (naive vs chosen,
   minmax vs percentile calibration, mirrored calibration photos), speed fp32 vs int8, and the
   quality set.

Usage: python benchmarks/int8_sensitivity.py [--skip-search | --hot CONV...] [--rembg] [--tradeoff]
  --skip-search  only step 4 with adapters.quantize.FP32_NODES (the committed result)
  --hot CONV...  skip steps 1-2, take these as the layers that break the masks
  --rembg        also time rembg's remove(only_mask=True) on the same photo (single thread)
  --tradeoff     also keep the next most sensitive layers fp32, one more per step, with speed and SAD
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image  # noqa: E402

from adapters import quantize  # noqa: E402
from adapters.onnx import OnnxSegmenter, session_options  # noqa: E402

FP32 = ROOT / "models" / "u2netp.onnx"
QUALITY = ROOT / "tests" / "data" / "quality" / "am2k"
GROUP = 10
BREAKS = 1.0  # mean abs mask difference (0..255 scale) above which a group / layer "moves the masks"
TRADEOFF_GROUP = 0.2  # --tradeoff: drill into groups above this
DATA_MOVEMENT = {"Resize", "Concat", "MaxPool", "Relu"}


def session(model, threads: int = 1) -> ort.InferenceSession:
    src = str(model) if isinstance(model, Path) else model if isinstance(model, (str, bytes)) else quantize.serialize(model)
    return ort.InferenceSession(src, session_options(threads, "lean"), providers=["CPUExecutionProvider"])


def segmenter(sess: ort.InferenceSession) -> OnnxSegmenter:
    return quantize.segmenter(sess)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 128, b >= 128
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


class Fixtures:
    """The calibration photos, preprocessed once, and the fp32 model's masks of them."""

    def __init__(self):
        fp32 = session(FP32)
        pre = segmenter(fp32)
        self.names, self.tensors, self.sizes = [], [], []
        for p in quantize.calibration_photos():
            rgb = quantize.load_rgb(p)
            self.names.append(p.name)
            self.tensors.append(pre.preprocess(rgb))
            self.sizes.append(rgb.shape[:2])
        self.reference = self.masks(fp32)

    def masks(self, sess) -> list[np.ndarray]:
        s = segmenter(sess)
        return [s.postprocess(s.infer(x), *hw) for x, hw in zip(self.tensors, self.sizes)]

    def score(self, sess) -> dict[str, float]:
        got = self.masks(sess)
        mad = [float(np.abs(a.astype(np.float32) - b).mean()) for a, b in zip(got, self.reference)]
        ious = [iou(a, b) for a, b in zip(got, self.reference)]
        return {"mad": float(np.mean(mad)), "mad_max": max(mad), "iou": float(np.mean(ious)), "iou_min": min(ious)}


def quality(sess) -> dict[str, float]:
    """Mean SAD and IoU against the true mattes (evaluation only)."""
    s = pre = segmenter(sess)
    sads, ious = [], []
    for alpha in sorted(QUALITY.glob("*.alpha.png")):
        rgb = quantize.load_rgb(alpha.with_name(alpha.name.replace(".alpha.png", ".jpg")))
        with Image.open(alpha) as im:
            truth = np.asarray(im.convert("L"))
        mask = s.postprocess(s.infer(pre.preprocess(rgb)), *rgb.shape[:2])
        if mask.shape != truth.shape:
            mask = np.asarray(Image.fromarray(mask, "L").resize(truth.shape[::-1], Image.Resampling.LANCZOS))
        sads.append(float(np.abs(mask.astype(np.float32) - truth).sum() / 255.0 / 1000.0))
        ious.append(iou(mask, truth))
    return {"sad": float(np.mean(sads)), "iou": float(np.mean(ious))}


def speed(sessions: dict[str, ort.InferenceSession], x: np.ndarray, runs: int = 15) -> dict[str, float]:
    """Median ms per inference, sessions interleaved run by run."""
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {s.get_inputs()[0].name: x})
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: x})
            times[k].append(time.perf_counter() - t0)
    return {k: 1000.0 * statistics.median(v) for k, v in times.items()}


class Search:
    def __init__(self, fixtures: Fixtures, recipe: quantize.Recipe):
        self.fx = fixtures
        self.recipe = recipe
        self.prepared = quantize.prepare(FP32)
        inputs = quantize.calibration_inputs(quantize.calibration_photos(), segmenter(session(FP32)), recipe.mirror)
        self.ranges = quantize.compute_ranges(self.prepared, inputs, recipe)
        self.nodes = list(self.prepared.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.convs = [n.name for n in self.nodes if n.op_type == "Conv"]
        self.group_scores: list[tuple[float, list[str]]] = []

    def model(self, exclude=(), only=None, recipe: quantize.Recipe | None = None):
        r = recipe or self.recipe
        r = quantize.Recipe(**{**r.__dict__, "fp32_nodes": tuple(exclude)})
        return quantize.quantize(self.prepared, self.ranges, r, nodes_to_quantize=only)

    def score(self, **kw) -> dict[str, float]:
        return self.fx.score(session(self.model(**kw)))

    def island(self, conv: str) -> list[str]:
        """``conv``, the data-movement ops upstream of it, and the Convs that feed those."""
        out, todo = [conv], [conv]
        while todo:
            name = todo.pop()
            node = next(n for n in self.nodes if n.name == name)
            for t in node.input:
                p = self.producer.get(t)
                if p is None or p.name in out:
                    continue
                if p.op_type in DATA_MOVEMENT:
                    out.append(p.name)
                    todo.append(p.name)
                elif p.op_type == "Conv":
                    out.append(p.name)  # its output (the tensor) stays fp32; its input does not matter
        return out

    def _relu_of(self, name: str) -> str | None:
        """The Conv a Relu node ``name`` follows, else None."""
        node = next(n for n in self.nodes if n.name == name)
        p = self.producer.get(node.input[0]) if node.op_type == "Relu" else None
        return p.name if p is not None and p.op_type == "Conv" else None

    def run(self, hot_layers: list[str] | None = None) -> list[str]:
        def line(what, s):
            print(
                f"  {what:<34} mad {s['mad']:7.3f} (max {s['mad_max']:7.3f})  iou {s['iou']:.4f} (min {s['iou_min']:.4f})",
                flush=True,
            )

        print("\n1. one group of Convs at a time quantized (the rest fp32):")
        hot_groups = []
        for i in range(0, len(self.convs) if hot_layers is None else 0, GROUP):
            group = self.convs[i : i + GROUP]
            s = self.score(only=group)
            line(f"{group[0]}..{group[-1]}", s)
            self.group_scores.append((s["mad"], group))
            if s["mad"] > BREAKS:
                hot_groups.append(group)

        print(f"\n2. one Conv at a time, inside the {len(hot_groups)} group(s) above mad {BREAKS}:")
        hot = []
        for group in hot_groups:
            for conv in group:
                s = self.score(only=[conv])
                line(conv, s)
                if s["mad"] > BREAKS:
                    hot.append((s["mad"], conv))
        hot.sort(reverse=True)
        if hot_layers is not None:
            print(f"  (skipped: --hot {' '.join(hot_layers)})")
            hot = [(0.0, c) for c in hot_layers]

        print("\n3. fp32 islands around the layers that break the masks:")
        exclude: list[str] = []
        for _, conv in hot:
            if conv in exclude:
                continue
            island = self.island(conv)
            base = self.score(exclude=exclude + island)
            line(f"all int8 but {'+'.join(island)}", base)
            for member in [m for m in island if m != conv and m in self.convs]:
                # Back to int8 with its Relu (Conv+Relu quantize as one: the Relu's range, >= 0).
                trial = [m for m in island if m != member and self._relu_of(m) != member]
                s = self.score(exclude=exclude + trial)
                # A producing Conv is a small share of the work (here 0.15% of the MACs), so it
                # goes back to int8 only if that is free: mean error within 2%, worst photo's IoU
                # within 0.005.
                keep_int8 = s["mad"] <= base["mad"] * 1.02 + 0.005 and s["iou_min"] >= base["iou_min"] - 0.005
                line(f"  ... with {member} int8 {'(kept int8)' if keep_int8 else '(stays fp32)'}", s)
                if keep_int8:
                    island, base = trial, s
            exclude += island
        print(f"\n   fp32 nodes: {tuple(exclude)}")
        return exclude


def report(search: Search, fixtures: Fixtures, exclude: list[str], rembg: bool) -> None:
    x = fixtures.tensors[0]
    fp32 = session(FP32)
    recipes = {
        "naive (all int8, minmax)": search.model(exclude=()),
        "chosen (minmax)": search.model(exclude=exclude),
    }
    for name, r in (
        ("chosen, percentile 99.99", quantize.Recipe(calibration="percentile", percentile=99.99)),
        ("chosen, minmax, mirrored photos", quantize.Recipe(mirror=True)),
    ):
        inputs = quantize.calibration_inputs(quantize.calibration_photos(), segmenter(session(FP32)), r.mirror)
        ranges = quantize.compute_ranges(search.prepared, inputs, r)
        r = quantize.Recipe(**{**r.__dict__, "fp32_nodes": tuple(exclude)})
        recipes[name] = quantize.quantize(search.prepared, ranges, r)
    digest = hashlib.sha256(quantize.serialize(recipes["chosen (minmax)"])).hexdigest()
    same = "=" if digest == quantize.INT8_SHA256 else "!="
    print(f"\n  chosen model sha256 {digest} {same} adapters.quantize.INT8_SHA256 (what the build makes)")
    sessions = {"fp32": fp32, **{k: session(m) for k, m in recipes.items()}}
    ms = speed(sessions, x)
    print("\n4. recipes (single thread; quality set = evaluation only)")
    print(f"  {'recipe':<34} {'ms':>7} {'x fp32':>7} {'fix mad':>8} {'fix iou':>8} {'iou min':>8} {'SAD':>7} {'IoU':>6}")
    for k, s in sessions.items():
        f = fixtures.score(s)
        q = quality(s)
        print(
            f"  {k:<34} {ms[k]:7.1f} {ms['fp32'] / ms[k]:7.2f} {f['mad']:8.3f} {f['iou']:8.4f} {f['iou_min']:8.4f}"
            f" {q['sad']:7.2f} {q['iou']:6.4f}",
            flush=True,
        )
    if rembg:
        end_to_end(recipes["chosen (minmax)"])


def tradeoff(search: Search, fixtures: Fixtures, exclude: list[str], steps: int = 4) -> None:
    """Beyond the chosen recipe: more layers fp32, most sensitive first (per-layer scores inside the
    groups that moved the masks by more than TRADEOFF_GROUP), and what each step costs in speed."""
    groups = [g for m, g in search.group_scores if TRADEOFF_GROUP < m <= BREAKS]
    print(f"\n6. trade-off: per-layer scores in the {len(groups)} group(s) with {TRADEOFF_GROUP} < mad <= {BREAKS}:")
    scored = []
    for group in groups:
        for conv in group:
            if conv in exclude:
                continue
            s = search.score(only=[conv])
            print(f"  {conv:<34} mad {s['mad']:7.3f}  iou min {s['iou_min']:.4f}", flush=True)
            scored.append((s["mad"], conv))
    scored.sort(reverse=True)
    models = {"fp32": session(FP32), "chosen": session(search.model(exclude=exclude))}
    extra: list[str] = []
    for _, conv in scored[:steps]:
        extra.append(conv)
        models[f"chosen + {'+'.join(extra)}"] = session(search.model(exclude=exclude + extra))
    ms = speed(models, fixtures.tensors[0])
    print(f"  {'recipe':<60} {'ms':>7} {'x fp32':>7} {'fix mad':>8} {'iou min':>8} {'SAD':>7} {'IoU':>6}")
    for k, sess in models.items():
        f, q = fixtures.score(sess), quality(sess)
        print(
            f"  {k:<60} {ms[k]:7.1f} {ms['fp32'] / ms[k]:7.2f} {f['mad']:8.3f} {f['iou_min']:8.4f}"
            f" {q['sad']:7.2f} {q['iou']:6.4f}",
            flush=True,
        )


def end_to_end(int8_model) -> None:
    """Mask of one fixture photo from RGB (pre + infer + post), ours vs rembg's, single thread."""
    import os

    os.environ.setdefault("U2NET_HOME", str(ROOT / "models"))
    from rembg import new_session, remove

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    rs = new_session("u2netp", sess_opts=so, providers=["CPUExecutionProvider"])
    photo = quantize.calibration_photos()[0]
    rgb = quantize.load_rgb(photo)
    pil = Image.fromarray(rgb)
    fns = {"rembg fp32": lambda: remove(pil, session=rs, only_mask=True)}
    for mode in ("lean", "fast"):  # ONNX_MEMORY_MODE: lean is the default, fast the quickest
        for name, model in (("fp32", FP32), ("int8", int8_model)):
            seg = segmenter(ort.InferenceSession(
                str(model) if isinstance(model, Path) else quantize.serialize(model),
                session_options(1, mode), providers=["CPUExecutionProvider"]))
            fns[f"ours {name} {mode}"] = lambda seg=seg: seg.mask(rgb)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(9):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(f"\n5. end to end, mask of {photo.name} {rgb.shape[1]}x{rgb.shape[0]} (single thread, median of 9):")
    for k, v in med.items():
        print(f"  {k:<16} {v:7.1f} ms  ({v / med['rembg fp32']:.2f} x rembg)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--rembg", action="store_true")
    ap.add_argument("--tradeoff", action="store_true", help="also: more layers fp32, step by step (needs the search)")
    ap.add_argument("--hot", nargs="+", metavar="CONV", help="skip steps 1-2: start step 3 from these layers")
    args = ap.parse_args(argv)
    t0 = time.time()
    fixtures = Fixtures()
    search = Search(fixtures, quantize.Recipe())
    print(f"{len(search.convs)} Convs; calibration photos: {', '.join(fixtures.names)}")
    exclude = list(quantize.FP32_NODES) if args.skip_search else search.run(args.hot)
    report(search, fixtures, exclude, args.rembg)
    if args.tradeoff and not args.skip_search and not args.hot:
        tradeoff(search, fixtures, exclude)
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
