"""The int8 u2netp, built offline: post-training static quantization (QDQ) of the default model,
reproducibly. Needs the ``onnx`` package; the service never imports this module (its boot-time
check of the result is :mod:`adapters.int8`).

``python -m adapters.quantize build models/u2netp.onnx models/u2netp.int8.onnx [--calibration-dir DIR]``

1. verifies the source (``SOURCE_SHA256``: the u2netp of ``adapters.modelfile``),
2. prepares it: opset 11 -> 13 (per-channel QDQ needs ``axis``), only the fused output kept (the
   service reads output 0; the six side sigmoids are dropped), constants folded (the Shape/Gather
   chains that size each Resize become constants),
3. calibrates on the photos of ``--calibration-dir`` (default: the committed fixture photos,
   ``tests/data/fixtures/images``) with the service's own preprocessing
   (``adapters.onnx.OnnxSegmenter.preprocess``), single-threaded, in a fixed order: every float
   tensor's min and max over the photos (``RECIPE``),
4. quantizes: weights int8 per channel (symmetric), activations uint8 (asymmetric), QDQ, every
   node but ``FP32_NODES`` (chosen by ``benchmarks/int8_sensitivity.py``: the layers whose
   quantization hurt the masks most, measured against the fp32 model's own masks on the
   calibration photos),
5. on the pinned photos (``CALIBRATION_SHA256``) checks the result's sha256 against
   ``INT8_SHA256``: the build is deterministic, so a different hash means a different
   onnxruntime/onnx version, and the file is refused rather than silently served. That build is
   skipped when the output already exists with the right hash.

Other photos (your own set, ``make int8 CALIBRATION=DIR``) are allowed: a WARNING on stderr says
the result is not the pinned build (its hash differs; ``make quality`` shows its SAD), the file
is written, marked with the photos' digest (``CUSTOM_KEY``), and self-checked as the service will
at boot (:func:`check`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from adapters import int8
from adapters.modelfile import file_digest
from adapters.onnx import u2net_segmenter

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION_DIR = ROOT / "tests" / "data" / "fixtures" / "images"

# sha256 of the fp32 source (models/u2netp.onnx, md5 8e83ca70e441ab06c318d82300c84806).
# The calibration photos: sha256 over "NAME SHA256\n" of each *.jpg in CALIBRATION_DIR, by name.
CALIBRATION_SHA256 = "87e30271732efa6e151577cfc983d0a659ca00ec8920a3826aba9d712768cf68"
SOURCE_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
TARGET_OPSET = 13
# The metadata key of a build from other photos: "<calibration digest> <number of photos>".
CUSTOM_KEY = "bgremove.calibration"


@dataclass(frozen=True)
class Recipe:
    """How to calibrate and which nodes stay fp32."""

    # Activation range per tensor: "minmax" (the calibration photos' extremes) or "percentile"
    # (the ``percentile``-th quantile over the calibration values, and 100 - that for a tensor
    # with negative values; a strided subsample of each large tensor).
    calibration: str = "minmax"
    percentile: float = 99.999
    fp32_nodes: tuple[str, ...] = ()
    # Photos augmented with their mirror image (twice the calibration samples, same photos).
    mirror: bool = False
    per_channel: bool = True
    # Op types to quantize; empty: all that onnxruntime's QDQ quantizer knows.
    op_types: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


# The fp32 island, from benchmarks/int8_sensitivity.py. One layer breaks int8: Conv_787 (stage-1
# decoder, 160x160, 32 -> 64 channels). One of its input channels (channel 14, the output of
# Conv_765 upsampled by Resize_785) reaches 228 where the others stay under 70, and Conv_787's
# output is a small difference of large terms (biases up to 1361 cancelled by weight 5.6 x that
# channel; outputs within +-26): a 0.2% error in that channel or its weight moves the output by
# several units. Quantizing that one Conv alone (the rest fp32), or even only its weights, moves
# the fixture masks as much as quantizing everything (mean |diff| 14/255, IoU 0.74).
# So the tensor is kept fp32 from where it is made to where it is used: Conv_765 (+ its Relu), the
# Resize, the Concat and Conv_787 (2.5% of the model's 19.8 GMAC). Everything else is int8.
FP32_NODES: tuple[str, ...] = ("Conv_765", "Relu_766", "Resize_785", "Concat_786", "Conv_787")
RECIPE = Recipe(calibration="minmax", fp32_nodes=FP32_NODES)
# sha256 of the int8 model that RECIPE builds with onnx 1.23.2 / onnxruntime 1.31.1 (numpy 2.4.6)
# from the 8 fixture photos; checked by every build.
INT8_SHA256 = "c4817be4e337de2abbe7cf6a2dc9366d06575e81430bdaeaa43cec449b3e4d27"


# ---------------------------------------------------------------------------------------------
# Step 2: prepare


def prepare(source: Path | str):
    """The fp32 model ready to quantize: opset 13, one output, constants folded, shapes inferred."""
    import onnx
    import onnxruntime as ort
    from onnx import version_converter

    model = onnx.load(str(source))
    if model.opset_import[0].version < TARGET_OPSET:
        model = version_converter.convert_version(model, TARGET_OPSET)
    keep = model.graph.output[0].name
    del model.graph.output[1:]
    _prune_dead_nodes(model.graph, keep)
    with tempfile.TemporaryDirectory(prefix="int8-prep-") as tmp:
        src, out = Path(tmp) / "in.onnx", Path(tmp) / "folded.onnx"
        onnx.save(model, str(src))
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        # Basic = constant folding and redundant-node removal only: no layout or fused ops, so
        # the result is still plain ONNX that the quantizer understands.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(out)
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        folded = onnx.load(str(out))
    folded = onnx.shape_inference.infer_shapes(folded)
    # Stable names: every node named (ORT keeps the original Conv_N names; the folding leaves none
    # unnamed, but guard anyway so nodes_to_exclude can refer to them).
    for i, node in enumerate(folded.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_anon_{i}"
    return folded


def _prune_dead_nodes(graph, output: str) -> None:
    needed = {output}
    live = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


# ---------------------------------------------------------------------------------------------
# Step 3: calibrate


def segmenter(model):
    """The service's adapter (``adapters.onnx.u2net_segmenter``) around ``model``: a path, the
    serialized bytes or an InferenceSession; a path or bytes run single-threaded."""
    return u2net_segmenter(_session(model))


def _session(model):
    import onnxruntime as ort

    if isinstance(model, ort.InferenceSession):
        return model
    so = single_thread_options()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # the quickest one-off run
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def load_rgb(path: Path | str) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def calibration_photos(directory: Path | str = CALIBRATION_DIR) -> list[Path]:
    photos = sorted(Path(directory).glob("*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no calibration photos (*.jpg) in {directory}")
    return photos


def calibration_digest(photos: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in photos:
        h.update(f"{p.name} {file_digest(p)}\n".encode())
    return h.hexdigest()


def calibration_inputs(photos: Sequence[Path], seg, mirror: bool = False) -> list[np.ndarray]:
    """The photos as the service feeds them to the model (``seg``: :func:`segmenter`)."""
    out = []
    for p in photos:
        rgb = load_rgb(p)
        out.append(seg.preprocess(rgb))
        if mirror:
            out.append(seg.preprocess(np.ascontiguousarray(rgb[:, ::-1])))
    return out


def single_thread_options():
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def float_tensors(model) -> list[str]:
    """Names of every float activation (graph input and node outputs), in graph order."""
    import onnx

    vi = {v.name: v for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    for node in model.graph.node:
        for o in node.output:
            v = vi.get(o)
            if v is not None and v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                names.append(o)
    return names


def collect_activations(model, inputs: Sequence[np.ndarray], tensors: Sequence[str]) -> Iterable[dict[str, np.ndarray]]:
    """For each input, every tensor in ``tensors`` (fp32, single-threaded, deterministic)."""
    import onnx
    import onnxruntime as ort

    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    present = {o.name for o in aug.graph.output}
    for name in tensors:
        if name not in present:
            aug.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    so = single_thread_options()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(aug.SerializeToString(), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    for x in inputs:
        values = sess.run(list(tensors), {in_name: x})
        yield dict(zip(tensors, values))


def compute_ranges(model, inputs: Sequence[np.ndarray], recipe: Recipe) -> dict[str, tuple[float, float]]:
    """Per-tensor (min, max) from the calibration inputs, as ``recipe.calibration`` says."""
    tensors = float_tensors(model)
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    samples: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for acts in collect_activations(model, inputs, tensors):
        for t, v in acts.items():
            lo[t] = min(lo[t], float(v.min()))
            hi[t] = max(hi[t], float(v.max()))
            if recipe.calibration == "percentile":
                samples[t].append(_subsample(v))
    if recipe.calibration == "minmax":
        return {t: (lo[t], hi[t]) for t in tensors}
    if recipe.calibration == "percentile":
        out = {}
        for t in tensors:
            allv = np.concatenate(samples[t])
            qlo = float(np.percentile(allv, 100.0 - recipe.percentile)) if lo[t] < 0 else lo[t]
            qhi = float(np.percentile(allv, recipe.percentile))
            out[t] = (min(qlo, 0.0), max(qhi, 0.0)) if lo[t] < 0 else (lo[t], max(qhi, 0.0))
        return out
    raise ValueError(f"unknown calibration {recipe.calibration!r}")


def _subsample(v: np.ndarray, limit: int = 1 << 18) -> np.ndarray:
    flat = v.reshape(-1)
    if flat.size <= limit:
        return flat.astype(np.float32, copy=True)
    step = flat.size // limit
    return flat[::step][:limit].astype(np.float32, copy=True)  # deterministic stride, no RNG


# ---------------------------------------------------------------------------------------------
# Step 4: quantize


def quantize(model, ranges: dict[str, tuple[float, float]], recipe: Recipe, nodes_to_quantize: Sequence[str] | None = None):
    """A QDQ int8 ModelProto of ``model`` (the prepared fp32 graph); ``nodes_to_quantize``: only
    those (the sensitivity analysis), default all but ``recipe.fp32_nodes``."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import save_and_reload_model_with_shape_infer

    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    m = save_and_reload_model_with_shape_infer(model)
    op_types = list(recipe.op_types) or sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # as quantize_static
    data = TensorsData(
        CalibrationMethod.MinMax,
        {t: TensorData(lowest=np.float32(a), highest=np.float32(b)) for t, (a, b) in ranges.items()},
    )
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True, **recipe.extra}
    q = QDQQuantizer(
        m,
        recipe.per_channel,
        False,  # reduce_range: not needed with VNNI (and it costs a bit of precision)
        QuantType.QInt8,
        QuantType.QUInt8,
        data,
        list(nodes_to_quantize or []),  # empty: all
        list(recipe.fp32_nodes),
        op_types,
        extra,
    )
    q.quantize_model()
    out = q.model.model
    # Drop the build's temporary metadata so the bytes depend on the recipe alone.
    del out.metadata_props[:]
    out.producer_name = "bgremove adapters.int8"  # its name when INT8_SHA256 was pinned: part of the hash
    out.producer_version = "1"
    return out


