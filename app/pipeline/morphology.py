"""Small image operators in numpy, for the steps that run on every request (the edge matting, the
review warnings): box means, binary erosion and dilation, connected regions.

OpenCV has them all, but importing it costs the 512 MB tier 24-37 MB of resident memory in every
worker (measured in tests/test_hostile_inputs.py's eight clients); these few operators cost nothing
to import and are fast enough where they are used: the box means on grids of at most 250k px (a
few slices added), the morphology by strips of rows with O(log size) passes, the regions by runs
of a small grid. OpenCV stays for the correction strokes (GrabCut), imported on the first stroke.
"""

from __future__ import annotations

import numpy as np

STRIP_ROWS = 256


class BoxMean:
    """The mean over each pixel's (2r+1)² window of an h x w array, the borders reflected with the
    edge pixel repeated (``…cba|abc…``, OpenCV's BORDER_REFLECT), written into ``out``: the window is
    summed from shifted slices of one padded buffer allocated once, so a conjugate-gradient step
    costs no new arrays. Windows of :data:`DOUBLING_FROM` px and wider are summed from sums of 1, 2,
    4, 8… px, each made from the one before (2·log2 passes an axis instead of 2r + 1)."""

    def __init__(self, shape: tuple[int, int], radius: int, dtype=np.float32):
        self.r = radius
        h, w = shape
        self.padded = np.empty((h + 2 * radius, w + 2 * radius), dtype)
        self.rows = np.empty((h + 2 * radius, w), dtype)
        self.scale = dtype(1.0 / (2 * radius + 1) ** 2)
        # the padded buffer's source index along each axis (symmetric reflection, any size)
        self.index = [_reflected(n, radius) for n in shape]
        self.work = [np.empty_like(self.padded) for _ in range(2)] if 2 * radius + 1 >= DOUBLING_FROM else None

    def __call__(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        r, padded, rows = self.r, self.padded, self.rows
        h, w = values.shape
        if out is None:
            out = np.empty_like(values)
        if h > r and w > r:  # the inside copied, then the reflected borders: no fancy indexing
            padded[r:r + h, r:r + w] = values
            padded[r:r + h, :r] = values[:, r - 1::-1] if r else values[:, :0]
            padded[r:r + h, r + w:] = values[:, w - 1:w - 1 - r:-1]
            padded[:r] = padded[2 * r - 1:r - 1:-1]
            padded[r + h:] = padded[r + h - 1:h - 1:-1]
        else:
            padded[...] = values[np.ix_(*self.index)]
        n = 2 * r + 1
        if self.work is not None:
            window_reduce(padded, n, 1, rows, self.work)
            window_reduce(rows, n, 0, out, self.work)
            out *= self.scale
            return out
        np.copyto(rows, padded[:, :w])
        for k in range(1, n):
            rows += padded[:, k:k + w]
        np.copyto(out, rows[:h])
        for k in range(1, n):
            out += rows[k:k + h]
        out *= self.scale
        return out


DOUBLING_FROM = 7  # the window width from which BoxMean sums by doubling


def window_reduce(values: np.ndarray, n: int, axis: int, out: np.ndarray, work: list[np.ndarray],
                  op=np.add) -> np.ndarray:
    """``out[i] = op(values[i], …, values[i + n - 1])`` along ``axis`` (``op``: np.add, np.minimum or
    np.maximum), into ``out``: ``n`` taken bit by bit, the reductions of 2^k entries made from those of
    2^(k-1) in the two ``work`` buffers in turn (each at least ``values``' shape): 2·log2(n) passes,
    no new arrays."""
    m = values.shape[axis] - n + 1
    current, length, width, offset, turn = values, values.shape[axis], 1, 0, 0
    while True:
        if n & width:  # the window's next part: ``width`` entries from ``offset`` on
            part = _slice(current, offset, offset + m, axis)
            if offset:
                op(out, part, out=out)
            else:
                np.copyto(out, part)
            offset += width
        if 2 * width > n:
            return out
        length -= width  # reductions of 2·width entries, from those of width
        target = work[turn][:length, :current.shape[1]] if axis == 0 else work[turn][:current.shape[0], :length]
        op(_slice(current, 0, length, axis), _slice(current, width, width + length, axis), out=target)
        current, width, turn = target, 2 * width, 1 - turn


def _reflected(n: int, r: int) -> np.ndarray:
    """Indices of an axis of ``n`` padded by ``r`` on each side, reflected with the edge repeated."""
    index = np.arange(-r, n + r)
    period = 2 * n
    index = np.mod(index, period)
    return np.where(index >= n, period - 1 - index, index)


def box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """The (2r+1)² window mean of an h x w array (a new array; see :class:`BoxMean`)."""
    return BoxMean(values.shape, radius, values.dtype.type)(values)


def _run_extreme(x: np.ndarray, size: int, axis: int, op) -> np.ndarray:
    """``op`` (np.minimum or np.maximum) over each run of ``size`` consecutive entries along ``axis``
    of ``x`` (whose length shrinks by size - 1): doubling windows, O(log size) passes."""
    step = 1
    m = x
    while 2 * step <= size:  # m[i] covers [i, i + 2·step)
        n = m.shape[axis] - step
        m = op(_slice(m, 0, n, axis), _slice(m, step, step + n, axis))
        step *= 2
    n = x.shape[axis] - size + 1
    if step == size:
        return _slice(m, 0, n, axis)
    return op(_slice(m, 0, n, axis), _slice(m, size - step, size - step + n, axis))


def _slice(x: np.ndarray, start: int, stop: int, axis: int) -> np.ndarray:
    return x[start:stop] if axis == 0 else x[:, start:stop]


def _square(mask: np.ndarray, size: int, op, border: bool) -> np.ndarray:
    """``mask`` (HxW bool) eroded (np.minimum) or dilated (np.maximum) by a ``size`` x ``size``
    square anchored at its centre (offsets -size//2 … size - 1 - size//2, OpenCV's anchor), the
    outside of the image taken as ``border``; by strips of rows (a strip's worth of temporaries)."""
    height, width = mask.shape
    if size <= 1:
        return mask.copy()
    before, after = size // 2, size - 1 - size // 2
    out = np.empty_like(mask)
    for y in range(0, height, STRIP_ROWS):
        end = min(height, y + STRIP_ROWS)
        first, last = y - before, end + after  # the rows the strip's windows reach
        part = np.full((last - first, width + size - 1), border, bool)
        lo, hi = max(0, first), min(height, last)
        part[lo - first:hi - first, before:before + width] = mask[lo:hi]
        across = _run_extreme(part, size, 1, op)
        out[y:end] = _run_extreme(across, size, 0, op)
    return out


def erode(mask: np.ndarray, size: int, border: bool = False) -> np.ndarray:
    """``mask`` (bool) eroded by a ``size``² square; outside the image counts as ``border``."""
    return _square(mask, size, np.minimum, border)


def dilate(mask: np.ndarray, size: int, border: bool = False) -> np.ndarray:
    """``mask`` (bool) dilated by a ``size``² square; outside the image counts as ``border``."""
    return _square(mask, size, np.maximum, border)


def region_areas(mask: np.ndarray) -> np.ndarray:
    """The areas in px of ``mask``'s 8-connected regions (HxW bool), largest first. Runs of each row
    are joined to the runs they touch (diagonals included) in the row above, with union-find over
    runs: a few thousand on the small grids this is used on."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = mask
    change = np.diff(padded, axis=1)
    rows_s, starts = np.nonzero(change == 1)
    rows_e, ends = np.nonzero(change == -1)  # runs [start, end) per row, in row order
    if starts.size == 0:
        return np.zeros(0, np.int64)
    parent = list(range(starts.size))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(rows_s, np.arange(height + 1))  # the runs of row y: row_first[y]:row_first[y+1]
    for y in range(1, height):
        above = range(row_first[y - 1], row_first[y])
        here = range(row_first[y], row_first[y + 1])
        if not above or not here:
            continue
        j = above.start
        for i in here:  # both rows' runs sorted: a merge walk
            while j < above.stop and ends[j] < starts[i]:  # ends before this run's diagonal reach
                j += 1
            k = j
            while k < above.stop and starts[k] <= ends[i]:  # starts within reach: touching
                a, b = root(i), root(k)
                if a != b:
                    parent[a] = b
                k += 1
    roots = np.array([root(i) for i in range(starts.size)])
    areas = np.bincount(roots, weights=ends - starts)
    areas = areas[areas > 0].astype(np.int64)
    return np.sort(areas)[::-1]
