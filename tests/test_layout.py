"""The layout stage (app/pipeline/layout/): framing, backgrounds, shadows, outlines.

Measured on real outputs: a real cut-out (the model's mask of a shared photo) and, where a
geometric truth is needed (outline width, colour bleed), synthetic discs. Margins, boxes and
widths are read back from the output's alpha, never taken from the plan alone.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image, ImageFilter

from app.pipeline import compose, options
from app.pipeline.options import TRANSPARENT
from app.pipeline.layout import ALPHA_THRESHOLD, Box, dilate_disc, lay_out, plan, subject_box
from tests.conftest import FIXTURES


def Layout(**fields):
    """The request's layout with ``fields`` set, through its declaration (app.pipeline.options.Layout:
    each value checked against its type and range, a tuple made the declared FormValue); the other
    fields their defaults, the background the one an endpoint without one gets: transparent."""
    return msgspec.convert({"background": TRANSPARENT, **fields}, options.Layout, dec_hook=lambda t, v: t(v))


def pad(top, right=None, bottom=None, left=None, unit="px"):
    right = top if right is None else right
    bottom = top if bottom is None else bottom
    left = right if left is None else left
    return tuple((float(v), unit) for v in (top, right, bottom, left))


def load(name: str) -> np.ndarray:
    with Image.open(FIXTURES / "images" / name) as img:
        return np.asarray(img.convert("RGB"))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load("animal-1.jpg")


@pytest.fixture(scope="module")
def cutout(photo, segmenter):
    """The real cut-out of animal-1.jpg (the model's own mask), and its box."""
    alpha = segmenter.mask(photo)
    subject = compose.cutout_array(photo, alpha)
    box = subject_box(alpha)
    assert box is not None and box.width > 200 and box.height > 100
    return subject, box


def disc(size=(300, 300), centre=(150.0, 150.0), radius=80.0, color=(200, 120, 40), edge=1.0) -> np.ndarray:
    """An RGBA disc with an antialiased edge ``edge`` px wide, transparent pixels zeroed."""
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot(xx + 0.5 - centre[0], yy + 0.5 - centre[1])
    alpha = np.clip((radius - d) / edge + 0.5, 0, 1)
    alpha = np.round(alpha * 255).astype(np.uint8)
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = color
    return compose.cutout_array(rgb, alpha)


def placed(subject: np.ndarray, box: Box, at: Box, canvas: tuple[int, int]) -> np.ndarray:
    """The unscaled subject moved so that its ``box`` lands at ``at``, on a transparent canvas
    (what the subject layer is when nothing is scaled; its faint fringe outside the box included)."""
    W, H = canvas
    h, w = subject.shape[:2]
    dx, dy = at.left - box.left, at.top - box.top
    out = np.zeros((H, W, 4), np.uint8)
    x0, y0, x1, y1 = max(0, dx), max(0, dy), min(W, dx + w), min(H, dy + h)
    out[y0:y1, x0:x1] = subject[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    return out


def box_of(rgba: np.ndarray, threshold: int = ALPHA_THRESHOLD) -> Box | None:
    return subject_box(np.ascontiguousarray(rgba[..., 3]), threshold)


# ------------------------------------------------------------------ boxes and the identity


def test_subject_box_ignores_faint_fringe():
    alpha = np.zeros((50, 80), np.uint8)
    alpha[10:20, 30:45] = 255
    alpha[0, 0] = alpha[49, 79] = ALPHA_THRESHOLD - 1  # matting noise far away
    assert subject_box(alpha) == Box(30, 10, 15, 10)
    alpha[45, 2] = ALPHA_THRESHOLD
    assert subject_box(alpha) == Box(2, 10, 43, 36)
    assert subject_box(np.zeros((5, 5), np.uint8)) is None


def test_identity_layout_returns_the_subject_unchanged(cutout):
    subject, box = cutout
    before = subject.copy()
    for layout in (Layout(), Layout(padding=pad(0, unit="%"))):
        laid = lay_out(subject, layout)
        assert laid.image is subject
        assert np.array_equal(laid.image, before)
        assert laid.foreground == box == box_of(subject)
        assert laid.plan.canvas == (subject.shape[1], subject.shape[0])


# ------------------------------------------------------------------ framing


def test_crop_with_px_padding(cutout):
    subject, box = cutout
    laid = lay_out(subject, Layout(crop=True, padding=pad(12, 34, 56, 78)))
    out = laid.image
    H, W = out.shape[:2]
    assert (W, H) == (box.width + 78 + 34, box.height + 12 + 56)
    fg = box_of(out)
    assert fg == laid.foreground == Box(78, 12, box.width, box.height)
    assert (fg.left, fg.top, W - fg.right, H - fg.bottom) == (78, 12, 34, 56)
    # no resampling: the subject's own pixels, moved
    assert np.array_equal(out, placed(subject, box, fg, (W, H)))


def test_crop_with_percent_padding(cutout):
    subject, box = cutout
    laid = lay_out(subject, Layout(crop=True, padding=pad(10, 5, 0, 20, unit="%")))
    out = laid.image
    H, W = out.shape[:2]
    fg = box_of(out)
    margins = (fg.top, W - fg.right, H - fg.bottom, fg.left)
    assert margins == (round(box.height * 0.10), round(box.width * 0.05), 0, round(box.width * 0.20))


def test_subject_size_equals_crop(cutout):
    subject, box = cutout
    a = lay_out(subject, Layout(size=("subject", 0, 0), padding=pad(7)))
    b = lay_out(subject, Layout(crop=True, padding=pad(7)))
    assert np.array_equal(a.image, b.image)


def test_original_size_grows_only_for_padding_past_the_edge():
    subject = disc(size=(200, 120), centre=(40, 60), radius=30)  # 10 px from the left edge
    box = box_of(subject)
    laid = lay_out(subject, Layout(padding=pad(25)))
    H, W = laid.image.shape[:2]
    assert box.left == 10 and (W, H) == (200 + 15, 120)
    fg = box_of(laid.image)
    assert fg.left == 25 and fg.top == box.top  # moved right by the growth only


def test_fixed_size_fits_centred_with_aspect_kept(cutout):
    subject, box = cutout
    laid = lay_out(subject, Layout(size=("px", 600, 600), padding=pad(50)))
    out = laid.image
    assert out.shape == (600, 600, 4)
    fg = box_of(out)
    assert abs(fg.width - 500) <= 1  # the wide side fills the room the padding leaves
    assert abs(fg.left - (600 - fg.right)) <= 1 and abs(fg.top - (600 - fg.bottom)) <= 1  # centred
    assert abs(fg.width * box.height - fg.height * box.width) <= max(box.width, box.height) * 2  # aspect kept
    assert abs(fg.left - laid.plan.subject.left) <= 1 and abs(fg.width - laid.plan.subject.width) <= 2


def test_fixed_size_percent_padding_is_of_the_scaled_subject(cutout):
    subject, box = cutout
    laid = lay_out(subject, Layout(size=("px", 700, 700), padding=pad(0, 10, 0, 10, unit="%")))
    fg = box_of(laid.image)
    # width * (1 + 0.1 + 0.1) fills the 700 px
    assert abs(fg.width * 1.2 - 700) <= 2
    assert abs(fg.left - 0.1 * fg.width) <= 2


def test_no_upscale_past_max_upscale(cutout):
    subject, box = cutout
    laid = lay_out(subject, Layout(size=("px", 1400, 1400)))
    assert laid.plan.scale == 1.0 and not laid.plan.resampled
    fg = box_of(laid.image)
    assert (fg.width, fg.height) == (box.width, box.height)
    laid = lay_out(subject, Layout(size=("px", 1400, 1400), max_upscale=1.25))
    fg = box_of(laid.image)
    assert abs(fg.width - box.width * 1.25) <= 1.5 and abs(fg.height - box.height * 1.25) <= 1.5


def test_scale_with_fixed_size(cutout):
    subject, box = cutout
    for scale in (0.5, 0.3):
        laid = lay_out(subject, Layout(size=("px", 800, 800), scale=scale))
        fg = box_of(laid.image)
        assert abs(max(fg.width, fg.height) - scale * 800) <= 1  # the largest side is that share
        assert abs(fg.left - (800 - fg.right)) <= 1 and abs(fg.top - (800 - fg.bottom)) <= 1


def test_scale_with_subject_and_original_size(cutout):
    subject, box = cutout
    laid = lay_out(subject, Layout(size=("subject", 0, 0), scale=0.8))
    H, W = laid.image.shape[:2]
    fg = box_of(laid.image)
    assert (fg.width, fg.height) == (box.width, box.height)  # the canvas is sized, not the subject
    assert abs(W * 0.8 - box.width) <= 1 and abs(H * 0.8 - box.height) <= 1
    assert abs(fg.left - (W - fg.right)) <= 1 and abs(fg.top - (H - fg.bottom)) <= 1
    laid = lay_out(subject, Layout(scale=0.5))  # original size: the input's proportions
    H, W = laid.image.shape[:2]
    h, w = subject.shape[:2]
    assert abs(W / H - w / h) < 0.01
    fg = box_of(laid.image)
    assert abs(max(fg.width / W, fg.height / H) - 0.5) <= 1 / min(W, H)


def test_position(cutout):
    subject, box = cutout
    W = H = 1000
    laid = lay_out(subject, Layout(size=("px", W, H), position=(0.0, 1.0), padding=pad(20)))
    fg = box_of(laid.image)
    assert (fg.left, H - fg.bottom) == (20, 20)
    laid = lay_out(subject, Layout(size=("px", W, H), position=(1.0, 0.0)))
    fg = box_of(laid.image)
    assert (W - fg.right, fg.top) == (0, 0)
    laid = lay_out(subject, Layout(size=("px", W, H), position=(0.25, 0.75)))
    fg = box_of(laid.image)
    assert abs(fg.left - 0.25 * (W - box.width)) <= 1 and abs(fg.top - 0.75 * (H - box.height)) <= 1


@pytest.mark.parametrize("layout", [
    Layout(crop=True, padding=pad(9, 3, 0, 31)),
    Layout(size=("px", 640, 480), padding=pad(5, unit="%")),
    Layout(size=("px", 1300, 900), max_upscale=3.0, position=(0.1, 0.9)),
    Layout(size=("subject", 0, 0), scale=0.6, position=(0.0, 0.0)),
])
def test_foreground_is_the_box_of_the_outputs_alpha(cutout, layout):
    subject, _ = cutout
    laid = lay_out(subject, layout)
    assert laid.foreground == box_of(laid.image)
    assert laid.image.shape[:2] == laid.plan.canvas[::-1]


def test_resampling_is_premultiplied():
    """Scaling a soft edge keeps its colour (straight-alpha resampling would pull in the zeroed
    colour of transparent pixels, darkening the edge)."""
    subject = disc(size=(400, 400), centre=(200, 200), color=(200, 100, 50), edge=6.0)
    laid = lay_out(subject, Layout(size=("px", 64, 64), padding=pad(10)))
    out = laid.image
    edge = (out[..., 3] >= 64) & (out[..., 3] < 255)  # below 64, 8-bit premultiplied colours lose precision
    assert edge.sum() > 30
    assert np.abs(out[edge][:, :3].astype(int) - (200, 100, 50)).max() <= 6
    sx, sy, tx, ty = laid.plan.transform
    straight = np.asarray(Image.fromarray(subject).convert("RGBX").resize(
        (64, 64), Image.Resampling.LANCZOS, box=(-tx / sx, -ty / sy, (64 - tx) / sx, (64 - ty) / sy)))
    assert np.abs(straight[edge][:, :3].astype(int) - (200, 100, 50)).max() > 12  # what the test tells apart


# ------------------------------------------------------------------ backgrounds


def test_color_background_opaque_and_translucent(cutout):
    subject, box = cutout
    opaque = subject[..., 3] == 255
    out = lay_out(subject, Layout(background=("color", 12, 34, 56, 255))).image
    assert (out[..., 3] == 255).all()
    assert np.array_equal(out[opaque], subject[opaque])
    assert tuple(out[0, 0]) == (12, 34, 56, 255)
    out = lay_out(subject, Layout(background=("color", 12, 34, 56, 128))).image
    assert tuple(out[0, 0]) == (12, 34, 56, 128)
    assert np.array_equal(out[opaque], subject[opaque])


def test_blur_background(cutout, photo):
    subject, box = cutout
    alpha = subject[..., 3]
    out = lay_out(subject, Layout(background=("blur",), blur_radius=16), photo=photo).image
    assert out.shape == subject.shape and (out[..., 3] == 255).all()
    opaque = alpha == 255
    assert np.array_equal(out[opaque][:, :3], photo[opaque])  # the subject stays sharp
    far = dilate_disc((alpha > 0).astype(np.uint8) * 255, 40) == 0  # background, 40 px from the subject
    assert far.mean() > 0.3
    diff = np.abs(out[..., :3].astype(int) - photo)[far].mean()
    assert diff > 4

    def detail(rgb):  # mean absolute Laplacian of the grey image, over the far background
        g = rgb.astype(np.float32).mean(axis=2)
        lap = np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
        return lap[far[1:-1, 1:-1]].mean()

    assert detail(out[..., :3]) < 0.2 * detail(photo)


def test_blur_background_does_not_bleed_the_subject():
    """A red disc on a blue ground: the blurred background next to the disc stays blue (the
    subject is removed before blurring); a plain blur of the photo would be pink there."""
    size, radius = 240, 60
    subject = disc(size=(size, size), centre=(120, 120), radius=radius, color=(220, 30, 30), edge=4.0)
    a = subject[..., 3:].astype(np.float32) / 255
    blue = np.array([30, 60, 200], np.float32)
    rng = np.random.default_rng(5)
    ground = np.clip(blue + rng.normal(0, 6, (size, size, 3)), 0, 255)
    photo = np.round(a * np.array([220, 30, 30], np.float32) + (1 - a) * ground).astype(np.uint8)
    out = lay_out(subject, Layout(background=("blur",), blur_radius=20), photo=photo).image
    near = (dilate_disc(subject[..., 3], 12) > 0) & (subject[..., 3] == 0)  # a ring just outside the disc
    ours = out[near][:, 0].mean()
    naive = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(20)))[near][:, 0].mean()
    assert ours < 45 and naive > ours + 30
    assert abs(out[near][:, 2].mean() - 200) < 15


