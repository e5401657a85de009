"""The effects library: parameter schemas, determinism, and what each effect must do to real photos."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
from PIL import Image

import effects
from effects import ParamError, _kernels, blackwhite, dither, eightbit, pixels, popart
from effects.dither import error_diffusion
from tests.conftest import photo

NAMES = list(effects.EFFECTS)


def rgba_photo(name: str = "animal-1.jpg", size: int | None = 320, alpha: str = "ellipse") -> np.ndarray:
    """A real photo as RGBA; ``alpha`` ellipse = a soft-edged subject, as a cut-out has."""
    img = Image.open(photo(name)).convert("RGB")
    if size:
        img.thumbnail((size, size))
    rgb = np.asarray(img)
    h, w = rgb.shape[:2]
    if alpha == "opaque":
        a = np.full((h, w), 255, np.uint8)
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        r = ((yy - h / 2) / (h / 2.2)) ** 2 + ((xx - w / 2) / (w / 2.2)) ** 2
        a = np.clip((1.2 - r) * 600, 0, 255).astype(np.uint8)  # 255 inside, a soft ramp, 0 outside
    rgba = np.dstack((rgb, a))
    rgba[a == 0] = 0  # as the pipeline's cut-out
    return rgba


def run(name: str, rgba: np.ndarray, **params) -> np.ndarray:
    return effects.apply(name, rgba, effects.resolve(name, params))


def grey_patch(level: int, size: int = 96) -> np.ndarray:
    return np.dstack([np.full((size, size), level, np.uint8)] * 3 + [np.full((size, size), 255, np.uint8)])


# ---------------------------------------------------------------- schemas and validation


def test_every_parameter_declares_a_valid_default_and_documents_itself():
    for effect in effects.EFFECTS.values():
        assert effect.resolve({}) == {p.name: p.default for p in effect.params}
        for p in effect.params:
            d = p.as_dict()
            assert d["description"] and d["type"] in ("number", "integer", "boolean", "enum", "color")


@pytest.mark.parametrize("name", NAMES)
def test_out_of_range_and_wrong_types_are_refused_naming_the_parameter(name):
    effect = effects.get(name)
    for p in effect.params:
        bad: list = [None, [1, 2], {"x": 1}]
        if p.type in ("number", "integer"):
            bad += [p.minimum - 1, p.maximum + 1, "5", True, math.nan, math.inf]
            if p.type == "integer":
                bad.append(p.minimum + 0.5)
        elif p.type == "boolean":
            bad += [1, "true", 0]
        elif p.type == "enum":
            bad += ["nope", 3]
        elif p.type == "color":
            bad += ["notacolour", [0, 0, 256], [0, 0], 7]
        for value in bad:
            with pytest.raises(ParamError) as err:
                effect.resolve({p.name: value}, path=f"effect_params.{name}")
            assert err.value.field == f"effect_params.{name}.{p.name}", value


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_and_non_object_are_refused(name):
    with pytest.raises(ParamError) as err:
        effects.resolve(name, {"sparkle": 1})
    assert err.value.field == f"{name}.sparkle"
    with pytest.raises(ParamError) as err:
        effects.resolve(name, [1, 2])
    assert err.value.field == name


def test_boundary_values_are_accepted_and_integers_take_integral_floats():
    assert effects.resolve("dither", {"dot_spacing": 1, "threshold": 254})["threshold"] == 254
    assert effects.resolve("8bit", {"pixel_size": 4.0})["pixel_size"] == 4
    assert effects.resolve("blackwhite", {"grain_strength": 0})["grain_strength"] == 0.0
    assert effects.resolve("dither", {"ink": "navy", "paper": [250, 240, 230]})["ink"] == (0, 0, 128)


def test_presets_apply_and_explicit_values_override_them():
    vintage = effects.resolve("blackwhite", {"preset": "vintage"})
    assert vintage["gamma_correction"] == 1.0 and vintage["grain_strength"] == 0.15
    assert vintage["contrast_boost"] == 1.12  # untouched by the preset: the default
    mixed = effects.resolve("blackwhite", {"preset": "modern", "grain_strength": 0.3})
    assert mixed["contrast_boost"] == 1.15 and mixed["grain_strength"] == 0.3 and mixed["preset"] == "modern"
    assert effects.resolve("blackwhite", {"preset": "clean"})["edge_strength"] == 0.8
    for bad in ("sepia", 1):
        with pytest.raises(ParamError) as err:
            effects.resolve("blackwhite", {"preset": bad})
        assert err.value.field == "blackwhite.preset"
    with pytest.raises(ParamError):
        effects.resolve("dither", {"preset": "modern"})  # dither has no presets


def test_unknown_effect_and_same_ink_as_paper():
    with pytest.raises(ParamError) as err:
        effects.get("sepia")
    assert err.value.field == "effects"
    with pytest.raises(ParamError) as err:
        effects.resolve("dither", {"ink": "#fff", "paper": "white"})
    assert err.value.field == "dither.ink"


def test_catalogue_lists_every_effect_with_schema_and_presets():
    listed = {e["name"]: e for e in effects.catalogue()}
    assert set(listed) == {"blackwhite", "dither", "popart", "8bit"}
    assert listed["blackwhite"]["presets"]["vintage"] == {"gamma_correction": 1.0, "grain_strength": 0.15}
    assert {p["name"] for p in listed["dither"]["parameters"]} == {"dot_spacing", "dot_size", "threshold", "serpentine", "ink", "paper"}
    ink = next(p for p in listed["dither"]["parameters"] if p["name"] == "ink")
    assert ink["type"] == "color" and ink["default"] == "#000000"
    layout = next(p for p in listed["popart"]["parameters"] if p["name"] == "layout")
    assert layout["choices"] == ["single", "grid"]


# ---------------------------------------------------------------- every effect


@pytest.mark.parametrize("name", NAMES)
def test_same_request_same_bytes_and_input_untouched(name):
    rgba = rgba_photo()
    before = rgba.copy()
    a, b = run(name, rgba), run(name, rgba)
    assert a.dtype == np.uint8 and a.shape == rgba.shape
    assert np.array_equal(a, b)
    assert np.array_equal(rgba, before)


@pytest.mark.parametrize(
    "name,params",
    [("blackwhite", {}), ("blackwhite", {"preset": "vintage"}), ("dither", {}), ("dither", {"dot_spacing": 1}),
     ("popart", {})],  # 8bit makes its alpha blocky (tests/test_effects_look.py)
)
def test_alpha_passes_through_untouched(name, params):
    rgba = rgba_photo()
    rng = np.random.default_rng(1)
    rgba[..., 3] = rng.integers(0, 256, rgba.shape[:2], dtype=np.uint8)  # every alpha value, everywhere
    assert np.array_equal(run(name, rgba, **params)[..., 3], rgba[..., 3])


def test_popart_grid_lays_the_subjects_alpha_out_with_its_panels():
    """The one effect that rearranges the image: each panel carries the subject's (half-size) alpha."""
    rgba = rgba_photo(size=200)
    out = run("popart", rgba, layout="grid")
    h, w = rgba.shape[:2]
    half_h, half_w = (h + 1) // 2, (w + 1) // 2
    small = np.asarray(Image.fromarray(rgba, "RGBA").convert("RGBa").resize((half_w, half_h), Image.Resampling.LANCZOS).convert("RGBA"))
    assert np.array_equal(out[:half_h, :half_w, 3], small[..., 3])
    assert np.array_equal(out[half_h:, half_w:, 3], small[: h - half_h, : w - half_w, 3])


