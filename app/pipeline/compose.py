"""Putting the subject onto a background. Pure functions of arrays."""

from __future__ import annotations

import math

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
    # each pixel as one 32-bit word, zeroed where alpha is 0: 12 against 21 ms at 1.5 MP for the
    # uint8 array with a broadcast mask (a boolean index would list every pixel, 16 bytes each)
    np.copyto(rgba.view(np.uint32)[..., 0], 0, where=alpha == 0)
    return rgba


def cutout(rgb: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """The cut-out as an RGBA image (see :func:`cutout_array`)."""
    return Image.fromarray(cutout_array(rgb, alpha), "RGBA")


def on_background(rgba: np.ndarray, background: tuple[int, int, int] | None) -> Image.Image:
    """An RGBA result kept transparent (``background`` None) or flattened over a solid colour."""
    if background is None:
        return Image.fromarray(rgba, "RGBA")
    return over_color(rgba[..., :3], rgba[..., 3], background)


def over_color(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int]) -> Image.Image:
    """The subject blended over a solid colour (RGB), pasted a strip of rows at a time: Pillow holds
    RGB at 4 bytes a pixel, and a whole-image composite would hold the photo twice more."""
    height, width = alpha.shape
    out = Image.new("RGB", (width, height), color)
    for top in range(0, height, STRIP_ROWS):
        rows = slice(top, top + STRIP_ROWS)
        out.paste(Image.fromarray(np.ascontiguousarray(rgb[rows]), "RGB"), (0, top),
                  Image.fromarray(np.ascontiguousarray(alpha[rows]), "L"))
    return out


