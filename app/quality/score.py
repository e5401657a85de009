"""Scoring one cut-out against its true matte, our own path's cut-out of one photo, and the gate
of ``make quality`` (benchmarks/quality.py runs them over the set; tests/test_quality.py tests them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from app.quality import metrics

ROOT = Path(__file__).resolve().parents[2]  # a relative MODEL_PATH of a variant is taken from here
GATE_TOLERANCE = 0.02  # ours' mean SAD may be at most 2% above rembg's (same model)


class Skip(Exception):
    """A method that cannot run here; its message says why."""


def load_truth(path: Path) -> np.ndarray:
    """The true alpha of ``path`` (``NAME.alpha.png`` beside ``NAME.jpg``), HxW uint8."""
    with Image.open(path.with_name(path.stem + ".alpha.png")) as img:
        return np.asarray(img.convert("L"))


def to_size(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``alpha`` (HxW uint8) resized to ``size`` (width, height) with PIL LANCZOS, as the
    adapter and rembg resize their masks; unchanged when it is that size already."""
    if (alpha.shape[1], alpha.shape[0]) == tuple(size):
        return alpha
    return np.asarray(Image.fromarray(alpha, "L").resize(size, Image.Resampling.LANCZOS))


def score(alpha: np.ndarray, truth: metrics.Truth) -> dict[str, float]:
    """One image: ``alpha`` (HxW uint8, any size) resized to the truth's size, then SAD, MSE, Grad,
    IoU and boundary F against it (:meth:`metrics.Truth.score`)."""
    h, w = truth.shape
    return truth.score(to_size(alpha, (w, h)))


def ours_runner(settings, segmenter) -> Callable[[bytes], np.ndarray]:
    """The service's path: decode as a request is decoded, then the subject's alpha."""
    from app.pipeline.run import decode, subject_alpha

    def run(data: bytes) -> np.ndarray:
        return subject_alpha(decode(data, settings), segmenter, settings.edge_matting)

    return run


def ours_alpha(data: bytes, settings, segmenter, size: tuple[int, int] | None = None) -> np.ndarray:
    """Our mask of ``data`` (HxW uint8), resized with LANCZOS to ``size`` (width, height) if given."""
    alpha = ours_runner(settings, segmenter)(data)
    return alpha if size is None else to_size(alpha, size)


def settings_for(overrides: dict[str, str], base_env: dict[str, str] | None = None, root: Path = ROOT):
    """``Settings.from_env`` of the process environment with ``overrides`` laid over it (a relative
    MODEL_PATH taken from ``root``); :class:`Skip` when config refuses them."""
    from config import BootError, Settings

    env = dict(os.environ if base_env is None else base_env)
    for key, value in overrides.items():
        if key == "MODEL_PATH" and not Path(value).is_absolute():
            value = str(root / value)
        env[key] = value
    try:
        return Settings.from_env(env)
    except BootError as exc:
        raise Skip(f"settings refused: {exc}") from None


def load_ours(settings):
    """The segmenter the service would load for ``settings``; :class:`Skip` if it cannot."""
    from adapters import load_segmenter
    from config import BootError

    try:
        return load_segmenter(settings)
    except BootError as exc:  # ConfigError, ModelLoadError
        raise Skip(f"model refused: {exc}") from None


def gate(ours_sad: float, rembg_sad: float, tolerance: float = GATE_TOLERANCE) -> tuple[bool, str]:
    """``(passed, line)``: passed when ``ours_sad <= (1 + tolerance) x rembg_sad``."""
    limit = rembg_sad * (1.0 + tolerance)
    ratio = ours_sad / rembg_sad if rembg_sad > 0 else float("inf") if ours_sad > 0 else 1.0
    if ours_sad <= limit:
        return True, (f"quality gate passed: our mean SAD {ours_sad:.2f} is {ratio:.3f} x rembg's {rembg_sad:.2f} "
                      f"(allowed: up to {1 + tolerance:.2f} x)")
    return False, (f"quality gate FAILED: our mean SAD {ours_sad:.2f} is {ratio:.3f} x rembg's {rembg_sad:.2f}, "
                   f"more than the {1 + tolerance:.2f} x allowed ({(ratio - 1) * 100:+.1f}%)")


def gate_masks(ours: Sequence[np.ndarray], reference: Sequence[np.ndarray], truths: Sequence[np.ndarray],
               tolerance: float = GATE_TOLERANCE) -> tuple[bool, str]:
    """:func:`gate` on masks: the mean SAD of ``ours`` and of ``reference`` (rembg's), each mask
    resized (LANCZOS) to its truth's size."""
    if not (len(ours) == len(reference) == len(truths) > 0):
        raise ValueError("gate_masks: as many masks of ours and of the reference as truths, at least one")

    def mean_sad(masks: Sequence[np.ndarray]) -> float:
        return float(np.mean([metrics.sad(to_size(m, (t.shape[1], t.shape[0])), t) for m, t in zip(masks, truths)]))

    return gate(mean_sad(ours), mean_sad(reference), tolerance)
