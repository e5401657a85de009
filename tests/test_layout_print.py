"""Layouts at print size (issue 28): a subject enlarged past its own pixels says so, the contact
shadow lies under every foot, a sticker's border holds the subject cleanly.

On real animals: AM-2k's photos with their true alpha mattes (tests/data/quality/am2k: real fur,
whiskers and hooves, no model needed); a synthetic silhouette where a geometric truth is needed.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from PIL import Image

from app.pipeline import compose, options
from app.pipeline.layout import ALPHA_THRESHOLD, BAND_PIXELS, lay_out, subject_box
from app.pipeline.layout.framing import pulled
from app.pipeline.layout.outline import thin
from app.pipeline.options import TRANSPARENT
from tests.conftest import DATA

AM2K = DATA / "quality" / "am2k"
WHITE = options.Background.from_text("white")
STICKER = {"crop": True, "padding": options.Padding.from_text("32px"), "size": options.Size.from_text("subject"),
           "outline": 24}  # preset=sticker's fields


def Layout(**fields):
    """The request's layout with ``fields`` set, through its declaration, the rest their defaults."""
    return msgspec.convert({"background": TRANSPARENT, **fields}, options.Layout, dec_hook=lambda t, v: t(v))


def am2k(name: str) -> tuple[np.ndarray, np.ndarray]:
    """An AM-2k photo (RGB) and its true alpha matte."""
    with Image.open(AM2K / f"{name}.jpg") as img, Image.open(AM2K / f"{name}.alpha.png") as matte:
        return np.asarray(img.convert("RGB")), np.asarray(matte.convert("L"))


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], np.float32)


# ------------------------------------------------------------------ enlargement


@pytest.mark.parametrize("size, max_upscale, upscaled", [("2000x2000", 4.0, True), ("2000x2000", 1.0, False),
                                                         ("600x600", 4.0, False)])
def test_the_plan_says_when_the_subject_is_enlarged_past_its_pixels(size, max_upscale, upscaled):
    rgb, alpha = am2k("am2k-13")  # the wildebeest: about 800 x 1140 px
    laid = lay_out(compose.cutout_array(rgb, alpha), Layout(
        crop=True, size=options.Size.from_text(size), scale=0.85, max_upscale=max_upscale, background=WHITE))
    p, fg = laid.plan, laid.foreground
    assert laid.image.shape[:2] == (p.canvas[1], p.canvas[0]) == tuple(reversed(options.Size.from_text(size)[1:]))
    assert p.upscaled is upscaled
    # measured on the output: the subject's box against its box in the photo
    grown = fg.width > p.source.width + 2 or fg.height > p.source.height + 2
    assert grown is upscaled
    if max_upscale == 1.0:  # not enlarged: its own size, smaller than 85 % of the canvas
        assert abs(fg.height - p.source.height) <= 2 and fg.height < 0.85 * 2000


# ------------------------------------------------------------------ contact shadow


def four_legs() -> np.ndarray:
    """A brown animal seen from above its back: a body and four legs whose feet stand at different
    heights (the far ones higher in the picture), on a transparent canvas."""
    H, W = 480, 640
    yy, xx = np.mgrid[:H, :W]
    body = ((xx - 320) / 230) ** 2 + ((yy - 190) / 90) ** 2 <= 1
    legs = np.zeros((H, W), bool)
    for x, bottom in zip((150, 260, 380, 490), (450, 440, 430, 420)):
        legs |= (abs(xx - x) <= 18) & (yy >= 190) & (yy < bottom)
    alpha = np.where(body | legs, 255, 0).astype(np.uint8)
    return compose.cutout_array(np.full((H, W, 3), (120, 80, 50), np.uint8), alpha)


def feet(alpha: np.ndarray) -> list[tuple[int, int]]:
    """(column, row) of each foot's lowest pixel: the runs of columns that reach into the bottom
    tenth of the subject's height."""
    box = subject_box(alpha)
    band = alpha[box.bottom - round(0.1 * box.height):box.bottom] >= ALPHA_THRESHOLD
    cols = np.flatnonzero(band.any(axis=0))
    runs = np.split(cols, np.flatnonzero(np.diff(cols) > 8) + 1)
    lowest = box.bottom - 1 - np.argmax(band[::-1], axis=0)
    return [(int(run[np.argmax(lowest[run])]), int(lowest[run].max())) for run in runs]


def shade_under_each_foot(subject: np.ndarray, laid, at: list[tuple[int, int]]) -> list[float]:
    """How much darker than the white background the output is 4 px under each foot (its lowest
    pixel in the subject: ``at``), 0..255."""
    sx, sy, tx, ty = laid.plan.transform
    assert (sx, sy) == (1.0, 1.0)
    out = laid.image
    shades = []
    for x, y in at:
        cx, cy = x + round(tx), y + round(ty) + 4
        assert subject[y + 4, x, 3] == 0  # the floor, not the subject
        shades.append(255 - float(luma(out[cy, cx])))
    return shades