def test_blur_background_follows_the_framing(cutout, photo):
    """With crop and padding, the blurred background is the photo's own around the subject."""
    subject, box = cutout
    laid = lay_out(subject, Layout(crop=True, padding=pad(30), background=("blur",), blur_radius=12), photo=photo)
    out = laid.image
    ref = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(12)))
    ref = ref[box.top - 30:box.bottom + 30, box.left - 30:box.right + 30]
    far = dilate_disc(placed(subject, box, laid.foreground, laid.plan.canvas)[..., 3], 50) == 0
    assert far.mean() > 0.05
    assert np.abs(out[..., :3].astype(int) - ref)[far].mean() < 12  # aligned (misaligned: ~30+)


def test_image_background_cover(cutout):
    subject, box = cutout
    image = load("animal-2.jpg")  # 610x700: taller than the canvas, cropped top and bottom
    laid = lay_out(subject, Layout(crop=True, padding=pad(20), background=("image",)), background_image=image)
    out = laid.image
    H, W = out.shape[:2]
    assert (out[..., 3] == 255).all()
    k = W / image.shape[1]
    top = (image.shape[0] - H / k) / 2
    ref = np.asarray(Image.fromarray(image).resize((W, H), Image.Resampling.BICUBIC,
                                                   box=(0, top, image.shape[1], top + H / k)))
    sub = placed(subject, box, laid.foreground, (W, H))
    free = sub[..., 3] == 0
    diff = np.abs(out[free][:, :3].astype(int) - ref[free]).max(axis=1)
    # Pillow's own resampling differs by a few levels at a handful of pixels with the crop's offset
    assert (diff <= 1).mean() > 0.999 and diff.max() <= 8
    opaque = sub[..., 3] == 255
    assert np.array_equal(out[opaque], sub[opaque])


