"""``8bit``: pixel art.

1. Downscale by ``pixel_size``: each block becomes the alpha-weighted mean of its
   visible pixels (premultiplied), so outlines don't darken against the transparent
   background.
2. Quantise each block to the palette: ``nes``, ``pico8``, ``gameboy`` or
   ``adaptive`` (``colors`` colours chosen by median cut from the subject's own
   visible blocks). Colour palettes match in CIELAB, not RGB, with lightness
   weighted half and the input's chroma boosted by 1.3: it keeps fur and skin in
   browns, tans and peaches rather than collapsing them to the palette's greys. ``gameboy`` maps by lightness onto its four greens, as
   the handheld's screen did.
3. Optional ordered (4x4 Bayer) dithering before the match, in block units.
4. Nearest-neighbour upscale: every ``pixel_size`` block is one flat colour and one
   alpha, opaque where the block's mean alpha reaches ``OPAQUE`` and transparent
   elsewhere, so the outline is made of the same crisp blocks as the colours (the
   input's soft alpha would feather it).

``pixel_size`` defaults to the subject's size (:func:`effects.schema.subject_size`) over
``BLOCKS_ACROSS``: a sprite of that many art pixels across, whatever the photo's resolution.

Matching goes through a 32x32x32 lookup table per palette (cached for the fixed
palettes), so the cost does not grow with the palette's size.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

import numpy as np
from PIL import Image

from effects import pixels
from effects.schema import AUTO, OPAQUE, Effect, Param, across_subject

# The NES's 2C02 PPU palette as commonly rendered (the 54 distinct colours; its duplicate blacks dropped).
NES = (
    "#7c7c7c #0000fc #0000bc #4428bc #940084 #a80020 #a81000 #881400 #503000 #007800 #006800 #005800 #004058 "
    "#000000 #bcbcbc #0078f8 #0058f8 #6844fc #d800cc #e40058 #f83800 #e45c10 #ac7c00 #00b800 #00a800 #00a844 "
    "#008888 #f8f8f8 #3cbcfc #6888fc #9878f8 #f878f8 #f85898 #f87858 #fca044 #f8b800 #b8f818 #58d854 #58f898 "
    "#00e8d8 #787878 #fcfcfc #a4e4fc #b8b8f8 #d8b8f8 #f8b8f8 #f8a4c0 #f0d0b0 #fce0a8 #f8d878 #d8f878 #b8f8b8 "
    "#b8f8d8 #00fcfc"
).split()
# PICO-8's 16 colours.
PICO8 = (
    "#000000 #1d2b53 #7e2553 #008751 #ab5236 #5f574f #c2c3c7 #fff1e8 "
    "#ff004d #ffa300 #ffec27 #00e436 #29adff #83769c #ff77a8 #ffccaa"
).split()
# The original Game Boy's four greens, dark to light.
GAMEBOY = "#0f380f #306230 #8bac0f #9bbc0f".split()

FIXED_PALETTES = {"nes": NES, "pico8": PICO8, "gameboy": GAMEBOY}
LUT_BITS = 5  # 32 steps per channel
# Matching weights in CIELAB: lightness errors count half (as in CMC l:c = 2:1, the
# "acceptability" weighting), and the input's chroma is boosted before matching, so
# muted fur and skin tones find the palette's browns, tans and peaches instead of its
# greys, which are usually nearer in lightness alone.
LIGHTNESS_WEIGHT = 0.5
CHROMA_BOOST = 1.3
DITHER_SPREAD = 40.0  # ordered-dither amplitude (levels of 255) for colour palettes
BAYER = pixels.bayer_matrix(4)
# Chosen by looking at the fixture and AM-2k pets: at 64 art pixels across, a cat's eyes, nose and
# ears are their own blocks; at 32 its face is a few patches (8 px blocks on a 450 px cat: 42).
BLOCKS_ACROSS = 64
STRIP_ROWS = 256  # rows matched at a time (a multiple of 4: the Bayer tile starts over on each strip)


def render(rgba: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    height, width = rgba.shape[:2]
    size = p["pixel_size"]
    blocks = block_means(rgba, size)
    rgb, alpha = blocks[..., :3], blocks[..., 3]
    if p["palette"] == "gameboy":
        palette = palette_array(GAMEBOY)
        indices = by_lightness(rgb, len(palette), p["dithering"])
    else:
        if p["palette"] in FIXED_PALETTES:
            palette, lut = palette_array(FIXED_PALETTES[p["palette"]]), _fixed_lut(p["palette"])
        else:
            palette = adaptive_palette(rgb, alpha, p["colors"])
            lut = build_lut(palette)
        indices = nearest_colours(rgb, lut, p["dithering"])
    clear = len(palette)  # one more palette entry, transparent, for the blocks that are not the subject
    indices = np.where(alpha >= OPAQUE, indices, np.uint8(clear))
    colours = np.vstack((np.c_[palette, np.full(clear, 255, np.uint8)], np.zeros((1, 4), np.uint8)))
    return upscale(upscale(colours[indices], size, height, 0), size, width, 1)


def upscale(blocks: np.ndarray, size: int, length: int, axis: int) -> np.ndarray:
    """Each block ``size`` times along ``axis``, the last cut so that the result is ``length`` long
    (nearest-neighbour, contiguous, no crop: a quarter of Pillow's resize and array copy)."""
    if size == 1:  # every pixel its own block: nothing to repeat (no copy of a full-size image)
        return blocks
    counts = np.full(blocks.shape[axis], size)
    counts[-1] = length - size * (blocks.shape[axis] - 1)
    return np.repeat(blocks, counts, axis=axis)


def block_means(rgba: np.ndarray, size: int) -> np.ndarray:
    """One RGBA pixel per size×size block: alpha-weighted colour mean (premultiplied reduce)."""
    if size == 1:
        return rgba
    img = Image.fromarray(np.ascontiguousarray(rgba), "RGBA")
    return np.asarray(img.convert("RGBa").reduce(size).convert("RGBA"))


def palette_array(colours) -> np.ndarray:
    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in colours], dtype=np.uint8)


