"""Alpha-matte quality metrics, as the matting literature computes them (pure numpy, scipy, OpenCV).

Every function takes a predicted alpha and the true alpha, two HxW arrays of the same shape:
``uint8`` (0..255) or float (0..1). All are computed over the whole image (no trimap: the
quality set has none, and a background remover is judged on every pixel, as GFM judges AM-2k).

- :func:`sad`  sum of absolute differences, alpha in 0..1, divided by 1000 (DIM / GFM's scale).
- :func:`mse`  mean squared difference, alpha in 0..1 (printed x1e-3 by ``make quality``).
- :func:`grad` the gradient error of Rhemann et al. 2009 as the DIM evaluation code computes it.
- :func:`iou`  intersection over union of the masks ``alpha >= 0.5`` (>= 128 of 255).
- :func:`boundary_f`  F-measure of the mask's boundary pixels against the true ones, within a
  tolerance in pixels (3 px by default).
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

GRAD_SIGMA = 1.4
BOUNDARY_TOLERANCE_PX = 3
THRESHOLD = 0.5  # of the alpha range: >= 128 of 255


def unit(alpha: np.ndarray) -> np.ndarray:
    """``alpha`` as float64 in 0..1: uint8 is divided by 255, a float array is taken as it is."""
    alpha = np.asarray(alpha)
    if alpha.ndim != 2:
        raise ValueError(f"expected an HxW alpha, got shape {alpha.shape}")
    if alpha.dtype == np.uint8:
        return alpha.astype(np.float64) / 255.0
    if not np.issubdtype(alpha.dtype, np.floating):
        raise TypeError(f"expected uint8 (0..255) or float (0..1) alpha, got {alpha.dtype}")
    return alpha.astype(np.float64, copy=False)


def binary(alpha: np.ndarray) -> np.ndarray:
    """The mask ``alpha >= 0.5``: for uint8, ``>= 128`` (128/255 = 0.502; 127 is 0.498)."""
    alpha = np.asarray(alpha)
    return alpha >= 128 if alpha.dtype == np.uint8 else unit(alpha) >= THRESHOLD


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = unit(pred), unit(truth)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in size: resize the prediction first")
    return p, t


def sad(pred: np.ndarray, truth: np.ndarray) -> float:
    """Sum over all pixels of ``|pred - truth|`` (alpha in 0..1), divided by 1000."""
    p, t = _pair(pred, truth)
    return float(np.abs(p - t).sum() / 1000.0)


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over all pixels of ``(pred - truth)^2`` (alpha in 0..1)."""
    p, t = _pair(pred, truth)
    return float(np.mean((p - t) ** 2))


@lru_cache(maxsize=8)
def gauss_gradient_kernels(sigma: float = GRAD_SIGMA, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """The two 1-D factors of the ``gaussgradient`` kernel of the DIM evaluation code.

    That code (MATLAB ``gaussgradient.m`` by G. Xiong, and its Python ports in the GCA-Matting /
    MatteFormer / mmeval evaluation code) builds a 2-D kernel ``hx[i, j] = G(i) * G'(j)`` on
    ``-h..h`` with ``h = ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma epsilon)))`` (h = 4 for sigma 1.4:
    9x9), ``G`` the Gaussian density, ``G'(x) = -x G(x) / sigma^2``, and divides it by its L2
    norm; ``hy`` is its transpose. It is separable: ``hx = outer(g, d)`` with
    ``g = G / ||G||`` and ``d = G' / ||G'||`` (the L2 norm of an outer product is the product of
    the norms). Returns ``(g, d)``: smoothing across, derivative along.
    """
    half = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * epsilon)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2.0 * sigma**2)) / (sigma * math.sqrt(2.0 * math.pi))
    d = -x * g / sigma**2
    return g / np.linalg.norm(g), d / np.linalg.norm(d)


def gradient_magnitude(alpha: np.ndarray, sigma: float = GRAD_SIGMA) -> np.ndarray:
    """``sqrt(gx^2 + gy^2)`` of ``alpha`` (0..1) filtered with the ``gaussgradient`` kernels,
    border pixels replicated (scipy's ``mode='nearest'``, OpenCV's ``BORDER_REPLICATE``, as the
    reference code). OpenCV correlates where scipy's ``convolve`` flips the kernel: that flips the
    sign of ``gx`` and ``gy``, not the magnitude."""
    g, d = gauss_gradient_kernels(float(sigma))
    a = np.ascontiguousarray(unit(alpha))
    gx = cv2.sepFilter2D(a, cv2.CV_64F, d, g, borderType=cv2.BORDER_REPLICATE)  # derivative along x (columns)
    gy = cv2.sepFilter2D(a, cv2.CV_64F, g, d, borderType=cv2.BORDER_REPLICATE)  # derivative along y (rows)
    return np.sqrt(gx * gx + gy * gy)


