"""Full resolution on the 512 MB tier: a 12 MP phone photo is worked at its own size, larger ones are
scaled down to MAX_WORK_PIXELS and say from what, MAX_DIMENSION still caps, the mask of a large
photo follows its edges at least as well as a plain resize, and the colours refined on a grid
match the full-size estimate."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from app.pipeline import Job, compose
from app.pipeline.compose import REFINE_GRID_PIXELS, refine_foreground
from app.pipeline.imaging import decode_image, fitted_size
from app.pipeline.options import RemoveOptions
from app.pipeline.runtime import build_runtime
from app.pipeline.upscale import guided_upscale
from app.quality import metrics
from app.quality.score import load_truth
from tests.conftest import DATA, open_response, photo, post

AM2K = DATA / "quality" / "am2k"
PHONE = (4032, 3024)


def jpeg_at(size: tuple[int, int], name: str = "animal-1.jpg") -> bytes:
    """A fixture photo resized to ``size``, as a phone would send it (JPEG quality 90)."""
    buf = io.BytesIO()
    Image.open(photo(name)).convert("RGB").resize(size, Image.Resampling.LANCZOS).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def phone_photo() -> bytes:
    return jpeg_at(PHONE)


@pytest.fixture(scope="module")
def runtime(settings, segmenter):
    return build_runtime(settings.replace(warmup=False), segmenter)


def test_a_12_megapixel_phone_photo_comes_back_at_its_own_size(client, phone_photo, runtime):
    resp = post(client, "/api/bg/remove", phone_photo)
    assert resp.status_code == 200
    assert open_response(resp).size == PHONE
    assert (resp.headers["X-Width"], resp.headers["X-Height"]) == ("4032", "3024")
    assert "X-Scaled-From" not in resp.headers
    assert Job(runtime, RemoveOptions(use_cache=False, format="jpeg"), phone_photo).run().scaled_from is None


def test_a_photo_over_the_work_cap_is_scaled_down_and_says_from_what(settings, segmenter):
    runtime = build_runtime(settings.replace(warmup=False, max_work_pixels=3_000_000), segmenter)
    rendered = Job(runtime, RemoveOptions(use_cache=False, format="jpeg"), jpeg_at((2400, 1600))).run()
    assert (rendered.width, rendered.height) == (2121, 1414)  # 3 MP, aspect kept
    assert rendered.scaled_from == (2400, 1600)


def test_max_dimension_set_low_still_caps(make_app, phone_photo, settings, segmenter):
    resp = post(make_app(max_dimension=300).test_client(), "/api/bg/remove", phone_photo)
    assert open_response(resp).size == (300, 225)
    runtime = build_runtime(settings.replace(warmup=False, max_dimension=300), segmenter)
    assert Job(runtime, RemoveOptions(use_cache=False), phone_photo).run().scaled_from == PHONE


def test_max_megapixels_scaling_is_named_too(runtime):
    rendered = Job(runtime, RemoveOptions.from_form({"max_megapixels": "0.25", "use_cache": "false"}),
                   photo("animal-1.jpg").read_bytes()).run()
    assert rendered.width * rendered.height <= 250_000
    assert rendered.scaled_from == (1000, 667)


def test_guided_upscaling_is_no_worse_than_a_plain_resize_on_the_quality_set(segmenter, am2k_served):
    """Each AM-2k photo (1.7 MP, true alpha matte) at its own size: the model's 320x320 map brought up
    by the photo's edges, against the Lanczos resize the masks had before, by SAD against the truth."""
    plain, guided = [], []
    for served in am2k_served.values():
        truth = served.truth.alpha
        height, width = truth.shape
        assert served.image.size == (width, height)
        assert np.array_equal(served.mask, segmenter.postprocess(served.prediction, height, width))
        plain.append(metrics.sad(served.mask, truth))
        upscaled = segmenter.postprocess(served.prediction, height, width, guide=served.rgb)
        if not guided:  # what is served is the guided upscaling of the model's map at its own size
            assert np.array_equal(upscaled, guided_upscale(segmenter.postprocess(served.prediction, 320, 320),
                                                           served.rgb))
            assert np.array_equal(segmenter.mask(served.rgb), upscaled)
        guided.append(metrics.sad(upscaled, truth))
    assert np.mean(guided) <= np.mean(plain), (np.mean(guided), np.mean(plain))
    assert sum(g < p for g, p in zip(guided, plain)) > len(plain) / 2


def test_colours_refined_on_a_grid_match_the_full_size_estimate(monkeypatch):
    """A large photo's blur-fusion means are estimated on a 1 MP grid: on a real photo with its true
    matte, the colours at its soft edges stay within a level or two of the full-size estimate's."""
    rgb = np.asarray(Image.open(AM2K / "am2k-01.jpg").convert("RGB"))
    alpha = load_truth(AM2K / "am2k-01.jpg")
    assert rgb.shape[0] * rgb.shape[1] > REFINE_GRID_PIXELS
    grid = refine_foreground(rgb, alpha)
    monkeypatch.setattr(compose, "REFINE_GRID_PIXELS", rgb.shape[0] * rgb.shape[1])  # the full-size estimate
    exact = refine_foreground(rgb, alpha)
    soft = (alpha > 0) & (alpha < 255)
    diff = np.abs(exact.astype(np.int16) - grid)[soft]
    moved = np.abs(exact.astype(np.int16) - rgb)[soft]
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 3, (diff.mean(), np.percentile(diff, 99))
    assert moved.mean() > 10 * diff.mean()  # the refinement itself is far larger than the grid's error
    assert np.array_equal(exact[alpha == 255], grid[alpha == 255])



