"""Small building blocks shared by the effects: colour-space tables, luminance, smooth blurs.

Everything is vectorised (numpy) or done by Pillow's C code; nothing loops over pixels.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from effects import _kernels

# sRGB value (0..255) -> linear light (0..1), IEC 61966-2-1
_levels = np.arange(256, dtype=np.float64) / 255.0
SRGB_TO_LINEAR = np.where(_levels <= 0.04045, _levels / 12.92, ((_levels + 0.055) / 1.055) ** 2.4).astype(np.float32)

# Linear light is looked up at this many steps (fine enough that the darkest step is < 1/255 in sRGB).
LINEAR_STEPS = 16384

BT709 = (0.2126, 0.7152, 0.0722)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light (0..1) -> sRGB-encoded (0..1), for building lookup tables."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


@lru_cache(maxsize=8)
def share_tables(weights: tuple[float, float, float]) -> np.ndarray:
    """3x256 uint16: each channel's share of Σ weight × linear light, in fixed point (weights sum to 1).

    shares[0][R] + shares[1][G] + shares[2][B] is an index 0..LINEAR_STEPS+1 into a
    table built over linear light (``LINEAR_STEPS`` + 2 entries, room for rounding).
    """
    tables = np.stack([_share_table(w) for w in weights])
    tables.setflags(write=False)
    return tables


def _share_table(weight: float) -> np.ndarray:
    return np.round(SRGB_TO_LINEAR.astype(np.float64) * weight * (LINEAR_STEPS - 1)).astype(np.uint16)


def luma709(rgba: np.ndarray) -> np.ndarray:
    """ITU-R BT.709 luma of the (gamma-encoded) RGB values: HxW float32, 0..255 (compiled, one pass)."""
    rgba = np.ascontiguousarray(rgba)
    out = np.empty(rgba.shape[:2], np.float32)
    _kernels.luma(rgba, *BT709, out)
    return out


STRIP_ROWS = 256  # rows of a large image worked at a time where a float plane would be held whole


def luma709_u8(rgba: np.ndarray) -> np.ndarray:
    """:func:`luma709` rounded to HxW uint8, a strip of rows at a time (no full-size float plane:
    48 MB at 12 MP)."""
    out = np.empty(rgba.shape[:2], np.uint8)
    for top in range(0, rgba.shape[0], STRIP_ROWS):
        out[top:top + STRIP_ROWS] = luma709(rgba[top:top + STRIP_ROWS]) + np.float32(0.5)
    return out


def luma709_cells(rgba: np.ndarray, cell: int, transparent: float) -> np.ndarray:
    """:func:`luma709` averaged over ``cell`` x ``cell`` blocks (Pillow's ``reduce``; the last row and
    column of blocks over what is left), fully transparent pixels counted as ``transparent``: a
    strip of whole blocks at a time, so no full-size float plane is held."""
    height, width = rgba.shape[:2]
    step = cell * max(1, STRIP_ROWS // cell)
    out = np.empty((-(-height // cell), -(-width // cell)), np.float32)
    for top in range(0, height, step):
        part = rgba[top:top + step]
        luma = luma709(part)
        np.putmask(luma, part[..., 3] == 0, np.float32(transparent))
        out[top // cell:(top + len(part) + cell - 1) // cell] = Image.fromarray(luma, "F").reduce(cell) if cell > 1 else luma
    return out


def smooth(values: np.ndarray, factor: int) -> np.ndarray:
    """A wide, smooth low-pass of a float32 plane (read-only result): box-average down by ``factor``, soften, bilinear back up.

    With ``factor`` f this behaves like a blur of radius ~f pixels at the cost of
    two resamples (Pillow, C), whatever the radius.
    """
    height, width = values.shape
    if factor <= 1:
        return values.copy()
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    low = soften(downsample(values, small))
    return upsample(low, (width, height))


def downsample(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Box-average a float32 plane down to ``size`` (width, height)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), "F").resize(size, Image.Resampling.BOX))


def upsample(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a small float32 plane up to ``size`` (width, height); read-only result."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), "F").resize(size, Image.Resampling.BILINEAR))


def soften(low: np.ndarray) -> np.ndarray:
    """A [1 2 1]/4 pass in each direction on a small plane, which hides the bilinear grid."""
    out = low.astype(np.float32, copy=True)
    if out.shape[0] > 2:
        out[1:-1] = 0.25 * low[:-2] + 0.5 * low[1:-1] + 0.25 * low[2:]
    tmp = out.copy()
    if out.shape[1] > 2:
        out[:, 1:-1] = 0.25 * tmp[:, :-2] + 0.5 * tmp[:, 1:-1] + 0.25 * tmp[:, 2:]
    return out


def scale_for(shape: tuple[int, ...], fraction: float, lo: int = 2, hi: int = 64) -> int:
    """A length in pixels proportional to the image's longer side, clamped to [lo, hi]."""
    return int(min(hi, max(lo, round(max(shape[:2]) * fraction))))


def paint(indices: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """HxW palette indices (uint8) -> HxWx3 uint8 colours (Pillow's palette conversion: ~10x numpy's fancy indexing)."""
    img = Image.fromarray(np.ascontiguousarray(indices, dtype=np.uint8), "P")
    img.putpalette(np.ascontiguousarray(colours, dtype=np.uint8).tobytes())
    return np.asarray(img.convert("RGB"))


def paint_rgba(indices: np.ndarray, colours: np.ndarray, alpha_of: np.ndarray) -> np.ndarray:
    """HxW palette indices -> HxWx4 uint8: the colours, with the alpha of the RGBA array ``alpha_of`` (compiled, one pass)."""
    indices = np.ascontiguousarray(indices, dtype=np.uint8)
    alpha_of = np.ascontiguousarray(alpha_of)
    height, width = indices.shape
    if alpha_of.shape != (height, width, 4):
        raise ValueError(f"alpha_of must be {height}x{width}x4, got {alpha_of.shape}")
    out = np.empty((height, width, 4), np.uint8)
    _kernels.paint(indices, np.ascontiguousarray(colours, dtype=np.uint8), alpha_of, out)
    return out


def bayer_matrix(n: int) -> np.ndarray:
    """The n×n ordered-dither (Bayer) threshold matrix, values (i + 0.5) / n² in 0..1; n a power of two."""
    m = np.zeros((1, 1), dtype=np.int32)
    while m.shape[0] < n:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return (m.astype(np.float32) + 0.5) / (n * n)