def adaptive_palette(rgb: np.ndarray, alpha: np.ndarray, colours: int) -> np.ndarray:
    """``colours`` colours by median cut over the blocks drawn (all blocks if none is)."""
    drawn = alpha >= OPAQUE
    visible = rgb[drawn] if drawn.any() else rgb.reshape(-1, 3)
    strip = Image.fromarray(np.ascontiguousarray(visible.reshape(1, -1, 3)), "RGB")
    quantised = strip.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    entries = np.array(quantised.getpalette(), dtype=np.uint8).reshape(-1, 3)
    used = sorted(index for _, index in quantised.getcolors(256))  # fewer distinct inputs -> fewer colours
    return np.unique(entries[used], axis=0)


def nearest_colours(rgb: np.ndarray, lut: np.ndarray, dithering: bool) -> np.ndarray:
    """Each pixel -> index of the palette colour nearest in CIELAB (via ``lut``), with optional Bayer
    offsets; by strips of rows (a pixel_size of 1 on a 12 MP photo would otherwise hold ~300 MB)."""
    out = np.empty(rgb.shape[:2], np.uint8)
    for top in range(0, rgb.shape[0], STRIP_ROWS):  # STRIP_ROWS is a multiple of the Bayer tile's 4
        values = rgb[top:top + STRIP_ROWS].astype(np.int16)
        if dithering:
            offsets = (_bayer_tile(values.shape[:2]) - np.float32(0.5)) * np.float32(DITHER_SPREAD)
            values += np.round(offsets).astype(np.int16)[..., None]
        idx = np.clip(values, 0, 255) >> (8 - LUT_BITS)
        out[top:top + STRIP_ROWS] = lut[idx[..., 0], idx[..., 1], idx[..., 2]]
    return out


