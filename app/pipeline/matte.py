"""The cut-out's edge re-solved as a matting problem, on the uncertain band only.

u2netp's mask is right about most of the photo and vague along the subject's outline: fur and
whiskers come out as a soft blur a dozen pixels wide, and a halo of the old background hangs
around them. rembg's answer is closed-form matting over the whole photo (pymatting, ~6 s a photo
here). This module solves the same problem on the band the mask is unsure of, fast enough to run on
every request:

1. a trimap from the mask: sure subject where it is above :data:`SURE_SUBJECT` and sure background
   below :data:`SURE_BACKGROUND`, each eroded by :data:`ERODE` px; the rest is unknown;
2. the closed-form matting energy (Levin, Lischinski & Weiss, 2008: in each small window, alpha
   is a linear function of the colours) minimised over the unknown pixels with the sure ones
   fixed, by conjugate gradients started from the model's own alpha. The Laplacian is never built:
   its product is computed with box filters (He, Sun & Tang, "Fast matting using large kernel
   matting Laplacian matrices", 2010), so a step costs a few box filters;
3. coarse to fine, on the unknown band's bounding box only: :data:`COARSE_ITERATIONS` steps on a
   grid of at most :data:`COARSE_PIXELS` with 3x3 windows, then :data:`FINE_ITERATIONS` steps on a
   grid of at most :data:`FINE_PIXELS` with 5x5 windows, brought up to the photo bilinearly; only
   the unknown pixels change.

On the 13 AM-2k animals (``make quality``): mean SAD 37.8 -> 26.8 with the int8 model (the model's
map resized plainly, then matted), against 30.6 for rembg's alpha matting at ~15x the time. The
Laplacian's statistics and product are compiled (app/pipeline/_matte.c, numpy's float32 operations in
numpy's order: the same cut-outs to the bit), the rest is numpy's (app/pipeline/morphology.py): no
OpenCV on the default path; 45-80 ms a fixture photo on one core of an Intel Xeon (125-210 ms when
the product was numpy's: docs/benchmarks.md#the-edge-matting-compiled). The grids bound the solve's
memory whatever the photo's size: 45 MB at the peak on a 12 MP photo (tests/test_matte.py), the
full-size arrays being 8-bit.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from app.pipeline import _matte
from app.pipeline.compose import shrunk
from app.pipeline.morphology import BoxMean, window_reduce

SURE_SUBJECT = 250  # the trimap: mask values above this are sure subject...
SURE_BACKGROUND = 5  # ...below this sure background (both then eroded)
ERODE = 0.0062  # the sure regions are eroded by this share of the photo's longest side (10 px at 1620 px)
UNKNOWN = 128  # the trimap's value between sure background (0) and sure subject (255)
STRIP_ROWS = 128  # the full-size work by strips of rows: a strip's floats stay under the 1 MiB mmap threshold
HOLD_TRIMAP_PIXELS = 4_000_000  # a trimap this small is held through the solve; a larger one is made twice
EPS = 1e-3  # the matting Laplacian's regularisation (colours 0-1)
# The grids and steps: the fine solve is the costly one; 6 steps on 0.16 MP give a mean SAD of 26.9 on
# the AM-2k animals (int8) where 20 on 0.25 MP gave 26.6 at twice the time (docs/quality.md#edge-matting)
COARSE_PIXELS, COARSE_RADIUS, COARSE_ITERATIONS = 70_000, 1, 60
FINE_PIXELS, FINE_RADIUS, FINE_ITERATIONS = 160_000, 2, 6


def matte(rgb: np.ndarray, alpha: np.ndarray, reopen: np.ndarray | None = None) -> np.ndarray:
    """``alpha`` (HxW uint8) with its uncertain band re-solved against the photo ``rgb`` (HxWx3 uint8),
    in place (it is returned); the sure parts of the mask are kept, made exactly 0 or 255. The
    full-size work is 8-bit and by strips of rows: one full-size array besides ``alpha`` (the trimap).
    A read-only ``alpha`` (a Pillow image's pixels) is copied first. ``reopen`` (HxW bool): pixels
    re-solved even where the mask is sure (the correction strokes' reach: app/pipeline/correct.py)."""
    if not alpha.flags.writeable:
        alpha = alpha.copy()
    height, width = alpha.shape
    trimap = _trimap(alpha, reopen)
    rows = np.flatnonzero(_by_strips(trimap, lambda strip: (strip == UNKNOWN).any(1)))
    if rows.size:
        cols = np.flatnonzero(_by_strips(trimap[rows[0]:rows[-1] + 1], lambda strip: (strip == UNKNOWN).any(0),
                                         np.logical_or.reduce))
        # the unknown band's box, with the windows' reach at the fine grid
        scale = _scale(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0], FINE_PIXELS)
        margin = math.ceil(4 * FINE_RADIUS / scale) + 4
        top, bottom = max(0, rows[0] - margin), min(height, rows[-1] + 1 + margin)
        left, right = max(0, cols[0] - margin), min(width, cols[-1] + 1 + margin)
        crop = (slice(top, bottom), slice(left, right))
        rgb_c, alpha_c = rgb[crop], alpha[crop]
        h, w = alpha_c.shape
        grids = _grid(h, w, COARSE_PIXELS), _grid(h, w, FINE_PIXELS)
        labels = [_nearest(trimap[crop], grid) for grid in grids]
        if trimap.size > HOLD_TRIMAP_PIXELS:
            del trimap  # made again for the write-back: not held through the solve (12 MB at 12 MP)
        coarse = _solve(rgb_c, alpha_c, labels[0], COARSE_RADIUS, COARSE_ITERATIONS)
        fine = _solve(rgb_c, alpha_c, labels[1], FINE_RADIUS, FINE_ITERATIONS, coarse)
        del coarse, labels
        if "trimap" not in locals():
            trimap = _trimap(alpha, reopen)
        trimap_c = trimap[crop]
        # brought up to the photo in strips of rows, written over the unknown pixels
        solved = Image.fromarray(fine, "F")
        sy = fine.shape[0] / h
        for y in range(0, h, STRIP_ROWS):
            n = min(STRIP_ROWS, h - y)
            strip = np.asarray(solved.resize((w, n), Image.Resampling.BILINEAR,
                                             box=(0.0, y * sy, float(fine.shape[1]), (y + n) * sy)))
            np.copyto(alpha_c[y:y + n], np.rint(strip * 255).astype(np.uint8), where=trimap_c[y:y + n] == UNKNOWN)
    for y in range(0, height, STRIP_ROWS):  # the sure parts exactly 0 and 255
        labels = trimap[y:y + STRIP_ROWS]
        np.copyto(alpha[y:y + STRIP_ROWS], labels, where=labels != UNKNOWN)
    return alpha


def _by_strips(values: np.ndarray, reduce_rows, combine=np.concatenate) -> np.ndarray:
    """``reduce_rows`` over strips of :data:`STRIP_ROWS` rows of ``values``, the results combined (no
    full-size boolean at once)."""
    parts = [reduce_rows(values[y:y + STRIP_ROWS]) for y in range(0, values.shape[0], STRIP_ROWS)]
    return combine(parts)


def _trimap(alpha: np.ndarray, reopen: np.ndarray | None = None) -> np.ndarray:
    """0 sure background, 255 sure subject, :data:`UNKNOWN` between (HxW uint8), and wherever
    ``reopen`` is set. The sure regions are eroded as the mask's minimum and maximum over each
    pixel's square (outside the photo: 0), by strips of rows in buffers allocated once: no full-size
    temporaries besides the result."""
    side = max(1, round(ERODE * max(alpha.shape)))
    height, width = alpha.shape
    before, after = side // 2, side - 1 - side // 2  # the square's reach above (left) and below (right)
    out = np.empty_like(alpha)
    rows = min(STRIP_ROWS, height)
    padded = np.zeros((rows + side - 1, width + side - 1), np.uint8)
    work = [np.empty_like(padded) for _ in range(2)]
    across = np.empty((rows + side - 1, width), np.uint8)
    low, high, flag = np.empty((rows, width), np.uint8), np.empty((rows, width), np.uint8), np.empty((rows, width), bool)
    for y in range(0, height, STRIP_ROWS):
        end = min(height, y + STRIP_ROWS)
        n, first, last = end - y, y - before, end + after  # the strip's rows and those its squares reach
        lo, hi = max(0, first), min(height, last)
        block = padded[:last - first]
        block[:lo - first] = 0
        block[hi - first:] = 0
        block[lo - first:hi - first, before:before + width] = alpha[lo:hi]
        for op, extreme in ((np.minimum, low), (np.maximum, high)):
            window_reduce(block, side, 1, across[:last - first], work, op)
            window_reduce(across[:last - first], side, 0, extreme[:n], work, op)
        strip = out[y:end]
        strip.fill(0)
        np.copyto(strip, UNKNOWN, where=np.greater_equal(high[:n], SURE_BACKGROUND, out=flag[:n]))  # not sure background
        np.copyto(strip, 255, where=np.greater(low[:n], SURE_SUBJECT, out=flag[:n]))  # sure subject
        if reopen is not None:
            np.copyto(strip, UNKNOWN, where=reopen[y:end])
    return out


def _nearest(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``values`` (h x w) sampled at the centres of a ``grid`` (w, h) of cells: nearest neighbour."""
    h, w = values.shape
    rows = np.minimum(h - 1, ((np.arange(grid[1]) + 0.5) * (h / grid[1])).astype(np.intp))
    cols = np.minimum(w - 1, ((np.arange(grid[0]) + 0.5) * (w / grid[0])).astype(np.intp))
    return values[np.ix_(rows, cols)]


def _scale(h: int, w: int, pixels: int) -> float:
    return min(1.0, math.sqrt(pixels / max(1, h * w)))


def _grid(h: int, w: int, pixels: int) -> tuple[int, int]:
    scale = _scale(h, w, pixels)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _solve(rgb: np.ndarray, alpha: np.ndarray, labels: np.ndarray, radius: int, iterations: int,
           start: np.ndarray | None = None) -> np.ndarray:
    """The matting energy minimised on the grid of ``labels`` (the trimap at that size) over the
    unknown pixels: alpha 0-1 (h x w float32)."""
    grid = labels.shape[::-1]
    colours = shrunk(rgb, grid)
    if start is not None:
        x = np.array(Image.fromarray(start, "F").resize(grid, Image.Resampling.BILINEAR))
    else:
        x = shrunk(alpha, grid)
    known = labels != UNKNOWN
    x[known] = labels[known] == 255
    free = ~known
    edge = 2 * radius  # the grid's own border stays as it is (windows there are cut)
    free[:edge] = free[-edge:] = False
    free[:, :edge] = free[:, -edge:] = False
    laplacian = _Laplacian(colours, radius)
    return np.clip(_conjugate_gradients(laplacian, x, free.astype(np.float32), iterations), 0, 1, out=x)


class _Laplacian:
    """The closed-form matting Laplacian of ``colours`` (h x w x 3, 0-1) with (2r+1)² windows, as
    an operator: :meth:`times` gives ``L p / |window|`` with box filters. Everything is float32: the
    covariance's rounding (~1e-7 on colours 0-1) is far below the regularisation ε/|window| (4e-5
    and more), and float64 statistics gave the same mean SAD on the AM-2k animals (26.78 against
    26.79) at twice the memory. Every step works in buffers allocated once (no page faults in the
    ~70 steps of a solve: app/ops/tuning.py). The statistics and the product are compiled
    (``app/pipeline/_matte.c``): :meth:`_setup_numpy` and :meth:`_times_numpy` are their definitions,
    which they reproduce bit for bit (tests/test_matte.py)."""

    def __init__(self, colours: np.ndarray, radius: int):
        shape = colours.shape[:2]
        self.radius = radius
        # colour planes, their window means and the windows' inverse covariances, each kind in one
        # array of planes, as the compiled steps read them (the lists are views of the planes)
        self._planes = np.empty((3, *shape), np.float32)
        for c in range(3):
            self._planes[c] = colours[..., c]
        self._means = np.empty((3, *shape), np.float32)
        self._inverse = np.empty((6, *shape), np.float32)
        self._work = np.empty(_matte.work_floats(*shape, radius), np.float32)
        _matte.laplacian_setup(*shape, radius, EPS, self._planes, self._means, self._inverse, self._work)
        self.colours, self.means, self.inverse = list(self._planes), list(self._means), list(self._inverse)

    def _setup_numpy(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The means and inverse covariances in numpy: the definition ``laplacian_setup`` reproduces
        bit for bit (as new arrays)."""
        planes, radius = self.colours, self.radius
        shape, n = planes[0].shape, (2 * radius + 1) ** 2
        # The statistics through one box operator and one product buffer: no temporaries to fault in.
        box, product = BoxMean(shape, radius), np.empty(shape, np.float32)
        means = [box(plane) for plane in planes]
        s = {}  # the windows' covariance Σ + ε/n
        for i in range(3):
            for j in range(i, 3):
                s[i, j] = box(np.multiply(planes[i], planes[j], out=product))
                s[i, j] -= np.multiply(means[i], means[j], out=product)
                if i == j:
                    s[i, j] += EPS / n
        s00, s01, s02, s11, s12, s22 = (s.pop(k) for k in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)))
        cofactors = ((s11, s22, s12, s12), (s02, s12, s01, s22), (s01, s12, s02, s11),
                     (s00, s22, s02, s02), (s01, s02, s00, s12), (s00, s11, s01, s01))  # (Σ⁻¹ · det), entry by entry
        det, entry = np.zeros(shape, np.float32), np.empty(shape, np.float32)
        for (a, b, c, d), first_row in zip(cofactors, (s00, s01, s02)):  # det along the first row
            np.multiply(a, b, out=entry)
            entry -= np.multiply(c, d, out=product)
            det += np.multiply(entry, first_row, out=entry)
        inverse = []  # the windows' (Σ + ε/n)⁻¹
        for a, b, c, d in cofactors:
            entry = np.multiply(a, b)
            entry -= np.multiply(c, d, out=product)
            entry /= det
            inverse.append(entry)
        return means, inverse

    def times(self, p: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``L p / |window|`` into ``out`` (h x w float32, C-contiguous): for each window, the linear
        fit ``a·I + b`` of ``p``, averaged over the windows covering each pixel, taken from ``p``."""
        _matte.laplacian_times(*p.shape, self.radius, p, self._planes, self._means, self._inverse, out, self._work)
        return out

    def _times_numpy(self, p: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:meth:`times` in numpy: its definition (the compiled kernel reproduces it bit for bit)."""
        shape = p.shape
        mean_p, tmp = np.empty(shape, np.float32), np.empty(shape, np.float32)
        c, a = [np.empty(shape, np.float32) for _ in range(3)], [np.empty(shape, np.float32) for _ in range(3)]
        colours, m, box = self.colours, self.means, BoxMean(shape, self.radius)
        box(p, mean_p)
        for k in range(3):  # c_k = cov(I_k, p) in each window
            np.multiply(colours[k], p, out=tmp)
            box(tmp, c[k])
            np.multiply(m[k], mean_p, out=tmp)
            c[k] -= tmp
        i00, i01, i02, i11, i12, i22 = self.inverse
        for k, (x, y, z) in enumerate(((i00, i01, i02), (i01, i11, i12), (i02, i12, i22))):  # a = Σ⁻¹ c
            np.multiply(x, c[0], out=a[k])
            np.multiply(y, c[1], out=tmp)
            a[k] += tmp
            np.multiply(z, c[2], out=tmp)
            a[k] += tmp
        for k in range(3):  # b = mean(p) - a·mean(I), in mean_p
            np.multiply(a[k], m[k], out=tmp)
            mean_p -= tmp
        box(mean_p, out)
        np.subtract(p, out, out=out)
        for k in range(3):
            box(a[k], tmp)
            tmp *= colours[k]
            out -= tmp
        return out


def _conjugate_gradients(laplacian: _Laplacian, x: np.ndarray, free: np.ndarray, iterations: int) -> np.ndarray:
    """``x`` moved towards the minimum of xᵀLx over the ``free`` pixels (the others fixed), in place."""
    product, step_buffer = np.empty_like(x), np.empty_like(x)

    def apply(p: np.ndarray) -> np.ndarray:
        laplacian.times(p, product)
        return np.multiply(product, free, out=product)

    residual = -apply(x)
    direction = residual.copy()
    rs = float(np.vdot(residual, residual))
    for _ in range(iterations):
        if rs <= 1e-20:
            break
        apply(direction)
        step = np.float32(rs / max(float(np.vdot(direction, product)), 1e-30))
        np.multiply(direction, step, out=step_buffer)
        x += step_buffer
        product *= step
        residual -= product
        rs_next = float(np.vdot(residual, residual))
        direction *= np.float32(rs_next / rs)
        direction += residual
        rs = rs_next
    return x
