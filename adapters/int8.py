"""An int8 u2netp: post-training static quantization (QDQ) of the default model, rebuilt reproducibly.

``python -m adapters.int8 build models/u2netp.onnx models/u2netp.int8.onnx``

1. verifies the source (``SOURCE_SHA256``: the u2netp of ``adapters.modelfile``),
2. prepares it: opset 11 -> 13 (per-channel QDQ needs ``axis``), only the fused output kept (the
   service reads output 0; the six side sigmoids are dropped), constants folded (the Shape/Gather
   chains that size each Resize become constants),
3. calibrates on the fixture photos (``../shared/fixtures/images``) with the service's own
   preprocessing (``adapters.onnx.OnnxSegmenter.preprocess``), single-threaded, in a fixed order:
   every float tensor's min and max over the photos (``RECIPE``); the photos themselves are
   checked first (``CALIBRATION_SHA256``),
4. quantizes: weights int8 per channel (symmetric), activations uint8 (asymmetric), QDQ, every
   node but ``FP32_NODES`` (chosen by ``benchmarks/int8_sensitivity.py``: the layers whose
   quantization hurt the masks most, measured against the fp32 model's own masks on the
   calibration photos),
5. checks the result's sha256 against ``INT8_SHA256``: the build is deterministic, so a different
   hash means a different onnxruntime/onnx version or different calibration photos, and the file
   is refused rather than silently served.

The build is skipped when the output already exists with the right hash.

At boot the service may run :func:`self_check` (a synthetic test card through the int8 model,
compared with the fp32 model's map of it, stored here; one inference) and, for an ``auto``
precision mode, :func:`cpu_has_vnni` (int8 pays on CPUs with VNNI dot-product instructions;
without them the uint8 x int8 kernels are slower and, without ``reduce_range``, may saturate:
the self-check is there to catch that). Only the build needs the ``onnx`` package; ``self_check``
and ``cpu_has_vnni`` need what the service already has (numpy, Pillow, onnxruntime).
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

from adapters.modelfile import file_digest

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION_DIR = ROOT.parent / "shared" / "fixtures" / "images"

# sha256 of the fp32 source (models/u2netp.onnx, md5 8e83ca70e441ab06c318d82300c84806).
# The calibration photos: sha256 over "NAME SHA256\n" of each *.jpg in CALIBRATION_DIR, by name.
CALIBRATION_SHA256 = "87e30271732efa6e151577cfc983d0a659ca00ec8920a3826aba9d712768cf68"
SOURCE_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
TARGET_OPSET = 13
PROFILE_SIDE = 320  # u2netp's input side (adapters.onnx.PROFILES["u2net"])


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


def segmenter(session):
    """The service's adapter (adapters.onnx.OnnxSegmenter, u2net profile) around ``session``: its
    preprocess / infer / postprocess are what the service runs."""
    from adapters.base import ModelInfo
    from adapters.onnx import PROFILES, OnnxSegmenter

    p = PROFILES["u2net"]
    info = ModelInfo(name="onnx", model_id="u2netp", input_size=(p.size, p.size), parameters=0,
                     device="cpu", file_sha256="", file_size_bytes=0)
    return OnnxSegmenter(session, p, info)


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
    out.producer_name = "bgremove adapters.int8"
    out.producer_version = "1"
    return out


def build_model(source: Path | str, recipe: Recipe = RECIPE, photos: Sequence[Path] | None = None):
    prepared = prepare(source)
    seg = segmenter(_session(serialize(prepared)))
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
) -> Path:
    """Build the int8 model at ``dest`` (skipped if already there with INT8_SHA256)."""
    source, dest = Path(source), Path(dest)
    if check and INT8_SHA256 and dest.is_file() and file_digest(dest) == INT8_SHA256:
        return dest
    got = file_digest(source)
    if got != SOURCE_SHA256:
        raise RuntimeError(f"{source}: sha256 {got}, expected the u2netp of adapters.modelfile ({SOURCE_SHA256})")
    photos = calibration_photos(calibration_dir)
    if check and calibration_digest(photos) != CALIBRATION_SHA256:
        raise RuntimeError(
            f"calibration photos in {calibration_dir} ({', '.join(p.name for p in photos)}) are not the "
            "fixture set this recipe was calibrated on (CALIBRATION_SHA256)"
        )
    blob = serialize(build_model(source, recipe, photos))
    digest = hashlib.sha256(blob).hexdigest()
    if check and digest != INT8_SHA256:
        raise RuntimeError(
            f"int8 build: sha256 {digest}, expected {INT8_SHA256} (a different onnx/onnxruntime version "
            "or different calibration photos); not writing it"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(blob)
    os.replace(partial, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# Boot-time helpers


def synthetic_image(size: int = 320) -> np.ndarray:
    """A deterministic test card (no file needed): an orange, shaded ellipse with a darker stripe
    pattern on a blue-grey vertical gradient, ``size`` x ``size`` RGB uint8."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    bg = np.stack([0.55 + 0.25 * y, 0.62 + 0.2 * y, 0.72 + 0.15 * y], axis=-1)
    r2 = ((x - 0.5) / 0.3) ** 2 + ((y - 0.55) / 0.36) ** 2
    inside = (r2 <= 1.0)[..., None]
    shade = (1.0 - 0.35 * r2)[..., None]
    stripes = (0.85 + 0.15 * np.sin(x * 40.0 + y * 12.0))[..., None]
    fg = np.array([0.95, 0.5, 0.15], np.float32) * shade * stripes
    img = np.where(inside, fg, bg)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# The fp32 u2netp's output map of synthetic_image() (adapters.onnx preprocessing), as 40 x 40 means