def test_image_background_contain(cutout):
    subject, box = cutout
    image = load("animal-1.jpg")[::-1].copy()  # 1000x667, upside down: easy to tell from the subject
    laid = lay_out(subject, Layout(size=("px", 800, 800), background=("image",), background_fit="contain"),
                   background_image=image)
    out = laid.image
    # fitted inside: 800 wide, 534 tall, centred; above and below it is transparent
    rh = round(667 * 800 / 1000)
    r0 = (800 - rh) // 2
    fg = laid.foreground
    assert fg.top > r0  # the subject (800x400, centred) is within the image's rows
    assert (out[:r0, :, 3] == 0).all() and (out[r0 + rh:, :, 3] == 0).all()
    assert (out[r0:r0 + rh, :, 3] == 255).all()  # the image is under the subject
    ref = np.asarray(Image.fromarray(image).resize((800, rh), Image.Resampling.BICUBIC))
    sub_alpha = np.zeros((800, 800), np.uint8)
    sub_alpha[fg.top:fg.bottom, fg.left:fg.right] = 1
    free = (sub_alpha[r0:r0 + rh] == 0) & (out[r0:r0 + rh, :, 3] == 255)
    assert free.mean() > 0.2
    diff = np.abs(out[r0:r0 + rh][free][:, :3].astype(int) - ref[free]).max(axis=1)
    assert (diff <= 1).mean() > 0.999 and diff.max() <= 8


