"""A small mask brought up to a large photo's size along the photo's own edges.

The model sees 320x320 whatever the photo's size, so a 12 MP mask is its map stretched tenfold:
a plain resize blurs every edge over a dozen pixels. The fast guided filter (He & Sun, "Fast
Guided Filter", 2015; the colour guide of He, Sun & Tang, "Guided Image Filtering", 2013) fits, in
each small window, the mask as a linear function of the photo's colours, ``q = a·I + b``, on a grid
of at most :data:`GRID_SIDE` px, and applies the smoothed ``a`` and ``b`` to the full-resolution
photo: the mask's edges follow the photo's. Where the model is sure all around (its mask resized
to the photo is exactly 0 or 255) the mask stays so: the photo's texture does not leak into a sure
subject or background. The full-size work runs in strips of rows, so that no full-size float array
is held (at 12 MP each would be 48 MB).

Measured on the AM-2k set at full resolution (benchmarks/quality.py prints the comparison): mean
SAD 38.21 against 38.49 for the plain Lanczos resize with fp32 u2netp (-0.7%), 37.79 against 38.10
with int8 (-0.8%), lower on 12 of the 13 photos. Photos of at most :data:`GUIDED_ABOVE` px keep the
plain resize: their mask is stretched at most 3.2 times, and their outputs stay as they were.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.pipeline.compose import box_mean, shrunk

GUIDED_ABOVE = 1024  # photos longer than this on their longest side get the guided upscaling
GRID_SIDE = 768  # the grid the coefficients are fitted on: the photo fitted into this many px
RADIUS = 2  # the window's radius, in grid pixels
EPS = 3e-5  # regularisation, in (colour/255)²: windows flatter than this keep the plain mask
STRIP_ROWS = 128


def upscale_mask(small: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """``small`` (HxW uint8, any size) at ``rgb``'s size: Lanczos up to :data:`GUIDED_ABOVE` px,
    else guided by the photo's colours (:func:`guided_upscale`)."""
    height, width = rgb.shape[:2]
    if max(width, height) <= GUIDED_ABOVE:
        return np.asarray(Image.fromarray(small, "L").resize((width, height), Image.Resampling.LANCZOS))
    return guided_upscale(small, rgb)


def guided_upscale(small: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """``small`` brought up to ``rgb``'s size (HxW uint8), guided by ``rgb`` (HxWx3 uint8)."""
    height, width = rgb.shape[:2]
    grid = _grid_size((width, height))
    guide = shrunk(rgb, grid)
    p = np.asarray(Image.fromarray(small, "L").resize(grid, Image.Resampling.LANCZOS), np.float32)
    p /= np.float32(255.0)
    channels = [guide[..., c] for c in range(3)]
    means = [_box(c) for c in channels]
    mean_p = _box(p)
    cov = [_box(c * p) - m * mean_p for c, m in zip(channels, means)]
    var = {(i, j): _box(channels[i] * channels[j]) - means[i] * means[j] + (np.float32(EPS) if i == j else 0)
           for i in range(3) for j in range(i, 3)}
    a = _solve3(var, cov)
    b = mean_p - sum(ai * m for ai, m in zip(a, means))
    del guide, p, channels, means, mean_p, cov, var
    # the coefficients averaged over the windows that cover each pixel, as images to resample by strip
    maps = [Image.fromarray(_box(ai) * np.float32(255.0), "F") for ai in a]
    maps.append(Image.fromarray(_box(b) * np.float32(255.0), "F"))
    # where the model is sure all around (its mask resized to the photo exactly 0 or 255), it stays sure
    plain = np.asarray(Image.fromarray(small, "L").resize((width, height), Image.Resampling.LANCZOS))
    sure = (plain == 0) | (plain == 255)
    out = np.empty((height, width), np.uint8)
    sy = grid[1] / height
    for top in range(0, height, STRIP_ROWS):
        rows = min(STRIP_ROWS, height - top)
        box = (0.0, top * sy, float(grid[0]), (top + rows) * sy)
        a_r, a_g, a_b, strip = (np.array(m.resize((width, rows), Image.Resampling.BILINEAR, box=box)) for m in maps)
        colours = rgb[top:top + rows] * np.float32(1.0 / 255.0)
        strip += a_r * colours[..., 0]
        strip += a_g * colours[..., 1]
        strip += a_b * colours[..., 2]
        np.clip(strip, 0.0, 255.0, out=strip)
        out[top:top + rows] = np.rint(strip)
    np.copyto(out, plain, where=sure)
    return out


def _solve3(var: dict[tuple[int, int], np.ndarray], cov: list[np.ndarray]) -> list[np.ndarray]:
    """Per pixel, ``a`` with ``Σ a = cov`` for the symmetric 3x3 ``Σ`` given by its upper triangle
    ``var``: Cramer's rule, elementwise (no HxWx3x3 array)."""
    s00, s01, s02, s11, s12, s22 = (var[k] for k in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)))
    i00 = s11 * s22 - s12 * s12
    i01 = s02 * s12 - s01 * s22
    i02 = s01 * s12 - s02 * s11
    i11 = s00 * s22 - s02 * s02
    i12 = s01 * s02 - s00 * s12
    i22 = s00 * s11 - s01 * s01
    det = s00 * i00 + s01 * i01 + s02 * i02
    c0, c1, c2 = cov
    return [(i00 * c0 + i01 * c1 + i02 * c2) / det,
            (i01 * c0 + i11 * c1 + i12 * c2) / det,
            (i02 * c0 + i12 * c1 + i22 * c2) / det]


def _grid_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, GRID_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))



def _box(values: np.ndarray) -> np.ndarray:
    """The mean over each pixel's window (HxW float32)."""
    return box_mean(values[..., None], RADIUS)[..., 0]
