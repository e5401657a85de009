"""The int8 u2netp at boot: the self-check the service runs before it serves the int8 build, and
whether this CPU is one int8 pays on.

The build itself (quantization, calibration, hashing; it needs the ``onnx`` package) is offline,
in :mod:`adapters.quantize`. This module is what the service needs of it, with nothing the service
does not already have (numpy; the model runs through the adapter it is given), and it imports no
other module of ``adapters``: ``adapters.onnx`` imports it, not the other way round.

:func:`self_check` runs a synthetic test card through the int8 model and compares the output map
with the fp32 model's map of it, stored here (one inference). :func:`cpu_has_vnni`, for an
``auto`` precision mode: int8 pays on CPUs with VNNI dot-product instructions; without them the
uint8 x int8 kernels are slower and, without ``reduce_range``, may saturate: the self-check is
there to catch that.
"""

from __future__ import annotations

import numpy as np

from config.settings import cpu_has_vnni  # noqa: F401 - read where ONNX_RUNTIME=auto reads it (config/settings.py)

PROFILE_SIDE = 320  # u2netp's input side (adapters.onnx.PROFILES["u2net"])


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


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean abs difference on the 0..255 scale, IoU of the masks at 128)."""
    mad = float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())
    fa, fb = a >= 128, b >= 128
    union = np.logical_or(fa, fb).sum()
    return mad, float(np.logical_and(fa, fb).sum() / union) if union else 1.0


def predict(seg, rgb: np.ndarray) -> np.ndarray:
    """``seg``'s raw output map for ``rgb`` (1x1xHxW): an ``adapters.onnx.OnnxSegmenter``, or
    anything with its ``preprocess`` and ``infer``."""
    return seg.infer(seg.preprocess(rgb))


def self_check_figures(int8_seg, fp32_seg=None) -> dict[str, float]:
    """int8 vs fp32 on synthetic_image(): ``block_mad`` (mean |diff| of the 8x8 block means of the
    output maps, 0..1) against the stored reference, and with ``fp32_seg`` also against that
    model live: ``raw_mad`` (full map), ``mad`` (masks, 0..255), ``iou``. Both arguments are
    segmenters of the u2net profile (:func:`predict`; ``postprocess`` makes the masks)."""
    rgb = synthetic_image()
    a = predict(int8_seg, rgb)
    figures = {"block_mad": float(np.abs(_blocks(a) - self_check_reference()).mean())}
    if fp32_seg is not None:
        b = predict(fp32_seg, rgb)
        h, w = rgb.shape[:2]
        mad, iou = agreement(int8_seg.postprocess(a, h, w), fp32_seg.postprocess(b, h, w))
        figures.update(raw_mad=float(np.abs(a - b).mean()), mad=mad, iou=iou)
    return figures


def self_check(int8_seg, fp32_seg=None) -> bool:
    """Boot check: the int8 model (in ``int8_seg``, the adapter the service would serve) maps the
    synthetic test card as the fp32 u2netp does, within the SELF_CHECK_* bounds. Without
    ``fp32_seg``: one int8 run against the stored reference (SELF_CHECK_REFERENCE; ~0.1-0.3 s on
    one core); with it: also against that model live (+ one fp32 run). False, never an exception,
    for a model that misses a bound or cannot be run (a graph that is not u2netp's, a CPU whose
    int8 kernels saturate). ``adapters.quantize.check`` does the same from files."""
    try:
        f = self_check_figures(int8_seg, fp32_seg)
    except Exception:  # noqa: BLE001 - any failure to run is a failed check
        return False
    ok = f["block_mad"] <= SELF_CHECK_MAX_BLOCK_MAD
    if fp32_seg is not None:
        ok = ok and f["raw_mad"] <= SELF_CHECK_MAX_RAW_MAD and f["mad"] <= SELF_CHECK_MAX_MAD and f["iou"] >= SELF_CHECK_MIN_IOU
    return ok