@pytest.mark.parametrize("name", NAMES)
def test_odd_sizes_and_tiny_images(name):
    for h, w in ((1, 1), (1, 7), (5, 3), (97, 61)):
        rgba = rgba_photo(size=None, alpha="opaque")[:h, :w].copy()
        assert run(name, rgba).shape == (h, w, 4)


# ---------------------------------------------------------------- blackwhite


def test_blackwhite_is_neutral_grey():
    rgba = rgba_photo("girl-1.jpg", alpha="opaque")
    out = run("blackwhite", rgba)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert out[..., 0].std() > 30  # an image, not a flat grey


def test_blackwhite_uses_panchromatic_weights_not_luma():
    """Pure blue and pure green: luma puts green far brighter (0.7152 vs 0.0722); Tri-X-like film sees blue brighter."""
    size = 64
    green = np.dstack([np.zeros((size, size), np.uint8), np.full((size, size), 255, np.uint8),
                       np.zeros((size, size), np.uint8), np.full((size, size), 255, np.uint8)])
    blue = green[..., [0, 2, 1, 3]]
    flat = dict(edge_strength=0, halation_strength=0, grain_strength=0)
    assert run("blackwhite", blue, **flat)[..., 0].mean() > run("blackwhite", green, **flat)[..., 0].mean()