# of 8 x 8 blocks, uint16 (x 65535) little-endian, zlib, base64: what self_check compares the int8
# model's map with when no fp32 model is given (tests/test_int8.py checks it against the model).
SELF_CHECK_REFERENCE = (
    "eNq1lltIFFEYx79zZmav6HoJuqB0UyqpaLvRWqQQYRJUVGAmSMlKDz1J0YNEVC+lDxXRg2EgQlHpQ0VaEIhCDxZEPViR"
    "GERJN80iNdd1d8/pzLqzO2fmzOwm9H3MssPO+e3/O+c7/zkYEJeZBhIkBg+7/p1lRcQgsQvPkQcCHtbx5hLaOJ44V5pZ"
    "6f/goQyeTTcnKZ69NgT5MOFdHYhWldecDBT7Flk+beYZyRj2oRMVtx5dmB6nMzRMJ+nByMWeuv1bMLKsIlUvXw8CJ2Qv"
    "Xvi4ixKqD0JH6bungyuctjxkonnA7+8biVBRxGjbeEOZS1gtFvQzAjd8Xtc+GqVWQejZCX+Zkoan/eKAmbwPHyPULgg9"
    "/mOkEAt4EsdDIEMNHG6fpumC0GD3K24tjTw1JVZrwH8uRjOImzSwQxbuX4j/j3qvwBqAzkhCQTqFY731nBpNnaZZYusa"
    "nn8lTOJPk+Q4K3YLaVmlcNXxPAVyYHft7ziLcAxi0TkHTrmSVarqZANvHhS1hjgeseER2t/ti2uSEjTZ0ClFEOyPmnjE"
    "ci47hy8xhmTBc0EzlH6JsdGxBIOk4a2MbXLKcZLKVEDheApchtvfCMejtrzrpN4tCfWhOO8JbP2u8fTqLOslPR5tj2Ed"
    "DyXuG6HgK6H6pNx3Y2wjV1044XtmngRLoOJFjBKLNK9v60gWxslu5nlqP7pgWdt0hjSV19y7FOx4Tnhe98tUp9XsRWnV"
    "eacND7MOzC0sj2TGI/QtfVYqpeGVwsaHkeQIe17twAOk92MJZMOJQWaOMBS4S4w8EfEP7ahWOL+TDO6nKnRBF+y9H9H1"
    "sZjH3iIv70lY6FeI8xwvLChoGtX3s6jWoZB/vQz2PM0FfTC8s2mKGLyF6GhrYz+P5gmqE70xVWI+eCpzp6JCByT0TdQb"
    "3M52J7Y9r/FvpRwY27B8YNLgCISdE9zDdypLwKkbh02eig0nLZXohs2OG8eOvD5EQ4wSZp99tOFT6PSebCenDZt4muOk"
    "iLMr42DdU4LeFw9WdzTuPROs3eW/JvlA7RFksQqaPsmgEel63sHSC1ns8rAqZcGsIa6jlYQ+yaBcNNPG/uBTBllXr4iZ"
    "mpVZ9+VT9Xf9nZPlXw91Qs0="
)
SELF_CHECK_BLOCK = 8

# self_check bounds, measured on synthetic_image() with the committed model (onnxruntime 1.31.1,
# AVX-512 VNNI): int8 vs fp32 block-mean map |diff| 0.00016, full map 0.0003, mask |diff| 0.06
# (0..255), IoU 0.9993. The naive all-int8 model (quality-set SAD 155 instead of 38) gives
# 0.0094 / 0.0096 / 1.08 / 0.994: the map's difference is the sensitive figure (the card itself is
# easy to cut out); zeroing one weight tensor of the int8 file gives 0.0002-0.0095 depending on the
# layer (U2-Net's residual paths make most single layers matter little on an easy card).
SELF_CHECK_MAX_BLOCK_MAD = 0.0008
SELF_CHECK_MAX_RAW_MAD = 0.001
SELF_CHECK_MAX_MAD = 0.5
SELF_CHECK_MIN_IOU = 0.99


