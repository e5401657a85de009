"""The request pipeline, one plain function per step: decode -> segment -> compose -> encode.

No Flask here: blueprints translate HTTP to these calls and back.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from app import compose
from app.gate import InferenceGate
from app.imaging import DecodedImage, decode_image, encode_image
from adapters import Segmenter
from config import Settings

__all__ = ["decode", "segment", "encode"]


def decode(data: bytes, settings: Settings) -> DecodedImage:
    return decode_image(data, max_dimension=settings.max_dimension, max_pixels=settings.max_input_pixels)


def segment(image: DecodedImage, segmenter: Segmenter, gate: InferenceGate, deadline: float) -> np.ndarray:
    """The subject's alpha (HxW uint8) for ``image``, waiting for an inference slot until ``deadline``."""
    rgb = image.rgb
    if image.alpha is not None:  # the model sees transparent areas as white, not as their hidden colours
        rgb = np.asarray(compose.over_color(image.rgb, image.alpha, (255, 255, 255)))
    with gate.slot(timeout_s=deadline - time.monotonic()):
        mask = segmenter.mask(rgb)
    return compose.combine_alpha(mask, image.alpha)


def encode(img: Image.Image, fmt: str, quality: int, image: DecodedImage, settings: Settings) -> bytes:
    return encode_image(
        img, fmt, quality=quality, png_compress_level=settings.png_compress_level, icc_profile=image.icc_profile
    )