def test_blackwhite_brightness_follows_gamma_and_contrast():
    rgba = rgba_photo("animal-2.jpg", alpha="opaque")
    base = dict(edge_strength=0, halation_strength=0, grain_strength=0)
    means = [run("blackwhite", rgba, gamma_correction=g, **base)[..., 0].mean() for g in (0.7, 1.0, 1.5)]
    assert means[0] < means[1] < means[2]
    lo, hi = (run("blackwhite", rgba, contrast_boost=c, **base)[..., 0].astype(float) for c in (0.8, 1.6))
    assert hi.std() > lo.std() * 1.3
    dark = lo < np.percentile(lo, 20)
    bright = lo > np.percentile(lo, 80)
    assert hi[dark].mean() < lo[dark].mean() and hi[bright].mean() > lo[bright].mean()


def test_blackwhite_contrast_curve_keeps_black_and_white():
    v = np.linspace(0, 1, 101)
    for c in (0.5, 1.0, 1.12, 2.5):
        curve = blackwhite.contrast_curve(v, c)
        assert np.all(np.diff(curve) >= 0)
        if c >= 1:  # raising contrast never clips: black and white stay where they are
            assert abs(curve[0]) < 1e-9 and abs(curve[-1] - 1) < 1e-9
        slope = (blackwhite.contrast_curve(np.array([0.5001]), c) - blackwhite.contrast_curve(np.array([0.4999]), c)) / 0.0002
        assert slope[0] == pytest.approx(c, rel=1e-3)


def test_blackwhite_grain_follows_the_seed_and_peaks_in_mid_tones():
    quiet = dict(edge_strength=0, halation_strength=0)
    a, b = (run("blackwhite", grey_patch(128), seed=s, grain_strength=0.5, **quiet) for s in (1, 2))
    assert not np.array_equal(a, b)
    spread = {lvl: run("blackwhite", grey_patch(lvl), grain_strength=0.5, **quiet)[..., 0].std() for lvl in (8, 128, 250)}
    assert spread[128] > 2 * spread[8] and spread[128] > 2 * spread[250]
    assert run("blackwhite", grey_patch(128), grain_strength=0, **quiet)[..., 0].std() == 0


def test_blackwhite_edge_strength_adds_local_contrast():
    rgba = rgba_photo("animal-1.jpg", alpha="opaque")
    quiet = dict(halation_strength=0, grain_strength=0)
    flat, crisp = (run("blackwhite", rgba, edge_strength=e, **quiet)[..., 0].astype(float) for e in (0, 2))
    detail = lambda img: np.abs(np.diff(img, axis=1)).mean()  # noqa: E731
    assert detail(crisp) > detail(flat) * 1.2


def test_blackwhite_halation_brightens_around_highlights():
    img = np.full((120, 120), 40, np.uint8)
    img[50:70, 50:70] = 255
    rgba = np.dstack([img] * 3 + [np.full_like(img, 255)])
    quiet = dict(edge_strength=0, grain_strength=0)
    without, glow = (run("blackwhite", rgba, halation_strength=h, **quiet)[..., 0].astype(int) for h in (0, 1))
    assert glow[40:48, 55:65].mean() > without[40:48, 55:65].mean() + 3  # next to the highlight
    assert abs(glow[:8, :8].mean() - without[:8, :8].mean()) < 2  # far from it


def splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def numpy_film_print(rgba: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """The definition of blackwhite's two compiled passes, with full-size numpy arrays: (tone box sums, grey)."""
    h, w = rgba.shape[:2]
    shares = pixels.share_tables(blackwhite.TRI_X_WEIGHTS)
    index = shares[0].take(rgba[..., 0]) + shares[1].take(rgba[..., 1]) + shares[2].take(rgba[..., 2])
    table = blackwhite.tone_table(p["gamma_correction"], p["contrast_boost"])
    tone = table.take(index)
    low_w, low_h = blackwhite.low_resolution(rgba.shape)
    starts = lambda n, cells: np.searchsorted(np.arange(n) * cells // n, np.arange(cells))  # noqa: E731
    cell_sum = lambda v: np.add.reduceat(np.add.reduceat(v.astype(np.float64), starts(h, low_h), 0), starts(w, low_w), 1)  # noqa: E731
    sums = cell_sum(tone)
    counts = np.outer(blackwhite.cell_sizes(h, low_h), blackwhite.cell_sizes(w, low_w))
    mean, mean_sq = (pixels.soften((s / counts).astype(np.float32)) for s in (sums, cell_sum(np.square(tone.astype(np.float64)))))
    k1, k2 = blackwhite.print_coefficients(mean, mean_sq, rgba.shape, p["edge_strength"], p["halation_strength"])
    v = tone * pixels.upsample(k1, (w, h)) + pixels.upsample(k2, (w, h))
    if p["grain_strength"] > 0:
        key = splitmix64(np.array([p["seed"]], np.uint64))
        byte = (splitmix64(key + np.arange(h * w, dtype=np.uint64)) >> np.uint64(56)).reshape(h, w)
        v = v + blackwhite.GAUSSIAN_BYTES.take(byte) * blackwhite.grain_amplitude(table, p["grain_strength"]).take(index)
    return sums, (np.clip(v, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


@pytest.mark.parametrize("params", [{}, {"preset": "vintage", "seed": 2**32 - 1},
                                    {"edge_strength": 3.0, "halation_strength": 1.0, "grain_strength": 1.0, "seed": 9}])
def test_blackwhite_compiled_passes_match_their_numpy_definition(params):
    rgba = rgba_photo("girl-1.jpg", size=300)  # not square, not a multiple of the cell size
    p = effects.resolve("blackwhite", params)
    sums, grey = numpy_film_print(rgba, p)
    low_w, low_h = blackwhite.low_resolution(rgba.shape)
    c_sums, c_squares = np.zeros((low_h, low_w)), np.zeros((low_h, low_w))
    table = blackwhite.tone_table(p["gamma_correction"], p["contrast_boost"])
    _kernels.tone_sums(rgba, pixels.share_tables(blackwhite.TRI_X_WEIGHTS), table, c_sums, c_squares)
    assert np.allclose(c_sums, sums, rtol=1e-9, atol=0)
    out = run("blackwhite", rgba, **params)
    diff = np.abs(out[..., 0].astype(int) - grey)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.002  # float32 bilinear weights vs Pillow's doubles: rare ±1 roundings
    assert np.array_equal(out[..., 3], rgba[..., 3])


def test_blackwhite_kernels_refuse_inconsistent_buffers():
    rgba = rgba_photo(size=64)
    h, w = rgba.shape[:2]
    shares = pixels.share_tables(blackwhite.TRI_X_WEIGHTS)
    table = blackwhite.tone_table(1.0, 1.0)
    one, zero = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    out = np.empty_like(rgba)
    args = dict(rgba=rgba, shares=shares, tone=table, gauss=blackwhite.GAUSSIAN_BYTES, amp=None, k1=one, k2=zero, seed=0, out=out)
    _kernels.film_print(*args.values())
    for bad in ({"rgba": rgba[1:]}, {"tone": table[:100]}, {"amp": table[:-1]}, {"k2": np.zeros((2, 1), np.float32)},
                {"out": np.empty((h, w, 3), np.uint8)}, {"out": np.empty((h, w + 1, 4), np.uint8)},
                {"gauss": blackwhite.GAUSSIAN_BYTES[:255]}):
        with pytest.raises(ValueError):
            _kernels.film_print(*{**args, **bad}.values())
    with pytest.raises(TypeError):  # the output must be writable
        _kernels.film_print(*{**args, "out": bytes(out.nbytes)}.values())


def test_luma_kernel_is_numpy_s_sum_bit_for_bit():
    rgba = rgba_photo("coffee.jpg", size=200)
    r, g, b = (rgba[..., c].astype(np.float32) for c in range(3))
    expected = r * np.float32(pixels.BT709[0]) + g * np.float32(pixels.BT709[1]) + b * np.float32(pixels.BT709[2])
    assert np.array_equal(pixels.luma709(rgba), expected)
    assert np.array_equal(pixels.luma709(rgba[:, ::-1]), expected[:, ::-1])  # strided views are made contiguous


def test_paint_rgba_is_a_palette_lookup_with_the_subject_s_alpha():
    rgba = rgba_photo(size=120)
    indices = (rgba[..., 0] // 64).astype(np.uint8)  # 0..3
    colours = np.array([[1, 2, 3], [40, 50, 60], [200, 100, 0], [255, 255, 255]], np.uint8)
    out = pixels.paint_rgba(indices, colours, rgba)
    assert np.array_equal(out[..., :3], colours[indices]) and np.array_equal(out[..., 3], rgba[..., 3])
    with pytest.raises(ValueError, match="past the last colour"):
        pixels.paint_rgba(indices, colours[:3], rgba)
    with pytest.raises(ValueError):
        pixels.paint_rgba(indices[:-1], colours, rgba)


# ---------------------------------------------------------------- dither


def python_floyd_steinberg(levels: np.ndarray, threshold: float, serpentine: bool) -> np.ndarray:
    """The definition, one pixel at a time, in the kernel's order of float operations."""
    h, w = levels.shape
    out = np.zeros((h, w), np.uint8)
    cur = [0.0] * (w + 2)
    for y in range(h):
        nxt = [0.0] * (w + 2)
        rev = serpentine and y % 2 == 1
        step = -1 if rev else 1
        for x in (range(w - 1, -1, -1) if rev else range(w)):
            v = float(levels[y, x]) + cur[x + 1]
            level = 255.0 if v >= threshold else 0.0
            e = v - level
            out[y, x] = int(level)
            cur[x + 1 + step] += e * (7.0 / 16.0)
            nxt[x + 1 - step] += e * (3.0 / 16.0)
            nxt[x + 1] += e * (5.0 / 16.0)
            nxt[x + 1 + step] += e * (1.0 / 16.0)
        cur = nxt
    return out


@pytest.mark.parametrize("serpentine", [False, True])
@pytest.mark.parametrize("threshold", [127.5, 60.0, 200.0])
def test_compiled_kernel_matches_the_definition_bit_for_bit(serpentine, threshold):
    levels = (np.random.default_rng(7).random((23, 31)) * 255).astype(np.float32)
    assert np.array_equal(error_diffusion(levels, threshold, serpentine), python_floyd_steinberg(levels, threshold, serpentine))


def test_serpentine_changes_the_pattern():
    levels = np.asarray(Image.open(photo("coffee.jpg")).convert("L").resize((120, 80)), dtype=np.float32)
    assert not np.array_equal(error_diffusion(levels, 127.5, True), error_diffusion(levels, 127.5, False))


def test_dither_uses_only_ink_and_paper():
    rgba = rgba_photo("animal-2.jpg")
    ink, paper = (20, 40, 120), (250, 235, 200)
    for spacing in (1, 3, 6):
        out = run("dither", rgba, dot_spacing=spacing, ink="#142878", paper="250,235,200")
        colours = {tuple(c) for c in out[..., :3].reshape(-1, 3)}
        assert colours == {ink, paper}


def test_dither_dot_density_tracks_brightness():
    for spacing in (1, 4):
        ink = [(run("dither", grey_patch(level, 128), dot_spacing=spacing)[..., 0] == 0).mean() for level in (30, 90, 160, 230)]
        assert ink[0] > ink[1] > ink[2] > ink[3], ink
    classic = [(run("dither", grey_patch(level, 128), dot_spacing=1)[..., 0] == 0).mean() for level in (64, 192)]
    assert classic[0] == pytest.approx(1 - 64 / 255, abs=0.03) and classic[1] == pytest.approx(1 - 192 / 255, abs=0.03)


def test_dither_threshold_moves_the_midpoint_and_dots_sit_on_the_grid():
    patch = grey_patch(128, 128)
    inked = [(run("dither", patch, dot_spacing=1, threshold=t)[..., 0] == 0).mean() for t in (64, 128, 192)]
    assert inked[0] < inked[1] < inked[2]
    assert inked[1] == pytest.approx(0.5, abs=0.03)
    out = run("dither", grey_patch(40, 96), dot_spacing=6, dot_size=3)[..., 0] == 0
    cells = out.reshape(16, 6, 16, 6)
    stamp = dither.dot_stamp(6, 3)
    for cy in range(16):
        for cx in range(16):
            cell = cells[cy, :, cx, :]
            assert not cell.any() or np.array_equal(cell, stamp)  # a whole dot or nothing


def test_dither_keeps_transparent_background_out_of_the_error():
    """A subject over transparent (zeroed) pixels dithers as if the background were paper."""
    rgba = grey_patch(200, 128)
    rgba[:, :64] = 0  # left half transparent black
    out = run("dither", rgba, dot_spacing=1)
    right = out[:, 64:, 0] == 0
    assert right.mean() == pytest.approx(1 - 200 / 255, abs=0.04)
    assert right[:, :4].mean() < 0.5  # no band of ink pulled in from the black background


# ---------------------------------------------------------------- popart


@pytest.mark.parametrize("levels", [2, 4, 8])
def test_popart_uses_at_most_levels_colours_per_panel(levels):
    rgba = rgba_photo("animal-1.jpg", alpha="opaque")
    single = run("popart", rgba, levels=levels)
    assert len({tuple(c) for c in single[..., :3].reshape(-1, 3)}) <= levels
    grid = run("popart", rgba, levels=levels, layout="grid")
    assert len({tuple(c) for c in grid[..., :3].reshape(-1, 3)}) <= levels * 4
    panel = grid[: (rgba.shape[0] + 1) // 2, : (rgba.shape[1] + 1) // 2, :3]
    assert len({tuple(c) for c in panel.reshape(-1, 3)}) <= levels


def test_popart_bands_follow_bt709_luma():
    """Pure red (luma .2126) lands darker than pure green (.7152): bands are ordered by BT.709 luma."""
    h = 60
    stripes = np.zeros((h, 90, 4), np.uint8)
    stripes[..., 3] = 255
    stripes[:, :30, 0] = 255  # red
    stripes[:, 30:60, 1] = 255  # green
    stripes[:, 60:, 2] = 255  # blue
    band = popart.bands(stripes, 8)
    blue, red, green = band[30, 75], band[30, 15], band[30, 45]
    assert blue < red < green
    colours = popart.palette_colours("marilyn", 8)
    out = run("popart", stripes, levels=8)
    assert tuple(out[30, 45, :3]) == tuple(colours[green]) and tuple(out[30, 15, :3]) == tuple(colours[red])


def test_popart_grid_panels_use_four_different_palettes():
    out = run("popart", rgba_photo("coffee.jpg", alpha="opaque"), layout="grid")
    h, w = (out.shape[0] + 1) // 2, (out.shape[1] + 1) // 2
    panels = [out[:h, :w], out[:h, w:], out[h:, :w], out[h:, w:]]
    sets = [frozenset(tuple(c) for c in p[..., :3].reshape(-1, 3)) for p in panels]
    assert len(set(sets)) == 4


# ---------------------------------------------------------------- 8bit


@pytest.mark.parametrize("size", [2, 5, 8, 13])
def test_8bit_is_constant_on_each_block(size):
    rgba = rgba_photo("girl-1.jpg", size=150)
    out = run("8bit", rgba, pixel_size=size, palette="adaptive", dithering=True)
    h, w = out.shape[:2]
    for y0 in range(0, h, size):
        for x0 in range(0, w, size):
            block = out[y0:y0 + size, x0:x0 + size, :3].reshape(-1, 3)
            assert (block == block[0]).all(), (y0, x0)


@pytest.mark.parametrize("palette", ["nes", "gameboy", "pico8"])
@pytest.mark.parametrize("dithering", [False, True])
def test_8bit_uses_only_palette_colours(palette, dithering):
    out = run("8bit", rgba_photo("anime-girl-1.jpg"), palette=palette, dithering=dithering)
    allowed = {tuple(c) for c in eightbit.palette_array(eightbit.FIXED_PALETTES[palette])}
    assert {tuple(c) for c in out[out[..., 3] > 0][:, :3]} <= allowed  # transparent blocks are 0,0,0


def test_8bit_adaptive_palette_has_at_most_colors_colours_and_dithering_changes_it():
    rgba = rgba_photo("anime-girl-1.jpg", alpha="opaque")
    for n in (2, 6, 32):
        out = run("8bit", rgba, palette="adaptive", colors=n, pixel_size=4)
        assert 2 <= len({tuple(c) for c in out[..., :3].reshape(-1, 3)}) <= n
    assert not np.array_equal(run("8bit", rgba, palette="pico8"), run("8bit", rgba, palette="pico8", dithering=True))


def test_8bit_gameboy_follows_lightness():
    ramp = eightbit.palette_array(eightbit.GAMEBOY)
    shades = [tuple(run("8bit", grey_patch(level, 16), palette="gameboy")[0, 0, :3]) for level in (10, 100, 170, 250)]
    assert shades == [tuple(c) for c in ramp]


# Typical fur and skin tones (sRGB): they must stay warm (hue within 35 degrees) and not
# collapse to the palette's greys (saturation kept above a quarter of the input's).
WARM_TONES = {
    "light skin": (224, 178, 150), "medium skin": (190, 140, 110), "dark skin": (120, 80, 60),
    "golden fur": (215, 165, 95), "ginger fur": (200, 115, 55), "brown fur": (125, 85, 55), "tan fur": (180, 150, 120),
}


@pytest.mark.parametrize("palette", ["nes", "pico8"])
def test_8bit_keeps_fur_and_skin_believable(palette):
    for label, rgb in WARM_TONES.items():
        patch = np.zeros((16, 16, 4), np.uint8)
        patch[..., :3], patch[..., 3] = rgb, 255
        out = tuple(int(c) for c in run("8bit", patch, palette=palette)[0, 0, :3])
        h_in, _, s_in = colorsys.rgb_to_hls(*(c / 255 for c in rgb))
        h_out, _, s_out = colorsys.rgb_to_hls(*(c / 255 for c in out))
        hue_gap = min(abs(h_in - h_out), 1 - abs(h_in - h_out)) * 360
        assert s_out > s_in / 4 and hue_gap < 35, (label, rgb, out)


@pytest.mark.parametrize("shape", [(1000, 777), (513, 300), (7, 5), (256, 10), (257, 11)])
def test_luma_in_strips_is_the_whole_planes_luma(shape):
    """The strip-wise luma (rounded, and averaged over cells with transparent pixels as paper) that
    popart and dither use at 12 MP gives exactly what the whole float plane gives."""
    rng = np.random.default_rng(sum(shape))
    rgba = rng.integers(0, 256, shape + (4,), dtype=np.uint8)
    rgba[..., 3][rgba[..., 3] < 60] = 0
    luma = pixels.luma709(rgba)
    assert np.array_equal(pixels.luma709_u8(rgba), (luma + np.float32(0.5)).astype(np.uint8))
    np.putmask(luma, rgba[..., 3] == 0, np.float32(255.0))
    for cell in (1, 2, 3, 5, 12, 32):
        whole = np.asarray(Image.fromarray(luma, "F").reduce(cell)) if cell > 1 else luma
        assert np.array_equal(pixels.luma709_cells(rgba, cell, 255.0), whole), cell


def test_8bit_at_one_pixel_blocks_on_a_12_megapixel_photo_holds_little_beyond_its_output():
    """pixel_size=1 (asked for, or auto on a tiny subject) matches every pixel: by strips of rows, the
    effect holds its output (RGBA, 48 MB at 12 MP) and a few MB more, not ~400 MB of int16 indices."""
    import tracemalloc

    from effects import eightbit

    rgba = np.zeros((3024, 4032, 4), np.uint8)
    rgba[..., :3] = np.linspace(0, 255, 4032, dtype=np.uint8)[None, :, None]
    rgba[500:2500, 600:3400, 3] = 255
    for palette in ("nes", "gameboy"):
        tracemalloc.start()
        try:
            out = eightbit.render(rgba, {"pixel_size": 1, "palette": palette, "colors": 16, "dithering": True})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert out.shape == rgba.shape and (out[1000, 1000, 3], out[10, 10, 3]) == (255, 0)
        assert peak < out.nbytes + 30 * 2**20, (palette, peak / 2**20)
