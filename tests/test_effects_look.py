"""What makes the art effects look right on real pets at their defaults, from a 450 px photo to a
print: 8-bit's outline is made of its blocks, dither keeps the subject's tones and structure, and
the sizes that make the look (a block, a dot pitch) follow the subject's size unless the client
sends them."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

import effects
from effects import pixels
from effects.schema import AUTO, OPAQUE, subject_size
from tests.conftest import DATA, FIXTURES, photo, post

AM2K = DATA / "quality" / "am2k"
# the lion, the two cats and the dog of the quality set (true mattes: soft fur edges), and the
# README's tiger with the model's reference mask
PETS = {"lion": "am2k-06", "cat": "am2k-03", "dog": "am2k-11", "tabby": "am2k-14", "tiger": None}


def cut_out(pet: str, width: int) -> np.ndarray:
    """The pet at ``width`` px wide as the pipeline's cut-out: RGBA, colour zeroed where alpha is 0."""
    if PETS[pet] is None:
        image, matte = photo("animal-1.jpg"), FIXTURES / "reference" / "u2netp" / "animal-1.u2netp.png"
    else:
        image, matte = AM2K / f"{PETS[pet]}.jpg", AM2K / f"{PETS[pet]}.alpha.png"
    with Image.open(image) as im, Image.open(matte) as alpha:
        size = (width, round(im.height * width / im.width))
        rgb = np.asarray(im.convert("RGB").resize(size, Image.Resampling.LANCZOS))
        a = np.asarray(alpha.convert("L").resize(size, Image.Resampling.LANCZOS))
    rgba = np.dstack((rgb, a))
    rgba[a == 0] = 0
    return rgba


def used(name: str, rgba: np.ndarray, **given) -> dict:
    return effects.get(name).concrete(rgba, effects.resolve(name, given))


def blocks_of(plane: np.ndarray, size: int):
    height, width = plane.shape[:2]
    for y in range(0, height, size):
        for x in range(0, width, size):
            yield plane[y:y + size, x:x + size]


# ---------------------------------------------------------------- 8bit: blocky outline


@pytest.mark.parametrize("pet", ["cat", "lion", "tiger"])
@pytest.mark.parametrize("given", [{}, {"pixel_size": 3}, {"pixel_size": 8, "palette": "adaptive", "dithering": True},
                                   {"pixel_size": 13, "palette": "gameboy"}])
def test_8bit_alpha_is_one_opaque_or_clear_value_per_block(pet, given):
    rgba = cut_out(pet, 451)
    size = used("8bit", rgba, **given)["pixel_size"]
    out = effects.apply("8bit", rgba, effects.resolve("8bit", given))
    assert set(np.unique(out[..., 3])) == {0, 255}  # no feathered outline
    for block, source in zip(blocks_of(out, size), blocks_of(rgba, size)):
        assert (block == block[0, 0]).all()  # one colour and one alpha a block
        # the block is the subject where at least half of it was: the outline follows the matte
        assert (block[0, 0, 3] == 255) == (source[..., 3].mean() >= OPAQUE - 0.5)
    assert not out[out[..., 3] == 0].any()  # clear blocks are clear black, as the cut-out's background


def test_8bit_through_the_api_has_the_blocky_outline(client):
    """What a client gets: POST /api/v2/process at defaults, the real model's soft mask."""
    data = photo("animal-1.jpg").read_bytes()
    cut = np.asarray(Image.open(io.BytesIO(post(client, "/api/bg/remove", data).data)).convert("RGBA"))
    body = post(client, "/api/v2/process", data, effects=json.dumps(["8bit"])).get_json()
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"]["8bit"]))).convert("RGBA"))
    assert len(np.unique(cut[..., 3])) > 100  # the cut-out's edge is soft...
    assert set(np.unique(out[..., 3])) == {0, 255}  # ...and the pixel art's is not
    size = used("8bit", cut)["pixel_size"]
    assert size > 1 and all((block == block[0, 0]).all() for block in blocks_of(out[..., 3], size))


# ---------------------------------------------------------------- dither: tone and structure


def grey(rgba: np.ndarray, sigma: float) -> np.ndarray:
    luma = Image.fromarray((pixels.luma709(rgba) + np.float32(0.5)).astype(np.uint8), "L")
    return np.asarray(luma.filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32)


