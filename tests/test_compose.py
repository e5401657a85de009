"""The composition helpers (app/pipeline/compose.py) against Pillow's own arithmetic."""

from __future__ import annotations

import numpy as np

from app.pipeline import compose


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


def test_a_cut_out_keeps_every_colour_and_zeroes_only_the_fully_transparent_pixels():
    """cutout_array: the photo's colours untouched wherever alpha > 0 (no darkening at soft edges),
    all four bytes 0 where alpha is 0, on a real photo and its true matte."""
    from PIL import Image

    from tests.conftest import DATA

    rgb = np.asarray(Image.open(DATA / "quality" / "am2k" / "am2k-02.jpg").convert("RGB"))
    alpha = np.asarray(Image.open(DATA / "quality" / "am2k" / "am2k-02.alpha.png").convert("L"))
    rgba = compose.cutout_array(rgb, alpha)
    clear, seen = alpha == 0, alpha > 0
    assert 0 < clear.mean() < 1 and rgb[clear].any()  # the photo has colour where the matte is clear
    assert not rgba[clear].any()
    assert np.array_equal(rgba[seen][:, :3], rgb[seen]) and np.array_equal(rgba[..., 3], alpha)
