"""Putting the subject onto a background. Pure functions of arrays."""

from __future__ import annotations

import numpy as np
from PIL import Image


def combine_alpha(mask: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """The subject's alpha: the model's mask, within the input's own transparency if it had any."""
    if alpha is None:
        return mask
    return ((mask.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


def mask_image(alpha: np.ndarray) -> Image.Image:
    """The alpha alone, as an 8-bit greyscale image."""
    return Image.fromarray(alpha, "L")


def cutout_array(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """HxWx4 uint8 with the original colours and ``alpha``.

    Colours are not darkened at soft edges (rembg's composite over transparent black
    does darken them); fully transparent pixels are zeroed, which nobody sees and
    which keeps PNG/WebP output small.
    """
    rgba = np.dstack((rgb, alpha))
    rgba[alpha == 0] = 0
    return rgba


def cutout(rgb: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """The cut-out as an RGBA image (see :func:`cutout_array`)."""
    return Image.fromarray(cutout_array(rgb, alpha), "RGBA")


def on_background(rgba: np.ndarray, background: tuple[int, int, int] | None) -> Image.Image:
    """An RGBA result kept transparent (``background`` None) or flattened over a solid colour."""
    if background is None:
        return Image.fromarray(rgba, "RGBA")
    return over_color(np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3]), background)


def over_color(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int]) -> Image.Image:
    """The subject blended over a solid colour (RGB)."""
    fg = Image.fromarray(rgb, "RGB")
    return Image.composite(fg, Image.new("RGB", fg.size, color), Image.fromarray(alpha, "L"))


def refine_foreground(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The subject's own colours at soft edges (HxWx3 uint8), so that hair and fur do not carry the old background.

    A pixel at a soft edge is a mix I = a·F + (1 − a)·B of the subject F and the
    background B. Blur-fusion foreground estimation (Forte & Pitié, "Approximate Fast
    Foreground Colour Estimation", ICIP 2021) recovers F from local means of the
    subject and of the background: a wide pass, then a narrow one. Where alpha is 1 the
    colours are unchanged; where it is 0 they are invisible anyway.
    """
    image = rgb.astype(np.float32) / np.float32(255.0)
    a = (alpha.astype(np.float32) / np.float32(255.0))[..., None]
    side = max(alpha.shape)
    wide, narrow = max(2, round(side * 0.09)), max(1, round(side * 0.006))
    fg, bg = _blur_fusion(image, image, image, a, wide)
    fg, _ = _blur_fusion(image, fg, bg, a, narrow)
    return (fg * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def _blur_fusion(image: np.ndarray, fg: np.ndarray, bg: np.ndarray, a: np.ndarray, radius: int):
    eps = np.float32(1e-5)
    blurred_a = _box_mean(a, radius)
    blurred_fg = _box_mean(fg * a, radius) / (blurred_a + eps)
    blurred_bg = _box_mean(bg * (np.float32(1.0) - a), radius) / ((np.float32(1.0) - blurred_a) + eps)
    estimate = blurred_fg + a * (image - a * blurred_fg - (np.float32(1.0) - a) * blurred_bg)
    return np.clip(estimate, 0.0, 1.0), blurred_bg


def _box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)² box clipped to the image (HxWxC float32), via running sums: O(1) per pixel for any r."""
    out = values
    for axis in (0, 1):
        n = out.shape[axis]
        csum = np.cumsum(out, axis=axis, dtype=np.float32)
        csum = np.concatenate((np.zeros_like(np.take(csum, [0], axis=axis)), csum), axis=axis)
        idx = np.arange(n)
        hi, lo = np.minimum(n, idx + radius + 1), np.maximum(0, idx - radius)
        shape = [1, 1, 1]
        shape[axis] = n
        out = (np.take(csum, hi, axis=axis) - np.take(csum, lo, axis=axis)) / (hi - lo).astype(np.float32).reshape(shape)
    return out