def test_a_contact_shadow_lies_under_each_foot():
    subject = four_legs()
    found = feet(subject[..., 3])
    assert len(found) == 4
    laid = lay_out(subject, Layout(crop=True, padding=options.Padding.from_text("10%"), shadow="contact",
                                   background=WHITE))
    shades = shade_under_each_foot(subject, laid, found)
    # each foot, up to 30 px above the lowest (9 % of the height), stands in shade (one ellipse
    # under the lowest foot left the two highest in none)
    assert min(shades) > 0.5 * max(shades) and min(shades) > 20, shades
    # a floor shadow: nothing beside the body at half its height
    out = laid.image
    row = laid.foreground.top + laid.foreground.height // 3
    assert (out[row, :laid.foreground.left] == 255).all()


def test_a_contact_shadow_lies_under_each_hoof_of_a_real_animal():
    rgb, alpha = am2k("am2k-13")  # a wildebeest walking towards the camera
    subject = compose.cutout_array(rgb, alpha)
    hooves = [(395, 1242), (720, 1201), (830, 1170)]  # each hoof's lowest pixel (the fourth is hidden)
    for x, y in hooves:
        assert alpha[y, x] >= ALPHA_THRESHOLD and (alpha[y + 1:, x - 10:x + 11] < ALPHA_THRESHOLD).all()
    laid = lay_out(subject, Layout(crop=True, padding=options.Padding.from_text("10%"), shadow="contact",
                                   background=WHITE))
    shades = shade_under_each_foot(subject, laid, hooves)
    assert min(shades) > 0.5 * max(shades) and min(shades) > 20, shades


# ------------------------------------------------------------------ stickers


@pytest.fixture(scope="module")
def cat_on_magenta():
    """AM-2k's cat (white fur, whiskers) composited with its true matte over magenta, a colour it
    has nowhere: every trace of magenta in a sticker of it is the old background showing."""
    rgb, alpha = am2k("am2k-03")
    a = alpha[..., None].astype(np.float32) / 255
    photo = np.round(a * rgb + (1 - a) * np.array([255, 0, 255], np.float32)).astype(np.uint8)
    return compose.cutout_array(photo, alpha), alpha


def magenta(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb[..., :3].astype(np.int16)
    return (rgb[..., 0] + rgb[..., 2]) // 2 - rgb[..., 1]


def test_no_background_colour_between_the_subject_and_its_border(cat_on_magenta):
    subject, alpha = cat_on_magenta
    laid = lay_out(subject, Layout(**STICKER))
    out = laid.image
    inside = out[..., 3] == 255  # within the border's outer edge
    # the cat's own pinks (nose, ears) reach 40 at most; the fringe mixed with magenta far more
    tinted = inside & (magenta(out) > 48)
    soft = ((alpha > 0) & (alpha < 255)).sum()
    assert tinted.sum() < 0.002 * soft, (tinted.sum(), soft)  # the photo's own colours there: 16 % of it


def test_a_sticker_trims_whiskers_at_its_border(cat_on_magenta):
    subject, alpha = cat_on_magenta
    laid = lay_out(subject, Layout(**STICKER))
    out, fg = laid.image, laid.foreground
    H, W = out.shape[:2]
    box = subject_box(alpha)
    # the whiskers past the border are cut off: the subject, its box and the canvas are smaller
    assert fg.width < box.width - 100
    assert (W, H) == (fg.width + 64, fg.height + 64)
    # solid: no translucent bands where whiskers stuck out, only the border's antialiased edge
    a = out[..., 3]
    opaque = a == 255
    edge = opaque & ~(np.roll(opaque, 1, 0) & np.roll(opaque, -1, 0) & np.roll(opaque, 1, 1) & np.roll(opaque, -1, 1))
    translucent = (a >= ALPHA_THRESHOLD) & (a < 248)
    assert translucent.sum() < 3 * edge.sum(), (translucent.sum(), edge.sum())  # it was 18 times
    # what is at least half opaque lies on the border (all but the whiskers' tips past it)
    sx, sy, tx, ty = laid.plan.transform
    body = np.zeros((H, W), bool)
    ys, xs = np.nonzero(alpha >= 128)
    xs, ys = xs + round(tx), ys + round(ty)
    keep = (xs >= 0) & (xs < W) & (ys >= 0) & (ys < H)
    body[ys[keep], xs[keep]] = True
    assert opaque[body].mean() > 0.995


def test_pulled_colours_are_the_same_band_by_band_as_over_the_whole_subject(cat_on_magenta):
    """The soft edge's colours are pulled band by band, in runs of columns: on one grid of cells,
    each band with all it reads, so that no seam shows where bands meet."""
    subject, alpha = cat_on_magenta
    laid = lay_out(subject, Layout(**STICKER, outline_color=options.Color((0, 0, 0))))
    out = laid.image
    H, W = out.shape[:2]
    assert H > 2 * max(16, BAND_PIXELS // W)  # several bands
    whole = pulled(subject, 24 + thin(24) + 1)
    sx, sy, tx, ty = laid.plan.transform
    ys, xs = np.nonzero((alpha > 0) & (alpha < 255))
    cx, cy = xs + round(tx), ys + round(ty)
    inside = (cx >= 0) & (cx < W) & (cy >= 0) & (cy < H)
    ys, xs, cx, cy = ys[inside], xs[inside], cx[inside], cy[inside]
    on_black = out[cy, cx, 3] == 255  # the subject over the black outline: a times its colour
    expected = whole[ys, xs, :3].astype(np.float32) * alpha[ys, xs, None] / 255
    assert np.abs(out[cy, cx, :3] - expected)[on_black].max() <= 1