def self_check_reference() -> np.ndarray:
    import base64
    import zlib

    side = PROFILE_SIDE // SELF_CHECK_BLOCK
    raw = zlib.decompress(base64.b64decode(SELF_CHECK_REFERENCE))
    return (np.frombuffer(raw, "<u2").astype(np.float64) / 65535.0).reshape(side, side)


def _blocks(prediction: np.ndarray) -> np.ndarray:
    side = PROFILE_SIDE // SELF_CHECK_BLOCK
    p = prediction.reshape(PROFILE_SIDE, PROFILE_SIDE).astype(np.float64)
    return p.reshape(side, SELF_CHECK_BLOCK, side, SELF_CHECK_BLOCK).mean(axis=(1, 3))


def _session(model):
    import onnxruntime as ort

    if isinstance(model, ort.InferenceSession):
        return model
    so = single_thread_options()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # the quickest one-off run
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def predict(model, rgb: np.ndarray) -> np.ndarray:
    """The model's raw output map for ``rgb`` with the service's preprocessing (1x1xHxW)."""
    seg = segmenter(_session(model))
    return seg.infer(seg.preprocess(rgb))


def mask_of(model, rgb: np.ndarray) -> np.ndarray:
    """The service's mask (adapters.onnx preprocess -> model -> postprocess) of ``rgb``."""
    from adapters.onnx import OnnxSegmenter

    return OnnxSegmenter.postprocess(predict(model, rgb), *rgb.shape[:2])


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean abs difference on the 0..255 scale, IoU of the masks at 128)."""
    mad = float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())
    fa, fb = a >= 128, b >= 128
    union = np.logical_or(fa, fb).sum()
    return mad, float(np.logical_and(fa, fb).sum() / union) if union else 1.0


def self_check_figures(int8_model, fp32_model=None) -> dict[str, float]:
    """int8 vs fp32 on synthetic_image(): ``block_mad`` (mean |diff| of the 8x8 block means of the
    output maps, 0..1) against the stored reference, and with ``fp32_model`` (a path or session)
    also against that model live: ``raw_mad`` (full map), ``mad`` (masks, 0..255), ``iou``."""
    from adapters.onnx import OnnxSegmenter

    rgb = synthetic_image()
    a = predict(int8_model, rgb)
    figures = {"block_mad": float(np.abs(_blocks(a) - self_check_reference()).mean())}
    if fp32_model is not None:
        b = predict(fp32_model, rgb)
        mad, iou = agreement(OnnxSegmenter.postprocess(a, *rgb.shape[:2]), OnnxSegmenter.postprocess(b, *rgb.shape[:2]))
        figures.update(raw_mad=float(np.abs(a - b).mean()), mad=mad, iou=iou)
    return figures


def self_check(int8_model, fp32_model=None) -> bool:
    """Boot check: the int8 model (an InferenceSession or a path) maps the synthetic test card as
    the fp32 u2netp does, within the SELF_CHECK_* bounds. Without ``fp32_model``: one int8 run
    against the stored reference (SELF_CHECK_REFERENCE; ~0.1-0.3 s on one core, the service can
    pass its own session); with it (path or session): also against that model live (+ one fp32
    session and run). False, never an exception, for a model that misses a bound or cannot be
    loaded or run (a corrupt file, a CPU whose int8 kernels saturate)."""
    try:
        f = self_check_figures(int8_model, fp32_model)
    except Exception:  # noqa: BLE001 - any failure to load or run is a failed check
        return False
    ok = f["block_mad"] <= SELF_CHECK_MAX_BLOCK_MAD
    if fp32_model is not None:
        ok = ok and f["raw_mad"] <= SELF_CHECK_MAX_RAW_MAD and f["mad"] <= SELF_CHECK_MAX_MAD and f["iou"] >= SELF_CHECK_MIN_IOU
    return ok


def cpu_has_vnni() -> bool:
    """True where the CPU has AVX-512 VNNI or AVX-VNNI (Linux: /proc/cpuinfo flags); else False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "avx512_vnni" in flags or "avx_vnni" in flags
    except OSError:
        return False
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.int8")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="quantize the fp32 u2netp to int8 (skipped when dest has the expected hash)")
    b.add_argument("source", type=Path)
    b.add_argument("dest", type=Path)
    b.add_argument("--calibration-dir", type=Path, default=CALIBRATION_DIR, help="the fixture photos (default: %(default)s)")
    b.add_argument("--no-check", action="store_true", help="write the result whatever its hash (development)")
    args = parser.parse_args(argv)
    if args.command == "build":
        path = build(args.source, args.dest, check=not args.no_check, calibration_dir=args.calibration_dir)
        print(f"{path}: sha256 {file_digest(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