# ------------------------------------------------------------------ shadows


def test_drop_shadow(cutout):
    subject, box = cutout
    layout = Layout(crop=True, shadow="drop", shadow_offset=(25, 25), shadow_blur=8, shadow_opacity=0.6,
                    shadow_color=(20, 40, 60))
    laid = lay_out(subject, layout)
    out = laid.image
    H, W = out.shape[:2]
    sub = placed(subject, box, laid.foreground, (W, H))
    # the canvas grew to hold it: nothing reaches its border
    assert W > box.width + 25 + 16 and H > box.height + 25 + 16
    cast = out[..., 3].astype(int) - sub[..., 3]  # what the shadow adds
    assert max(cast[0].max(), cast[-1].max(), cast[:, 0].max(), cast[:, -1].max()) <= 1
    # the subject is on top, unchanged where it is opaque
    opaque = sub[..., 3] == 255
    assert np.array_equal(out[opaque], sub[opaque])
    # the shadow lies outside the subject: in the shadow colour, at most the opacity
    shadow = (out[..., 3] > 2) & (sub[..., 3] == 0)
    assert shadow.sum() > 10 * (box.width + box.height)
    assert (out[shadow][:, :3] == (20, 40, 60)).all()
    assert out[shadow][:, 3].max() <= round(0.6 * 255) + 1
    # it fades with the distance from the offset silhouette
    silhouette = np.zeros((H, W), np.uint8)
    silhouette[25:, 25:] = np.where(sub[:H - 25, :W - 25, 3] >= 128, 255, 0)  # its half-opaque core
    rings, inside = [], None
    for d in (2, 6, 10, 14, 18, 22):
        grown = dilate_disc(silhouette, d) > 0
        ring = grown & ~(inside if inside is not None else (silhouette > 0)) & (sub[..., 3] == 0)
        rings.append(out[ring][:, 3].mean())
        inside = grown
    assert all(a > b for a, b in zip(rings, rings[1:])), rings
    assert rings[0] > 40 and rings[-1] < 10