def build_model(source: Path | str, recipe: Recipe = RECIPE, photos: Sequence[Path] | None = None):
    prepared = prepare(source)
    seg = segmenter(serialize(prepared))
    inputs = calibration_inputs(photos if photos is not None else calibration_photos(), seg, recipe.mirror)
    ranges = compute_ranges(prepared, inputs, recipe)
    return quantize(prepared, ranges, recipe)


def serialize(model) -> bytes:
    return model.SerializeToString(deterministic=True)




def build(
    source: Path | str,
    dest: Path | str,
    *,
    check: bool = True,
    recipe: Recipe = RECIPE,
    calibration_dir: Path | str = CALIBRATION_DIR,
    keep_custom: bool = False,
) -> Path:
    """Build the int8 model at ``dest``. From the pinned photos: hash-checked against INT8_SHA256
    (``check``) and skipped when ``dest`` already has it. From other photos: warned about on
    stderr, written, marked (:data:`CUSTOM_KEY`) and self-checked. ``keep_custom``: a build from
    other photos already at ``dest`` stays (``make model`` must not undo ``make int8``)."""
    source, dest = Path(source), Path(dest)
    photos = calibration_photos(calibration_dir)
    photos_digest = calibration_digest(photos)
    pinned = photos_digest == CALIBRATION_SHA256
    if pinned and check and dest.is_file() and file_digest(dest) == INT8_SHA256:
        return dest
    custom = custom_calibration(dest) if keep_custom and dest.is_file() else ""
    if custom:
        digest, count = custom.split()
        print(f"{dest}: kept, a build from other photos ({count} photos, digest {digest[:12]}); "
              "`make int8` rebuilds the pinned one", file=sys.stderr)
        return dest
    got = file_digest(source)
    if got != SOURCE_SHA256:
        raise RuntimeError(f"{source}: sha256 {got}, expected the u2netp of adapters.modelfile ({SOURCE_SHA256})")
    if not pinned:
        print(f"WARNING: calibration photos in {calibration_dir} ({len(photos)} *.jpg) are not the pinned set "
              f"(CALIBRATION_SHA256, {CALIBRATION_DIR.relative_to(ROOT)}): building anyway; the int8 model's "
              f"sha256 will differ from INT8_SHA256; run `make quality` to see its SAD", file=sys.stderr)
    model = build_model(source, recipe, photos)
    if not pinned:
        model.metadata_props.add(key=CUSTOM_KEY, value=f"{photos_digest} {len(photos)}")
    blob = serialize(model)
    digest = hashlib.sha256(blob).hexdigest()
    if pinned and check and digest != INT8_SHA256:
        raise RuntimeError(
            f"int8 build: sha256 {digest}, expected {INT8_SHA256} (a different onnx/onnxruntime version); "
            "not writing it"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(blob)
    os.replace(partial, dest)
    if not pinned:
        if self_checked(dest, source):
            print(f"{dest}: passes the boot self-check (adapters.int8)", file=sys.stderr)
        else:
            print(f"WARNING: {dest} fails the boot self-check (adapters.int8): the service will not serve it "
                  "(ONNX_PRECISION=auto serves fp32, int8 refuses to boot)", file=sys.stderr)
    return dest


def custom_calibration(path: Path | str) -> str:
    """For a build from other photos, its :data:`CUSTOM_KEY` ("<digest> <photos>"); else ""."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a readable model: not a build to keep
        return ""
    return next((p.value for p in model.metadata_props if p.key == CUSTOM_KEY), "")


# ---------------------------------------------------------------------------------------------
# Checking a build, from files


def self_checked(model, fp32_model=None) -> bool:
    """``adapters.int8.self_check`` of ``model`` (a path, bytes or session), against ``fp32_model``
    live too when given; False for a model that cannot even be loaded."""
    try:
        seg = segmenter(model)
        ref = segmenter(fp32_model) if fp32_model is not None else None
    except Exception:  # noqa: BLE001 - onnxruntime raises its own pybind types
        return False
    return int8.self_check(seg, ref)


def predict(model, rgb: np.ndarray) -> np.ndarray:
    """The model's raw output map for ``rgb`` with the service's preprocessing (1x1xHxW)."""
    return int8.predict(segmenter(model), rgb)


def mask_of(model, rgb: np.ndarray) -> np.ndarray:
    """The service's mask (adapters.onnx preprocess -> model -> postprocess) of ``rgb``."""
    return segmenter(model).mask(rgb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.quantize")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="quantize the fp32 u2netp to int8 (the pinned build: skipped when dest has its hash)")
    b.add_argument("source", type=Path)
    b.add_argument("dest", type=Path)
    b.add_argument("--calibration-dir", type=Path, default=CALIBRATION_DIR,
                   help="the calibration photos, *.jpg (default: the pinned set, %(default)s); other photos: a warning")
    b.add_argument("--keep-custom", action="store_true", help="leave a build from other photos at dest in place")
    b.add_argument("--no-check", action="store_true", help="write the pinned build whatever its hash (development)")
    args = parser.parse_args(argv)
    if args.command == "build":
        path = build(args.source, args.dest, check=not args.no_check, calibration_dir=args.calibration_dir,
                     keep_custom=args.keep_custom)
        print(f"{path}: sha256 {file_digest(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