@pytest.mark.parametrize("pet", list(PETS))
def test_dither_at_defaults_keeps_the_subject_s_structure(pet):
    """Seen at the subject's scale (blurred by 1/150 of its size), the dots are the photo in grey:
    r >= 0.8. Coarse dots on a small photo lose the eyes: the old 4 px grid scored 0.75-0.86."""
    rgba = cut_out(pet, 451)
    out = effects.apply("dither", rgba, effects.resolve("dither"))
    sigma = subject_size(rgba) / 150
    body = rgba[..., 3] >= OPAQUE
    r = np.corrcoef(grey(rgba, sigma)[body], grey(out, sigma)[body])[0, 1]
    assert r >= 0.8, r


@pytest.mark.parametrize("pet", ["lion", "cat", "dog"])
@pytest.mark.parametrize("width", [451, 1620])
def test_dither_at_defaults_keeps_the_subject_s_tones(pet, width):
    """As much ink as the subject is dark (not a faint ghost: dots of 3 px in 4 px cells inked a
    quarter of what they should)."""
    rgba = cut_out(pet, width)
    out = effects.apply("dither", rgba, effects.resolve("dither"))
    body = rgba[..., 3] >= OPAQUE
    darkness = 1 - pixels.luma709(rgba)[body].mean() / 255
    ink = (out[..., 0][body] == 0).mean()
    assert abs(ink - darkness) < 0.05, (ink, darkness)


# ---------------------------------------------------------------- sizes follow the subject


@pytest.mark.parametrize("pet", ["lion", "cat", "dog", "tiger"])
def test_default_sizes_scale_with_the_image_and_explicit_ones_do_not(pet):
    small, large = cut_out(pet, 500), cut_out(pet, 2000)
    for name, key in (("8bit", "pixel_size"), ("dither", "dot_spacing")):
        at_small, at_large = used(name, small)[key], used(name, large)[key]
        # 4x, within rounding at both sizes (and the cat's whiskers, half opaque only at 2000 px)
        assert abs(at_large - 4 * at_small) <= 3, (name, at_small, at_large)
        assert used(name, small, **{key: AUTO})[key] == at_small
        for rgba in (small, large):
            assert used(name, rgba, **{key: 5})[key] == 5
    # the subject sets them, not the canvas: the same pet with a margin as wide again gets the same;
    # with the background kept (remove_background=false) the whole photo is the subject
    wider = np.zeros((small.shape[0], small.shape[1] * 2, 4), np.uint8)
    wider[:, : small.shape[1]] = small
    assert used("8bit", wider) == used("8bit", small) and used("dither", wider) == used("dither", small)
    whole = large.copy()
    whole[..., 3] = 255
    assert used("8bit", whole)["pixel_size"] == round(np.sqrt(whole.shape[0] * whole.shape[1]) / 64)
    assert used("dither", large)["dot_size"] == pytest.approx(1.2 * used("dither", large)["dot_spacing"])
    assert used("dither", large, dot_spacing=6, dot_size=2)["dot_size"] == 2.0
    # explicit sizes draw what they always drew: the same bytes as the px value the default resolved to
    size = used("8bit", small)["pixel_size"]
    assert np.array_equal(effects.apply("8bit", small, effects.resolve("8bit")),
                          effects.apply("8bit", small, effects.resolve("8bit", {"pixel_size": size})))


def test_auto_is_listed_as_the_default_and_accepted_but_no_other_word():
    listed = {e["name"]: {p["name"]: p for p in e["parameters"]} for e in effects.catalogue()}
    for name, key in (("8bit", "pixel_size"), ("dither", "dot_spacing"), ("dither", "dot_size")):
        assert listed[name][key]["default"] == AUTO and "auto" in listed[name][key]["description"]
        assert effects.resolve(name, {key: "auto"})[key] == AUTO
        with pytest.raises(effects.ParamError) as err:
            effects.resolve(name, {key: "big"})
        assert err.value.field == f"{name}.{key}" and '"auto"' in err.value.message
    with pytest.raises(effects.ParamError):
        effects.resolve("8bit", {"colors": "auto"})  # only sizes have an automatic value
