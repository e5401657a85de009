"""Cut-out quality against true alpha mattes: ours, rembg on the same model, rembg with alpha
matting, and variants of ours, on the AM-2k photos of ``tests/data/quality/am2k`` (13 real
animal photos with hand-labelled mattes), in one process, one run, one table.

Per image and on average: SAD, MSE (x1e-3), Grad, IoU at 0.5, boundary F within 3 px
(definitions: ``app/quality/metrics.py``), the time per image, and each method's mean
SAD as a ratio of rembg's. All scored at the truth's full resolution.

- ours: the service's own path on the configured model (``Settings.from_env(os.environ)``):
  ``decode`` (at most MAX_DIMENSION px and MAX_WORK_PIXELS, as a request is) then ``subject_alpha``;
  the mask is then resized to the truth's size with PIL LANCZOS to be scored (not timed), unless
  it has that size already (the photos are 1.7 MP: worked whole by default).
- ours, Lanczos mask: the same, with the model's map resized to the photo with PIL LANCZOS, as
  before the guided upscaling (``app/pipeline/upscale.py``): the full-resolution comparison of the
  two (printed as a line too). Only for the onnx adapter.
- rembg 2.0.86, same model file (``U2NET_HOME=models/``): ``remove(img, session, only_mask=True)``
  on the full-size photo.
- rembg + alpha matting: ``remove(img, session, alpha_matting=True)`` with rembg's defaults
  (thresholds 240/10, erosion 10), the RGBA cutout's alpha. Not ``only_mask=True``: in rembg 2.0.86
  ``only_mask`` returns the plain mask before alpha matting is looked at, so
  ``only_mask=True, alpha_matting=True`` is the plain mask again.
- variants: :data:`VARIANTS`, environment overrides of ours (skipped, with the reason, when
  config refuses them or their model file is missing). ``int8`` serves the int8 file beside
  MODEL_PATH (``models/u2netp.int8.onnx``), whatever built it: the run says whether it is the pinned
  build (``adapters.quantize.INT8_SHA256``) or one from other photos (``make int8 CALIBRATION=...``).
- mask confidence: ``app.pipeline.confidence.mask_confidence`` of our default's mask (as the
  service has it, at the decoded size) per image, and its Spearman correlation with the SAD.

Gate: exits 1 when our default's mean SAD is more than 2% worse than rembg's (``app.quality.score.gate``);
2 on a bad argument, a missing data set, or a configuration the service would refuse.
Times are one run per image after one warm-up call per method, wall clock, single process.

Usage: python benchmarks/quality.py [--images 01,03] [--variants balanced,int8|none]
       [--no-matting] [--markdown README.md | --readme]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NoReturn, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("U2NET_HOME", str(ROOT / "models"))  # rembg finds the same model file, offline

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from app.quality import metrics  # noqa: E402
from app.quality import calibrate  # noqa: E402
from app.quality.report import GPU_MARKERS, MARKER_END, MARKER_START, format_markdown, format_text, write_section  # noqa: E402
from app.quality.score import (  # noqa: E402
    GATE_TOLERANCE, Skip, gate, load_ours, load_truth, ours_runner, score, settings_for,
)

DATA = ROOT / "tests" / "data" / "quality" / "am2k"

# Variants of ours: name -> environment overrides laid over the process environment for
# Settings.from_env. A relative MODEL_PATH is taken from the project root. Edit freely.
VARIANTS: dict[str, dict[str, str]] = {
    "fp32": {"ONNX_RUNTIME": "onnxruntime", "ONNX_PRECISION": "fp32"},  # rembg's computation
    "int8": {"ONNX_RUNTIME": "onnxruntime", "ONNX_PRECISION": "int8"},
    "fp32 fast": {"ONNX_RUNTIME": "onnxruntime", "ONNX_PRECISION": "fp32", "ONNX_MEMORY_MODE": "fast"},
    "matting off": {"EDGE_MATTING": "off"},  # the model's mask as it was before app/pipeline/matte.py
    "edge matting": {"EDGE_MATTING": "band"},  # app/pipeline/matte.py (the default)
    # ONNX_RUNTIME=auto's two choices: OpenVINO (where the CPU has VNNI) and onnxruntime
    "openvino": {"ONNX_RUNTIME": "openvino"},
    "onnxruntime": {"ONNX_RUNTIME": "onnxruntime"},
}

REMBG, MATTING = "rembg", "rembg+matting"
LANCZOS_MASK = "ours, Lanczos mask"
COLUMNS = ("sad", "mse", "grad", "iou", "bf")


# --- the data --------------------------------------------------------------------------------

@dataclass
class Sample:
    name: str  # am2k-NN
    data: bytes  # the JPEG as uploaded
    truth: metrics.Truth

    @property
    def size(self) -> tuple[int, int]:  # (width, height), PIL's order
        h, w = self.truth.shape
        return w, h


def usage_error(message: str) -> NoReturn:
    """A bad argument or a missing data set: the message, exit status 2 (1 is the gate's)."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def image_paths(selection: Iterable[str] | None = None, data_dir: Path = DATA) -> list[Path]:
    """The photos of the set, all or those named (``am2k-03``, ``03`` or ``3``)."""
    paths = sorted(data_dir.glob("am2k-*.jpg"))
    if not paths:
        usage_error(f"quality set missing: no am2k-*.jpg under {data_dir}")
    if not selection:
        return paths
    by_name = {p.stem: p for p in paths}
    chosen = []
    for item in selection:
        item = item.strip()
        key = item if item.startswith("am2k-") else f"am2k-{int(item):02d}" if item.isdigit() else item
        if key not in by_name:
            usage_error(f"--images: no image {item!r} (have {', '.join(by_name)})")
        chosen.append(by_name[key])
    return chosen


def load_samples(paths: Sequence[Path]) -> list[Sample]:
    return [Sample(p.stem, p.read_bytes(), metrics.Truth(load_truth(p))) for p in paths]


# --- the methods -----------------------------------------------------------------------------

@dataclass
class Method:
    """``run(data) -> alpha`` (HxW uint8, any size: resized to the truth's afterwards, untimed)."""

    label: str
    run: Callable[[bytes], np.ndarray]
    model: str = ""  # the model file's sha256 prefix
    note: str = ""
    results: dict[str, dict[str, float]] = field(default_factory=dict)  # image -> metric -> value
    alphas: dict[str, np.ndarray] = field(default_factory=dict)  # as ``run`` returned them (kept for ours)


def lanczos_mask_runner(settings, segmenter) -> Callable[[bytes], np.ndarray]:
    """Ours with the model's map resized to the photo by PIL LANCZOS (onnx adapter: ``postprocess``
    without its guide), not brought up along the photo's edges."""
    from app.pipeline.run import decode

    def run(data: bytes) -> np.ndarray:
        rgb = decode(data, settings).rgb
        return segmenter.postprocess(segmenter.infer(segmenter.preprocess(rgb)), *rgb.shape[:2])

    return run


def rembg_session():
    from rembg import new_session

    return new_session("u2netp")


def rembg_runner(session, alpha_matting: bool = False) -> Callable[[bytes], np.ndarray]:
    from rembg import remove

    def plain(data: bytes) -> np.ndarray:
        return np.asarray(remove(Image.open(io.BytesIO(data)), session=session, only_mask=True).convert("L"))

    def matted(data: bytes) -> np.ndarray:
        # only_mask=True would return the plain mask: rembg checks it before alpha_matting
        heard = io.StringIO()
        with contextlib.redirect_stdout(heard):  # pymatting prints its solver's warnings
            cutout = remove(Image.open(io.BytesIO(data)), session=session, alpha_matting=True)
        if "WARNING" in heard.getvalue():
            matted.warned += 1
        return np.asarray(cutout.getchannel("A"))

    matted.warned = 0  # type: ignore[attr-defined]
    return matted if alpha_matting else plain


def warm_up_image() -> bytes:
    """A small JPEG (a dark square on a light ground) for one untimed call per method."""
    img = Image.new("RGB", (96, 64), (230, 225, 215))
    img.paste((40, 60, 30), (28, 12, 68, 52))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def measure(method: Method, samples: Sequence[Sample], keep: bool = False) -> None:
    """Run ``method`` on each sample (timed), score it at the truth's size (untimed)."""
    method.run(warm_up_image())
    if hasattr(method.run, "warned"):
        method.run.warned = 0  # type: ignore[attr-defined]  (the warm-up's do not count)
    for s in samples:
        t0 = time.perf_counter()
        alpha = method.run(s.data)
        elapsed = time.perf_counter() - t0
        if keep:
            method.alphas[s.name] = alpha
        method.results[s.name] = {**score(alpha, s.truth), "ms": elapsed * 1000.0}


# --- the table -------------------------------------------------------------------------------

def mean(method: Method, key: str) -> float:
    return float(np.mean([r[key] for r in method.results.values()]))


def _cells(values: dict[str, float], rembg_sad: float | None) -> list[str]:
    ratio = "" if not rembg_sad else f"{values['sad'] / rembg_sad:.3f}"
    return [f"{values['sad']:.2f}", f"{values['mse'] * 1000:.2f}", f"{values['grad']:.2f}",
            f"{values['iou']:.4f}", f"{values['bf']:.4f}", f"{values['ms']:.0f}", ratio]


HEADER = ["image", "method", "SAD", "MSE e-3", "Grad", "IoU", "BF@3px", "ms", "SAD/rembg"]


def table_rows(methods: Sequence[Method], names: Sequence[str], confidence: dict[str, float] | None,
               per_image: bool = True) -> list[list[str]]:
    """Rows of the table: per image each method, then each method's mean."""
    ref = next((m for m in methods if m.label == REMBG), None)
    default = methods[0]
    conf_col = confidence is not None
    rows: list[list[str]] = []
    if per_image:
        for name in names:
            for i, m in enumerate(methods):
                rsad = ref.results[name]["sad"] if ref else None
                row = [name if i == 0 else "", m.label, *_cells(m.results[name], rsad)]
                if conf_col:
                    row.append(f"{confidence[name]:.3f}" if m is default else "")
                rows.append(row)
            rows.append([])  # a separator
    for i, m in enumerate(methods):
        values = {k: mean(m, k) for k in (*COLUMNS, "ms")}
        row = ["mean" if i == 0 else "", m.label, *_cells(values, mean(ref, "sad") if ref else None)]
        if conf_col:
            row.append(f"{np.mean(list(confidence.values())):.3f}" if m is default else "")
        rows.append(row)
    return rows


def markdown_section(methods: Sequence[Method], names: Sequence[str], confidence: dict[str, float] | None,
                     facts: list[str], command: str) -> str:
    """The README section: the means, what was run, and the per-image rows folded away."""
    header = HEADER + (["conf"] if confidence is not None else [])
    means = format_markdown(header, table_rows(methods, names, confidence, per_image=False))
    full = format_markdown(header, table_rows(methods, names, confidence))
    return "\n".join([
        f"Cut-out quality on {len(names)} AM-2k photos with true alpha mattes (`{command}`), scored at full "
        "resolution (ours made at the photo's size; a mask of another size resized to the truth's with LANCZOS). "
        "SAD: sum |alpha - truth| / 1000; "
        "MSE x1e-3; Grad: gradient error (sigma 1.4, /1000); IoU at alpha >= 0.5; BF@3px: boundary "
        "F-measure within 3 px; ms: time per image. " + "; ".join(facts) + ".", "", means, "",
        "<details><summary>Per image</summary>", "", full, "", "</details>",
    ])


# --- machine facts ---------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sha_prefix(path: Path, n: int = 12) -> str:
    from adapters.modelfile import file_digest

    return file_digest(path)[:n]


def int8_build(seg, settings) -> tuple[str, bool] | None:
    """For an int8 model: (the file it serves and whether it is the pinned build, that flag)."""
    if seg.runtime().get("precision") != "int8":
        return None
    from adapters.onnx import int8_path
    from adapters.quantize import INT8_SHA256

    path = int8_path(Path(settings.model_path))
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if seg.info.file_sha256 == INT8_SHA256:
        return f"int8 model {shown}: the pinned build (adapters.quantize.INT8_SHA256)", True
    return f"int8 model {shown}: NOT the pinned build, calibrated on other photos (make int8 CALIBRATION=...)", False


def spearman(confidence: dict[str, float], sads: dict[str, float]) -> tuple[float, float]:
    from scipy.stats import spearmanr

    names = sorted(confidence)
    res = spearmanr([confidence[n] for n in names], [sads[n] for n in names])
    return float(res.statistic), float(res.pvalue)


# --- the run ---------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", help="comma-separated subset: am2k-03,05,... (default: all)")
    parser.add_argument("--variants", help=f"comma-separated subset of {', '.join(VARIANTS)}, or 'none' (default: all)")
    parser.add_argument("--no-matting", action="store_true", help="leave out rembg + alpha matting (its slow row)")
    parser.add_argument("--markdown", type=Path, metavar="PATH",
                        help=f"also write the table into PATH between {MARKER_START} and {MARKER_END}")
    parser.add_argument("--readme", action="store_true", help="--markdown README.md")
    parser.add_argument("--tolerance", type=float, default=GATE_TOLERANCE, help="the gate's allowance (default 0.02)")
    return parser.parse_args(argv)


def chosen_variants(spec: str | None) -> dict[str, dict[str, str]]:
    if spec is None:
        return dict(VARIANTS)
    if spec.strip().lower() in ("", "none"):
        return {}
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        usage_error(f"--variants: unknown {', '.join(unknown)} (have {', '.join(VARIANTS)}, or none)")
    return {n: VARIANTS[n] for n in names}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    markdown_path = ROOT / "README.md" if args.readme else args.markdown
    variants = chosen_variants(args.variants)
    samples = load_samples(image_paths(args.images.split(",") if args.images else None))
    names = [s.name for s in samples]

    from app.ops import tuning

    try:
        settings = settings_for({})
        tuning.configure(settings)
        default_seg = load_ours(settings)
    except Skip as exc:
        print(f"cannot run ours, the configured service: {exc}", file=sys.stderr)
        return 2
    precision = default_seg.runtime().get("precision", "?")
    onnx = default_seg.info.name == "onnx"
    edge = {"band": ", edge matting", "plain": ", plain resize"}.get(settings.edge_matting, "")
    label = f"ours ({precision}, {settings.onnx_runtime}, {settings.onnx_memory_mode}{edge})" \
        if onnx else f"ours ({default_seg.info.model_id}, {precision}, {default_seg.runtime().get('device', '?')})"
    methods = [Method(label, ours_runner(settings, default_seg), default_seg.info.file_sha256[:12])]
    facts = [
        f"CPU {cpu_model()}, {len(os.sched_getaffinity(0))} cores available, ours on "
        f"{settings.inference_threads} inference threads, rembg on onnxruntime's default",
        f"{default_seg.runtime().get('engine', '')}, model {default_seg.info.model_id} sha256 {methods[0].model} "
        f"({default_seg.runtime().get('precision_reason', '')})",
    ]
    built = int8_build(default_seg, settings)
    if built:
        facts.append(built[0])
    print("Cut-out quality against true alpha mattes (benchmarks/quality.py)")
    sides = [sorted(s.size) for s in samples]
    print(f"  {len(samples)} AM-2k photos from {DATA}, {min(a for a, _ in sides)}-{max(a for a, _ in sides)} px on the "
          f"short side, {min(b for _, b in sides)}-{max(b for _, b in sides)} on the long side; true mattes 8-bit")
    for fact in facts:
        print(f"  {fact}")
    print(f"  load average at start {os.getloadavg()[0]:.2f} (other jobs make the times indicative)")
    print("  ours: decode (at most MAX_DIMENSION = %d px, MAX_WORK_PIXELS = %d) + subject_alpha, timed; a mask of "
          "another size resized to the truth's with PIL LANCZOS to be scored, untimed; %s: the model's map resized "
          "to the photo with LANCZOS (before app/pipeline/upscale.py)" % (settings.max_dimension, settings.max_work_pixels,
                                                                         LANCZOS_MASK))
    print("  rembg: remove(PIL image, only_mask=True) on the full-size photo; rembg+matting: remove(PIL image, "
          "alpha_matting=True) with its defaults, the cutout's alpha; both timed from the JPEG bytes")
    sys.stdout.flush()

    measure(methods[0], samples, keep=True)
    default_model = methods[0].model
    if default_seg.info.name == "onnx":
        methods.append(Method(LANCZOS_MASK, lanczos_mask_runner(settings, default_seg), default_model))
        measure(methods[-1], samples)

    import rembg  # noqa: F401  (after U2NET_HOME is set)
    from importlib.metadata import version

    session = rembg_session()
    rembg_model = Path(os.environ["U2NET_HOME"]) / "u2netp.onnx"
    # the same file as ours, or the fp32 file ours' int8 build is made from (MODEL_PATH)
    same = sha_prefix(rembg_model) in (default_model, sha_prefix(Path(settings.model_path))) if rembg_model.is_file() else False
    methods.append(Method(REMBG, rembg_runner(session), sha_prefix(rembg_model) if rembg_model.is_file() else "?"))
    print(f"  rembg {version('rembg')}, model {rembg_model} sha256 {methods[-1].model}"
          f"{' (MODEL_PATH, the same file as ours or the one its int8 build is made from)' if same else ' (NOT ours)'}")
    measure(methods[-1], samples)
    if not args.no_matting:
        import pymatting

        methods.append(Method(MATTING, rembg_runner(session, alpha_matting=True), methods[-1].model,
                              note=f"pymatting {pymatting.__version__}"))
        t0 = time.perf_counter()
        measure(methods[-1], samples)
        warned = getattr(methods[-1].run, "warned", 0)
        print(f"  rembg+matting (pymatting {pymatting.__version__}) took {time.perf_counter() - t0:.1f} s "
              f"for {len(samples)} images" + (f"; pymatting's solver printed PERFORMANCE WARNINGs (its incomplete-"
              f"Cholesky preconditioner retried with a shift) on {warned} of them, hidden here" if warned else ""))
    del session

    for name, overrides in variants.items():
        shown = ", ".join(f"{k}={v}" for k, v in overrides.items())
        try:
            vsettings = settings_for(overrides)
            if vsettings == settings:
                raise Skip("these overrides change no setting (not a setting config knows yet, or the default already)")
            seg = load_ours(vsettings)
        except Skip as exc:
            print(f"  variant {name} ({shown}) skipped: {exc}")
            continue
        built = int8_build(seg, vsettings)
        own = " (own photos)" if built and not built[1] else ""
        method = Method(f"ours {name}{own}", ours_runner(vsettings, seg), seg.info.file_sha256[:12])
        print(f"  variant {name}: {shown}; model {seg.info.model_id} sha256 {method.model}" + (f"; {built[0]}" if built else ""))
        measure(method, samples)
        methods.append(method)
        del seg

    confidence = None
    try:
        from app.pipeline.confidence import mask_confidence
    except ImportError as exc:
        print(f"  mask confidence: app.pipeline.confidence.mask_confidence is missing ({exc}); no conf column")
    else:
        confidence = {n: float(mask_confidence(methods[0].alphas[n])) for n in names}

    header = HEADER + (["conf"] if confidence is not None else [])
    print()
    print(format_text(header, table_rows(methods, names, confidence)))
    print()
    print("SAD: sum |alpha - truth| / 1000 (alpha 0..1, full resolution); MSE: mean (alpha - truth)^2; "
          "Grad: gradient error, Gaussian-derivative gradients sigma 1.4, sum of squared magnitude "
          "differences / 1000; IoU: masks alpha >= 0.5; BF@3px: boundary F-measure, boundary pixels "
          "matched within 3 px; ms: time per image; SAD/rembg: SAD over rembg's (same model); "
          + ("conf: mask_confidence of our default's mask" if confidence is not None else ""))
    if confidence is not None:
        if len(names) >= 3:
            rho, p = spearman(confidence, {n: methods[0].results[n]["sad"] for n in names})
            verdict = "meets" if rho <= -0.5 else "misses"
            print(f"mask confidence vs SAD ({label}, {len(names)} images): Spearman rho = {rho:+.3f} (p = {p:.3f}); "
                  f"{verdict} the target of -0.5 or stronger")
            review = calibrate.check(confidence, {n: methods[0].results[n]["sad"] for n in names})
            facts.append(f"review threshold {review.threshold:.3f} (every photo with SAD over "
                         f"{calibrate.FLAWED_ABOVE:g} under it, {review.clean_flagged} clean ones too; leave-one-out: "
                         f"{review.held_out_caught} of {review.flawed} flawed caught, {review.held_out_flagged} clean flagged)")
            print(f"  {facts[-1]}")
        else:
            print("mask confidence vs SAD: fewer than 3 images, no correlation")

    lanczos = next((m for m in methods if m.label == LANCZOS_MASK), None)
    unmatted = next((m for m in methods if m.label == "ours matting off"), None)
    if lanczos is not None and (unmatted is not None or settings.edge_matting == "off"):
        unmatted = unmatted or methods[0]  # the guided upscaling alone against the plain resize
        guided, plain = mean(unmatted, "sad"), mean(lanczos, "sad")
        better = sum(unmatted.results[n]["sad"] < lanczos.results[n]["sad"] for n in names)
        print(f"mask brought up along the photo's edges vs a Lanczos resize, at full resolution: mean SAD "
              f"{guided:.2f} vs {plain:.2f} ({(guided / plain - 1) * 100:+.2f}%), lower on {better} of {len(names)} images")
    rembg = next(m for m in methods if m.label == REMBG)
    ours_sad, rembg_sad = mean(methods[0], "sad"), mean(rembg, "sad")
    passed, line = gate(ours_sad, rembg_sad, args.tolerance)
    total = time.perf_counter() - started
    print(f"total time {total:.1f} s")

    if markdown_path is not None:
        command = "python benchmarks/quality.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
        body = markdown_section(methods, names, confidence, facts, command)
        markers = (MARKER_START, MARKER_END) if onnx else GPU_MARKERS  # the GPU tier's table is its own
        if write_section(markdown_path, body, markers):
            print(f"wrote the table into {markdown_path} between {markers[0]} and {markers[1]}")
        else:
            print(f"{markdown_path} has no {markers[0]} ... {markers[1]} section: add those two lines "
                  "(each on its own line) where the table belongs and run again; nothing written")
    print(line)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