def by_lightness(rgb: np.ndarray, count: int, dithering: bool) -> np.ndarray:
    """Index into a dark-to-light ramp of ``count`` shades by BT.709 luma, with optional Bayer dithering
    (by strips of rows, as :func:`nearest_colours`)."""
    steps = count - 1
    out = np.empty(rgb.shape[:2], np.uint8)
    for top in range(0, rgb.shape[0], STRIP_ROWS):
        strip = rgb[top:top + STRIP_ROWS]
        level = pixels.luma709(np.dstack((strip, np.zeros(strip.shape[:2], np.uint8)))) * np.float32(steps / 255.0)
        if dithering:
            level += _bayer_tile(strip.shape[:2]) - np.float32(0.5)
        out[top:top + STRIP_ROWS] = np.clip(np.round(level), 0, steps)
    return out


def _bayer_tile(shape: tuple[int, int]) -> np.ndarray:
    reps = (-(-shape[0] // 4), -(-shape[1] // 4))
    return np.tile(BAYER, reps)[: shape[0], : shape[1]]


@lru_cache(maxsize=None)
def _fixed_lut(name: str) -> np.ndarray:
    return build_lut(palette_array(FIXED_PALETTES[name]))


@lru_cache(maxsize=1)
def _cells_lab() -> np.ndarray:
    """The lookup table's cell centres in weighted CIELAB (constant, 384 KB)."""
    steps = 1 << LUT_BITS
    centres = (np.arange(steps) * (256 // steps) + (128 // steps)).astype(np.uint8)
    r, g, b = np.meshgrid(centres, centres, centres, indexing="ij")
    return to_lab(np.stack((r, g, b), axis=-1).reshape(-1, 3)) * np.float32([LIGHTNESS_WEIGHT, CHROMA_BOOST, CHROMA_BOOST])


def build_lut(palette: np.ndarray) -> np.ndarray:
    """32x32x32 table: the index of the palette colour nearest to each cell's centre colour (weighted CIELAB)."""
    steps = 1 << LUT_BITS
    cells = _cells_lab()
    targets = to_lab(palette) * np.float32([LIGHTNESS_WEIGHT, 1.0, 1.0])
    best = np.empty(len(cells), dtype=np.uint8)
    # |c - t|² = |c|² - 2 c·t + |t|²; |c|² is the same for every t, so argmin(|t|² - 2 c·t)
    norms = (targets * targets).sum(axis=1)
    for start in range(0, len(cells), 8192):  # bounded memory: 8192 x len(palette) at a time
        scores = cells[start:start + 8192] @ (np.float32(-2.0) * targets.T)
        scores += norms
        best[start:start + 8192] = scores.argmin(axis=1)
    return best.reshape(steps, steps, steps)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (N x 3 uint8) -> CIELAB (D65), float32."""
    linear = pixels.SRGB_TO_LINEAR[rgb]
    xyz = linear @ np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], dtype=np.float32
    ).T
    xyz /= np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack((116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])), axis=1).astype(np.float32)


EFFECT = Effect(
    name="8bit",
    description="Pixel art: blocks of pixel_size pixels, quantised to a retro palette (nes, gameboy, pico8) "
    "or an adaptive one, optional ordered (Bayer) dithering, nearest-neighbour upscale; each block "
    "opaque or transparent, so the outline is blocky too.",
    params=(
        Param("pixel_size", "integer", AUTO, f"size of one art pixel, in image pixels; auto: {BLOCKS_ACROSS} "
              "across the subject", 1, 64, auto=across_subject(BLOCKS_ACROSS)),
        Param("palette", "enum", "nes", "colour palette; 'adaptive' picks `colors` colours from the image",
              choices=("nes", "gameboy", "pico8", "adaptive")),
        Param("colors", "integer", 16, "number of colours of the 'adaptive' palette (ignored by the others)", 2, 64),
        Param("dithering", "boolean", False, "ordered (4x4 Bayer) dithering between palette colours"),
    ),
    render=render,
)