def test_contact_shadow(cutout):
    subject, box = cutout
    laid = lay_out(subject, Layout(crop=True, shadow="contact", shadow_blur=6, shadow_opacity=0.7))
    out = laid.image
    H, W = out.shape[:2]
    fg = laid.foreground
    sub = placed(subject, box, fg, (W, H))
    opaque = sub[..., 3] == 255
    assert np.array_equal(out[opaque], sub[opaque])
    assert H > fg.bottom + 6  # grown below the subject
    # under the lowest part: the subject's bottom band (5 % of its height)
    band = max(1, round(0.05 * fg.height))
    cols = np.flatnonzero(sub[fg.bottom - band:fg.bottom, :, 3].max(axis=0) >= ALPHA_THRESHOLD)
    bottom_width, centre = cols[-1] + 1 - cols[0], (cols[0] + cols[-1] + 1) // 2
    row = out[fg.bottom + 1, :, 3]
    spread = np.flatnonzero(row >= 10)
    assert 0.8 * bottom_width < spread[-1] + 1 - spread[0] < 1.5 * bottom_width
    # it fades downwards from the subject's bottom
    column = out[fg.bottom:, centre, 3].astype(int)
    assert column[0] > 60 and column[-1] <= 1
    assert (np.diff(column) <= 1).all()
    # nothing up the subject's sides: a floor shadow only
    upper = out[:fg.top + fg.height // 2, :, 3][sub[:fg.top + fg.height // 2, :, 3] == 0]
    assert upper.max() == 0
    # shadow pixels are shadow-coloured (black) where the subject is absent
    shadow = (out[..., 3] > 0) & (sub[..., 3] == 0)
    assert (out[shadow][:, :3] == 0).all()


@pytest.mark.parametrize("blur_radius, shadow_blur", [(8, 20), (20, 8), (20, 20)])
def test_shadow_over_a_blurred_background_lands_where_it_does_over_a_colour(cutout, blur_radius, shadow_blur):
    """Over a uniform photo the blurred background is that colour: the shadow (drawn into the
    background at low resolution, on the background's grid) must match the colour case's."""
    subject, box = cutout
    grey = np.full(subject.shape[:3][:2] + (3,), 128, np.uint8)
    common = dict(crop=True, padding=pad(30), shadow="drop", shadow_offset=(20, 14), shadow_blur=shadow_blur,
                  shadow_opacity=0.8, blur_radius=blur_radius)
    over_blur = lay_out(subject, Layout(background=("blur",), **common), photo=grey).image.astype(int)
    over_colour = lay_out(subject, Layout(background=("color", 128, 128, 128, 255), **common)).image.astype(int)
    diff = np.abs(over_blur - over_colour)
    assert np.abs(over_colour[..., :3] - 128).max() > 60  # there is a shadow
    assert diff.max() <= 6 and diff.mean() < 0.5


def test_shadow_is_clipped_by_a_fixed_size(cutout):
    subject, _ = cutout
    laid = lay_out(subject, Layout(size=("px", 500, 300), shadow="drop", outline=10, shadow_offset=(40, 40)))
    assert laid.image.shape == (300, 500, 4)
    assert laid.plan.shadow.right > 500 or laid.plan.shadow.bottom > 300  # the plan says it reaches past


def test_transparent_pixels_carry_no_colour(cutout):
    subject, _ = cutout
    out = lay_out(subject, Layout(crop=True, padding=pad(15), shadow="drop", shadow_color=(255, 0, 0),
                                  outline=5, outline_color=(0, 255, 0))).image
    clear = out[..., 3] == 0
    assert clear.any() and (out[clear] == 0).all()


# ------------------------------------------------------------------ outlines


@pytest.mark.parametrize("r", [1, 3, 7, 12])
def test_dilate_disc_matches_brute_force(r):
    rng = np.random.default_rng(r)
    a = np.where(rng.random((37, 53)) < 0.02, rng.integers(1, 256, (37, 53)), 0).astype(np.uint8)
    expected = np.zeros_like(a)
    padded = np.pad(a, r)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx * dx + dy * dy <= r * r:
                np.maximum(expected, padded[r + dy:r + dy + 37, r + dx:r + dx + 53], out=expected)
    assert np.array_equal(dilate_disc(a, r, strip=8), expected)
    assert np.array_equal(dilate_disc(a, r), expected)


def test_outline_width_and_colour_on_a_disc():
    radius, r = 80.0, 15
    subject = disc(radius=radius, color=(200, 120, 40))
    laid = lay_out(subject, Layout(crop=True, outline=r, outline_color=(10, 200, 30)))
    out = laid.image
    H, W = out.shape[:2]
    fg = laid.foreground
    assert (W, H) == (fg.width + 2 * r, fg.height + 2 * r)  # the canvas holds it
    cx, cy = fg.left + fg.width / 2, fg.top + fg.height / 2

    def reach(alpha, angle):  # distance from the centre to where alpha falls below half (0 past the canvas)
        d = np.arange(0, max(W, H), 0.25)
        xs, ys = np.floor(cx + d * math.cos(angle)).astype(int), np.floor(cy + d * math.sin(angle)).astype(int)
        inside = (xs >= 0) & (xs < W) & (ys >= 0) & (ys < H)
        values = np.zeros(d.shape, int)
        values[inside] = alpha[ys[inside], xs[inside]]
        return d[np.argmax(values < 128)]

    sub = placed(subject, box_of(subject), fg, (W, H))
    for k in range(16):
        angle = k * math.pi / 8
        assert abs(reach(out[..., 3], angle) - reach(sub[..., 3], angle) - r) <= 1
    ring = (sub[..., 3] == 0) & (out[..., 3] == 255)
    assert ring.sum() > 0.9 * math.pi * ((radius + r - 1) ** 2 - (radius + 1) ** 2)
    assert (out[ring][:, :3] == (10, 200, 30)).all()
    opaque = sub[..., 3] == 255
    assert np.array_equal(out[opaque], sub[opaque])


def test_outline_on_the_real_cutout(cutout):
    subject, box = cutout
    r = 24
    laid = lay_out(subject, Layout(crop=True, outline=r))
    out = laid.image
    H, W = out.shape[:2]
    fg = laid.foreground
    # the subject within its outline (faint specks past it trimmed) and the outline
    assert (W, H) == (fg.width + 2 * r, fg.height + 2 * r)
    sub = placed(subject, laid.plan.source, laid.plan.subject, (W, H))
    half = sub[..., 3] >= 128  # where the subject is at least half opaque: the outline grows from there
    # the outline alone, where the subject is not (the subject's faint fringe over it adds to the alpha)
    reached = half | ((sub[..., 3] == 0) & (out[..., 3] >= 128))
    hb = subject_box(half.astype(np.uint8) * 255)
    ob = subject_box(reached.astype(np.uint8) * 255)
    # r px past it; less, by up to r / 4, where the outline's opening rounds off a thin tip
    tip = math.ceil(r / 4)
    assert all(abs(a - b) <= tip for a, b in zip((ob.left, ob.top, ob.right, ob.bottom),
                                                 (hb.left - r, hb.top - r, hb.right + r, hb.bottom + r))), (ob, hb)
    ring = (sub[..., 3] < 128) & (out[..., 3] >= 128)
    assert ring.sum() > r * (box.width + box.height)
    assert (out[ring][:, 3] == 255).mean() > 0.9  # solid, not a translucent copy of the fur
    bare = (sub[..., 3] == 0) & (out[..., 3] == 255)
    assert bare.sum() > 0.5 * r * (box.width + box.height)
    assert (out[bare][:, :3] == 255).all()  # white by default


# ------------------------------------------------------------------ errors


def test_missing_images_are_refused(cutout):
    subject, _ = cutout
    with pytest.raises(ValueError):
        lay_out(subject, Layout(background=("blur",)))
    with pytest.raises(ValueError):
        lay_out(subject, Layout(background=("image",)))


# ------------------------------------------------------------------ the plan, property-tested


@st.composite
def scenes(draw):
    w, h = draw(st.integers(24, 160)), draw(st.integers(24, 160))
    rx = draw(st.floats(3, w / 2 - 1))
    ry = draw(st.floats(3, h / 2 - 1))
    cx = draw(st.floats(rx, w - rx))
    cy = draw(st.floats(ry, h - ry))
    padding = tuple(draw(st.one_of(st.tuples(st.integers(0, 40).map(float), st.just("px")),
                                   st.tuples(st.floats(0, 60), st.just("%")))) for _ in range(4))
    size = draw(st.one_of(st.just(("original", 0, 0)), st.just(("subject", 0, 0)),
                          st.tuples(st.just("px"), st.integers(16, 300), st.integers(16, 300))))
    layout = Layout(
        crop=draw(st.booleans()), padding=padding, size=size,
        position=(draw(st.floats(0, 1)), draw(st.floats(0, 1))),
        scale=draw(st.one_of(st.none(), st.floats(0.1, 1.0))),
        max_upscale=draw(st.sampled_from([1.0, 2.0, 4.0])),
        outline=draw(st.sampled_from([0, 0, 3])),
        shadow=draw(st.sampled_from(["none", "none", "drop", "contact"])),
        shadow_blur=draw(st.sampled_from([0, 4, 9])),
        background=draw(st.sampled_from([("transparent",), ("transparent",), ("color", 10, 20, 30, 255), ("blur",)])),
        blur_radius=draw(st.sampled_from([3, 12])),
    )
    return (w, h), (cx, cy, rx, ry), layout


def ellipse(size, geometry) -> np.ndarray:
    (w, h), (cx, cy, rx, ry) = size, geometry
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot((xx + 0.5 - cx) / rx, (yy + 0.5 - cy) / ry)
    alpha = np.round(np.clip((1 - d) * min(rx, ry) / 1.5 + 0.5, 0, 1) * 255).astype(np.uint8)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:] = (90, 160, 220)
    return compose.cutout_array(rgb, alpha)


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_plan_keeps_the_subject_inside_and_matches_the_output(scene):
    size, geometry, layout = scene
    subject = ellipse(size, geometry)
    if box_of(subject) is None:
        return
    photo = np.ascontiguousarray(subject[..., :3])
    photo[subject[..., 3] == 0] = (200, 50, 20)
    laid = lay_out(subject, layout, photo=photo)
    box = laid.plan.source  # the subject's box; with an outline, that of what lies within it
    p = plan(size, box, layout)
    assert p == laid.plan
    W, H = p.canvas
    s = p.subject
    assert 0 <= s.left and s.right <= W and 0 <= s.top and s.bottom <= H and s.width >= 1 and s.height >= 1
    assert abs(s.width * box.height - s.height * box.width) <= max(box.width, box.height)  # aspect, to a pixel
    if layout.size[0] == "px":
        assert (W, H) == layout.size[1:]
        assert p.scale <= layout.max_upscale + 1e-9
        if layout.scale is None:  # fits in what the px padding leaves
            px_w = sum(v for v, u in (layout.padding[1], layout.padding[3]) if u == "px")
            px_h = sum(v for v, u in (layout.padding[0], layout.padding[2]) if u == "px")
            assert s.width <= max(W - px_w, 1) + 1 and s.height <= max(H - px_h, 1) + 1
    else:
        assert p.scale == 1.0 and (s.width, s.height) == (box.width, box.height)
        pads = [round(v if u == "px" else v / 100 * side) for (v, u), side in
                zip(layout.padding, (box.height, box.width, box.height, box.width))]
        assert s.top >= pads[0] and W - s.right >= pads[1] and H - s.bottom >= pads[2] and s.left >= pads[3]
        for bounds in (p.outline, p.shadow):  # the canvas holds the decorations
            if bounds is not None:
                assert bounds.left >= 0 and bounds.top >= 0 and bounds.right <= W and bounds.bottom <= H
    assert laid.image.shape == (H, W, 4) and laid.image.dtype == np.uint8
    if layout.background[0] != "transparent":
        assert (laid.image[..., 3] == 255).all()
    fg = laid.foreground
    assert fg is not None
    if p.resampled:
        tol = 2 + math.ceil(p.scale)
        assert all(abs(a - b) <= tol for a, b in zip((fg.left, fg.top, fg.right, fg.bottom),
                                                     (s.left, s.top, s.right, s.bottom))), (fg, s)
    else:
        assert fg == s
    if layout.shadow == "none" and layout.outline == 0 and layout.background[0] == "transparent":
        assert box_of(laid.image) == fg


