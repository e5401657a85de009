"""The composition helpers (app/pipeline/compose.py) against Pillow's own arithmetic."""

from __future__ import annotations

import numpy as np


def test_the_array_blend_is_pillow_s_paste_to_the_byte():
    """over_color_array (what the model sees of a transparent upload) equals over_color, which pastes
    with Pillow, on every alpha and colour value."""
    from app.pipeline.compose import over_color, over_color_array

    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, (300, 257, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (300, 257), dtype=np.uint8)
    alpha[0, :256] = np.arange(256)
    for color in ((255, 255, 255), (0, 0, 0), (17, 200, 93)):
        assert np.array_equal(over_color_array(rgb, alpha, color), np.asarray(over_color(rgb, alpha, color)))