def over_color_array(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """:func:`over_color`'s pixels as an array (HxWx3 uint8), blended by strips of rows with Pillow's
    own arithmetic (``paste`` with an "L" mask: (bg·(255 − a) + fg·a) / 255, rounded as its DIV255),
    so the two agree to the byte; the Pillow image and its array copy are never both held (at 12 MP
    that was 87 MB for what is 36 MB)."""
    out = np.empty_like(rgb)
    background = np.array(color, np.uint32)
    for top in range(0, alpha.shape[0], STRIP_ROWS):
        a = alpha[top:top + STRIP_ROWS, :, None].astype(np.uint32)
        mixed = rgb[top:top + STRIP_ROWS] * a + background * (255 - a) + 128
        out[top:top + STRIP_ROWS] = ((mixed >> 8) + mixed) >> 8
    return out


# A photo of more pixels has its local means estimated on a grid of this many pixels (see refine_foreground).
REFINE_GRID_PIXELS = 1 << 20
STRIP_ROWS = 128


def refine_foreground(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The subject's own colours at soft edges (HxWx3 uint8), so that hair and fur do not carry the old background.

    A pixel at a soft edge is a mix I = a·F + (1 − a)·B of the subject F and the
    background B. Blur-fusion foreground estimation (Forte & Pitié, "Approximate Fast
    Foreground Colour Estimation", ICIP 2021) recovers F from local means of the
    subject and of the background: a wide pass, then a narrow one. Where alpha is 1 the
    colours are unchanged; where it is 0 they are invisible anyway.

    Over :data:`REFINE_GRID_PIXELS` the local means, which are smooth, are estimated on a grid
    of that many pixels and brought back by strips (:func:`_refine_on_grid`): done at full size,
    a 12 MP photo would hold several 145 MB float copies.
    """
    height, width = alpha.shape
    side = max(height, width)
    wide, narrow = max(2, round(side * 0.09)), max(1, round(side * 0.006))
    if height * width > REFINE_GRID_PIXELS:
        return _refine_on_grid(rgb, alpha, wide, narrow)
    image = rgb.astype(np.float32) / np.float32(255.0)
    a = (alpha.astype(np.float32) / np.float32(255.0))[..., None]
    fg, bg = _blur_fusion(image, image, image, a, wide)
    fg, _ = _blur_fusion(image, fg, bg, a, narrow)
    return (fg * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def _refine_on_grid(rgb: np.ndarray, alpha: np.ndarray, wide: int, narrow: int) -> np.ndarray:
    """:func:`refine_foreground` of a large photo: both passes on a grid of at most
    :data:`REFINE_GRID_PIXELS`, then the narrow pass's local means resampled (bilinear) and its
    estimate made at full size, a strip of rows at a time."""
    height, width = alpha.shape
    scale = math.sqrt(REFINE_GRID_PIXELS / (height * width))
    grid = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = shrunk(rgb, grid)
    a = (np.asarray(Image.fromarray(alpha, "L").resize(grid, Image.Resampling.BOX), np.float32) / np.float32(255.0))[..., None]
    fg, bg = _blur_fusion(image, image, image, a, max(1, round(wide * scale)))
    blurred_fg, blurred_bg = _local_means(fg, bg, a, max(1, round(narrow * scale)))
    del image, a, fg, bg
    maps = [Image.fromarray(np.ascontiguousarray(m[..., c]), "F") for m in (blurred_fg, blurred_bg) for c in range(3)]
    out = np.empty((height, width, 3), np.uint8)
    sy = grid[1] / height
    for top in range(0, height, STRIP_ROWS):
        rows = min(STRIP_ROWS, height - top)
        box = (0.0, top * sy, float(grid[0]), (top + rows) * sy)
        means = [np.asarray(m.resize((width, rows), Image.Resampling.BILINEAR, box=box)) for m in maps]
        f, b = np.stack(means[:3], axis=-1), np.stack(means[3:], axis=-1)
        i = rgb[top:top + rows] * np.float32(1.0 / 255.0)
        s = (alpha[top:top + rows] * np.float32(1.0 / 255.0))[..., None]
        estimate = f + s * (i - s * f - (np.float32(1.0) - s) * b)
        np.clip(estimate, 0.0, 1.0, out=estimate)
        out[top:top + rows] = estimate * np.float32(255.0) + np.float32(0.5)
    return out


def shrunk(rgb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``rgb`` box-averaged onto ``grid`` (HxWx3 float32, 0-1; an HxW array gives HxW), a strip at a
    time: Pillow would otherwise copy the whole photo at 4 bytes a pixel."""
    height, width = rgb.shape[:2]
    sy = height / grid[1]
    mode = "RGB" if rgb.ndim == 3 else "L"
    out = np.empty((grid[1], grid[0], *rgb.shape[2:]), np.float32)
    step = max(1, STRIP_ROWS * grid[1] // height)  # grid rows per strip
    for row in range(0, grid[1], step):
        end = min(grid[1], row + step)
        first, last = int(row * sy), min(height, math.ceil(end * sy))
        part = Image.fromarray(np.ascontiguousarray(rgb[first:last]), mode)
        box = (0.0, row * sy - first, float(width), end * sy - first)
        out[row:end] = np.asarray(part.resize((grid[0], end - row), Image.Resampling.BOX, box=box))
    out /= np.float32(255.0)
    return out


def _blur_fusion(image: np.ndarray, fg: np.ndarray, bg: np.ndarray, a: np.ndarray, radius: int):
    blurred_fg, blurred_bg = _local_means(fg, bg, a, radius)
    estimate = blurred_fg + a * (image - a * blurred_fg - (np.float32(1.0) - a) * blurred_bg)
    return np.clip(estimate, 0.0, 1.0), blurred_bg


def _local_means(fg: np.ndarray, bg: np.ndarray, a: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """The subject's and the background's mean colours around each pixel, weighted by alpha and 1 - alpha."""
    eps = np.float32(1e-5)
    blurred_a = box_mean(a, radius)
    blurred_fg = box_mean(fg * a, radius) / (blurred_a + eps)
    blurred_bg = box_mean(bg * (np.float32(1.0) - a), radius) / ((np.float32(1.0) - blurred_a) + eps)
    return blurred_fg, blurred_bg


def box_mean(values: np.ndarray, radius: int) -> np.ndarray:
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