@pytest.mark.parametrize("fields", [
    {"size": options.Size.from_text("123x77"), "shadow": "contact", "padding": options.Padding.from_text("30% 2px")},
    {"size": options.Size.from_text("123x77"), "scale": 0.5, "shadow": "contact", "outline": 3},
])
def test_a_contact_shadow_under_a_small_subject_is_drawn(fields):
    """A subject scaled small under a wide blur: the floor ellipse is under a pixel of the blur's
    reduced copy (it once crashed Pillow's ellipse with its far corner before its start)."""
    yy, xx = np.mgrid[0:240, 0:360]
    alpha = np.where(((xx - 170) / 110) ** 2 + ((yy - 130) / 80) ** 2 <= 1, 255, 0).astype(np.uint8)
    subject = compose.cutout_array(np.full((240, 360, 3), 90, np.uint8), alpha)
    laid = lay_out(subject, Layout(**fields))
    assert laid.image.shape == (77, 123, 4)
    below = laid.image[laid.foreground.top + laid.foreground.height:, :, 3]
    assert below.size == 0 or below.max() > 0  # the shadow shows under the subject where there is room


def test_a_cover_background_whose_scale_rounds_past_its_edge():
    """610x700 covered by a 987x1481 image: W / (W / iw) is a hair over iw in floating point, which
    made the source box start at -1e-13 and Pillow refuse it (a 500 before the fix)."""
    subject = np.zeros((700, 610, 4), np.uint8)
    subject[100:600, 100:500] = 255
    backdrop = np.full((1481, 987, 3), 90, np.uint8)
    laid = lay_out(subject, options.Layout(background=options.Background(("image",))), background_image=backdrop)
    assert laid.image.shape == (700, 610, 4)
    assert (laid.image[0, 0] == (90, 90, 90, 255)).all()