def _png(img: Image.Image, **info) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **info)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16", "LA"])
def test_scaling_in_strips_gives_the_pixels_of_one_whole_resize(mode):
    """An image over the work cap is scaled a strip of rows at a time straight into the arrays:
    the pixels are those of one Lanczos resize of the whole image (premultiplied where it has
    alpha), to within rounding, whatever its mode."""
    source = Image.open(photo("animal-1.jpg")).convert("RGB").resize((900, 1300))
    rgba = source.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(source.size))
    img = {"RGB": source, "RGBA": rgba, "P": source.quantize(64), "LA": rgba.convert("LA"),
           "I;16": Image.fromarray(np.asarray(source.convert("L"), np.uint16) * 257)}[mode]
    decoded = decode_image(_png(img), max_dimension=4096, max_pixels=4096 * 4096, work_pixels=500_000)
    assert decoded.size == fitted_size((900, 1300), 500_000) == (588, 849) and decoded.source_size == (900, 1300)
    whole = img.convert("RGBA" if "A" in mode else "RGB") if mode != "I;16" else source.convert("L").convert("RGB")
    expected = np.asarray(whole.resize(decoded.size, Image.Resampling.LANCZOS))
    # colours are resampled premultiplied: where alpha is low, a rounding step is several levels
    seen = expected[..., 3] >= 128 if "A" in mode else np.ones(decoded.size[::-1], bool)
    assert np.abs(decoded.rgb.astype(int) - expected[..., :3])[seen].max() <= 2
    if "A" in mode:
        assert np.abs(decoded.alpha.astype(int) - expected[..., 3]).max() <= 1
    else:
        assert decoded.alpha is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_scaled_photo_is_turned_upright_as_a_whole_one(orientation):
    """Every EXIF orientation: the photo scaled in strips then turned (arrays) is the photo turned
    by Pillow then scaled; its source size is the upright one."""
    img = Image.open(photo("animal-1.jpg")).convert("RGB").resize((640, 400))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _png(img, exif=exif.tobytes())
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    decoded = decode_image(data, max_dimension=320, max_pixels=4096 * 4096)
    expected = np.asarray(upright.resize(decoded.size, Image.Resampling.LANCZOS))
    assert decoded.source_size == upright.size and decoded.size == (upright.width // 2, upright.height // 2)
    diff = np.abs(decoded.rgb.astype(int) - expected)  # turned before or after the two resampling passes
    assert diff.max() <= 2 and diff.mean() < 0.3, (diff.max(), diff.mean())  # a wrong turn: tens


def test_a_large_photo_reaches_the_network_reduced_first_and_its_mask_is_the_exact_resizes(segmenter):
    """adapters/onnx.py reduces a photo of 1920 px or more on both sides by a whole factor before its
    Lanczos resize to 320 (REDUCING_GAP): 4x faster at 12 MP. The network's input stays within a
    few levels of the exact resize, and the mask within a level on average, the same shape; under
    1920 px the input is the exact resize, byte for byte (as rembg makes it)."""
    from adapters.onnx import REDUCING_GAP

    assert REDUCING_GAP == 3.0
    for size, reduced in ((PHONE, True), ((1900, 1266), False), ((1920, 1080), False)):
        rgb = np.asarray(Image.open(io.BytesIO(jpeg_at(size))).convert("RGB"))
        exact = np.asarray(Image.fromarray(rgb).resize((320, 320), Image.Resampling.LANCZOS))
        tensor = segmenter.preprocess(rgb)
        chw = exact.transpose(2, 0, 1).astype(np.float32)
        chw *= np.float32(1.0 / max(float(exact.max()), 1e-6))
        chw -= segmenter._mean
        chw *= segmenter._inv_std
        if not reduced:
            assert np.array_equal(tensor[0], chw)
            continue
        reduced_input = np.asarray(Image.fromarray(rgb).resize((320, 320), Image.Resampling.LANCZOS,
                                                               reducing_gap=REDUCING_GAP))
        assert 0 < np.abs(reduced_input.astype(int) - exact).max() <= 4
        ours = segmenter.postprocess(segmenter.infer(tensor), *rgb.shape[:2])
        theirs = segmenter.postprocess(segmenter.infer(chw[np.newaxis]), *rgb.shape[:2])
        assert np.abs(ours.astype(int) - theirs).mean() < 1.0
        assert metrics.iou(ours, theirs) > 0.995  # the masks at alpha >= 0.5