def grad(pred: np.ndarray, truth: np.ndarray, sigma: float = GRAD_SIGMA,
         truth_magnitude: np.ndarray | None = None) -> float:
    """Gradient error (Rhemann et al. 2009) as the DIM / GCA / MatteFormer evaluation code
    computes it (``compute_gradient_loss``): both alphas scaled to 0..1 (``/255``), Gaussian-
    derivative gradients with sigma 1.4 (:func:`gauss_gradient_kernels`), the squared difference
    of the two gradient magnitudes summed, here over the whole image (there over the trimap's
    unknown region), divided by 1000.

    Two variants exist in the literature, noted so that figures are compared like for like:
    the MATLAB original min-max normalises each alpha (``mat2gray``) instead of dividing by 255
    (the same whenever an alpha spans 0..255, as these do); GFM's ``compute_gradient_whole_image``
    uses scipy's ``gaussian_filter(order=1)`` (a unit-gain derivative, not an L2-normalised one)
    and divides by 10, which gives other numbers. ``truth_magnitude``: the truth's
    :func:`gradient_magnitude`, when it was computed once for several predictions.
    """
    p, t = _pair(pred, truth)
    tm = gradient_magnitude(t, sigma) if truth_magnitude is None else truth_magnitude
    diff = gradient_magnitude(p, sigma) - tm
    return float(np.sum(diff * diff) / 1000.0)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """``|P & T| / |P | T|`` of the masks ``alpha >= 0.5`` (:func:`binary`); 1.0 when both are empty."""
    p, t = binary(pred), binary(truth)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in size")
    union = np.count_nonzero(p | t)
    return 1.0 if union == 0 else float(np.count_nonzero(p & t) / union)


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels: those of the mask (``alpha >= 0.5`` if not boolean) with at
    least one 4-neighbour outside it. Beyond the image frame the border pixels are replicated,
    so the frame is not a boundary: a subject cut by the photo's edge has no edge there."""
    m = (mask if mask.dtype == bool else binary(mask)).astype(np.uint8)
    inner = cv2.erode(m, _CROSS, borderType=cv2.BORDER_REPLICATE)
    return (m > inner)


@lru_cache(maxsize=8)
def disc(radius: int) -> np.ndarray:
    """The pixel offsets within Euclidean distance ``radius``: ``dy^2 + dx^2 <= radius^2``."""
    r = int(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy * yy + xx * xx <= r * r).astype(np.uint8)


def within(edges: np.ndarray, tolerance: int) -> np.ndarray:
    """The pixels within ``tolerance`` px (Euclidean, pixel centres) of an ``edges`` pixel: the
    dilation by :func:`disc`, which is exactly ``distance_transform_edt(~edges) <= tolerance``."""
    if tolerance <= 0:
        return edges.copy()
    return cv2.dilate(edges.astype(np.uint8), disc(int(tolerance)), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0) > 0


def boundary_precision_recall(pred: np.ndarray, truth: np.ndarray, tolerance: int = BOUNDARY_TOLERANCE_PX,
                              truth_near: np.ndarray | None = None) -> tuple[float, float]:
    """``(precision, recall)`` of the predicted boundary (:func:`boundary` of ``pred >= 0.5``)
    against the true one, each pixel counted as matched when the other boundary has a pixel
    within ``tolerance`` px of it (Euclidean distance between pixel centres, ``<=``):
    precision = matched predicted boundary pixels / predicted boundary pixels; recall = matched
    true boundary pixels / true boundary pixels. An empty boundary has precision (or recall)
    1.0 if the other is empty too, else 0.0. This is the DAVIS boundary measure's matching
    (a distance tolerance, each side matched independently, no one-to-one assignment) with a
    fixed tolerance in px instead of a share of the diagonal. ``truth_near``: ``within(boundary
    (truth), tolerance)``, when it was computed once for several predictions."""
    pb, tb = boundary(binary(pred)), boundary(binary(truth))
    if pb.shape != tb.shape:
        raise ValueError(f"prediction {pb.shape} and truth {tb.shape} differ in size")
    n_pred, n_true = np.count_nonzero(pb), np.count_nonzero(tb)
    if n_pred == 0 or n_true == 0:
        both_empty = float(n_pred == n_true)
        return both_empty, both_empty
    near_true = within(tb, tolerance) if truth_near is None else truth_near
    near_pred = within(pb, tolerance)
    precision = np.count_nonzero(pb & near_true) / n_pred
    recall = np.count_nonzero(tb & near_pred) / n_true
    return float(precision), float(recall)


def boundary_f(pred: np.ndarray, truth: np.ndarray, tolerance: int = BOUNDARY_TOLERANCE_PX,
               truth_near: np.ndarray | None = None) -> float:
    """Boundary F-measure ``2 P R / (P + R)`` of :func:`boundary_precision_recall` (0.0 when
    both are 0): 1.0 when every boundary pixel of each mask lies within ``tolerance`` px of the
    other's boundary."""
    p, r = boundary_precision_recall(pred, truth, tolerance, truth_near)
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


class Truth:
    """A true alpha with what every prediction is compared against computed once (its gradient
    magnitude, the neighbourhood of its boundary): ``Truth(alpha).score(pred)``."""

    def __init__(self, alpha: np.ndarray, tolerance: int = BOUNDARY_TOLERANCE_PX, sigma: float = GRAD_SIGMA):
        self.alpha = np.asarray(alpha)
        self.tolerance, self.sigma = tolerance, sigma
        self.magnitude = gradient_magnitude(self.alpha, sigma)
        self.near = within(boundary(binary(self.alpha)), tolerance)

    @property
    def shape(self) -> tuple[int, int]:
        return self.alpha.shape  # type: ignore[return-value]

    def score(self, pred: np.ndarray) -> dict[str, float]:
        """SAD, MSE, Grad, IoU and boundary F of ``pred`` (same size as the truth)."""
        t = self.alpha
        return {
            "sad": sad(pred, t),
            "mse": mse(pred, t),
            "grad": grad(pred, t, self.sigma, truth_magnitude=self.magnitude),
            "iou": iou(pred, t),
            "bf": boundary_f(pred, t, self.tolerance, truth_near=self.near),
        }


def score(pred: np.ndarray, truth: np.ndarray, tolerance: int = BOUNDARY_TOLERANCE_PX) -> dict[str, float]:
    """All five metrics of ``pred`` against ``truth``: ``sad``, ``mse``, ``grad``, ``iou``, ``bf``."""
    return Truth(truth, tolerance).score(pred)
