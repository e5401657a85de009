"""Three declared options the remove.bg drop-in maps onto (issue 27), in the one pipeline: ``max_megapixels``
(work on a smaller copy), ``roi`` (only a region can be the subject) and RemoveOptions' ``jpeg`` and ``zip``
formats (remove.bg's color.jpg + alpha.png). The real Job on the real model and photos."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageFilter

from app.pipeline import IMAGE, Job
from app.pipeline.errors import BadOption
from app.pipeline.imaging import OUTPUT_FORMATS, fitted_size
from app.pipeline.options import (
    ChangeColorOptions, ProcessOptions, Region, RemoveBackgroundOptions, RemoveOptions, fields,
)
from app.pipeline.runtime import build_runtime
from tests.conftest import photo

TIGER = photo("animal-1.jpg").read_bytes()  # 1000x667
TALL = photo("cloth-1.jpg").read_bytes()  # 739x1134: decoded at 668x1024 (MAX_DIMENSION)
CLASSES = [RemoveOptions, ChangeColorOptions, RemoveBackgroundOptions, ProcessOptions]


@pytest.fixture(scope="module")
def runtime(settings, segmenter):
    return build_runtime(settings.replace(warmup=False), segmenter)


def job(runtime, upload: bytes = TIGER, cls=RemoveOptions, **form: str):
    return Job(runtime, cls.from_form(form), upload).run()


def picture(rendered, name: str = IMAGE) -> Image.Image:
    img = Image.open(io.BytesIO(rendered.images[name]))
    img.load()
    return img


def alpha_of(rendered) -> np.ndarray:
    return np.asarray(picture(rendered).getchannel("A"))


# -- the declarations, through the form ------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES)
def test_every_kind_of_result_declares_the_new_fields(cls):
    by_name = {f.name: f for f in fields(cls)}
    assert by_name["max_megapixels"].stage == "decode" and by_name["max_megapixels"].default is None
    assert (by_name["max_megapixels"].minimum, by_name["max_megapixels"].maximum) == (0.01, 1000)
    assert by_name["roi"].type is Region and by_name["roi"].stage == "segment"
    base = {"effects": '["8bit"]'} if cls is ProcessOptions else {}
    options = cls.from_form({**base, "max_megapixels": "0.25", "roi": "10px 20px 300px 400px"})
    assert options.max_megapixels == 0.25 and str(options.roi) == "10px 20px 300px 400px"
    assert {"max_megapixels": 0.25}.items() <= options.cache_fields().items()


@pytest.mark.parametrize("text, region", [
    ("0% 0% 100% 100%", ((0, "%"), (0, "%"), (100, "%"), (100, "%"))),
    ("10px 20px 300px 400px", ((10, "px"), (20, "px"), (300, "px"), (400, "px"))),
    ("10,20, 300 ,400", ((10, "px"), (20, "px"), (300, "px"), (400, "px"))),
    ("12.5% 0 50% 400PX", ((12.5, "%"), (0, "px"), (50, "%"), (400, "px"))),
])
def test_roi_reads_px_and_percent(text, region):
    parsed = RemoveOptions.from_form({"roi": text}).roi
    assert parsed == region
    assert Region.from_text(str(parsed)) == parsed  # written back as it reads


@pytest.mark.parametrize("field, value, says", [
    ("max_megapixels", "0", "a number from 0.01 to 1000"),
    ("max_megapixels", "1001", "a number from 0.01 to 1000"),
    ("max_megapixels", "lots", "a number from 0.01 to 1000"),
    ("roi", "0 0 100", "expected x1 y1 x2 y2"),
    ("roi", "0 0 100 100 5", "expected x1 y1 x2 y2"),
    ("roi", "-5 0 100 100", "expected x1 y1 x2 y2"),
    ("roi", "0 0 1e3 100", "expected x1 y1 x2 y2"),
    ("roi", "0 0 100em 100", "expected x1 y1 x2 y2"),
    ("roi", "0% 0% 120% 100%", "at most 100%"),
    ("roi", "300px 0 100px 100px", "x1 must be less than x2"),
    ("roi", "0% 50% 100% 50%", "y1 less than y2"),
    ("format", "gif", "one of avif, heic, jpeg, png, webp, zip"),
])
def test_bad_values_name_their_field(field, value, says):
    with pytest.raises(BadOption) as refused:
        RemoveOptions.from_form({field: value})
    assert refused.value.field == field and says in refused.value.message


def test_zip_refuses_only_mask_and_names_format():
    with pytest.raises(BadOption) as refused:
        RemoveOptions.from_form({"format": "zip", "only_mask": "true"})
    assert refused.value.field == "format" and "only_mask" in refused.value.message


def test_jpeg_is_white_unless_told_otherwise_and_zip_always_refines():
    white = ("color", 255, 255, 255, 255)
    assert RemoveOptions.from_form({"format": "jpg"}).format == "jpeg"
    assert RemoveOptions.from_form({"format": "jpeg"}).layout.background == white
    assert RemoveOptions.from_form({"format": "jpeg", "background": "transparent"}).layout.background == white
    assert RemoveOptions.from_form({"format": "jpeg", "background": "red"}).layout.background[1:4] == (255, 0, 0)
    assert RemoveOptions.from_form({"format": "zip"}).layout.background == ("transparent",)
    zipped = [RemoveOptions.from_form({"format": "zip", "refine_foreground": v}).cache_fields() for v in ("0", "1")]
    assert zipped[0] == zipped[1] and "refine_foreground" not in zipped[0] and "quality" in zipped[0]
    assert OUTPUT_FORMATS["zip"][1:] == ("application/zip", "zip")


def test_remove_background_carries_the_new_fields_to_what_it_resolves_to():
    for output_format in ("png", "jpeg"):
        resolved = RemoveBackgroundOptions.from_form({"output_format": output_format, "max_megapixels": "2",
                                                      "roi": "0 0 50% 50%"}).resolved()
        assert resolved.max_megapixels == 2 and str(resolved.roi) == "0px 0px 50% 50%"


@pytest.mark.parametrize("size, cap", [((1000, 667), 250_000), ((1, 100_000), 10_000), ((4000, 3), 100),
                                       ((2000, 2000), 1_000_000), ((640, 480), 1_000_000)])
def test_fitted_size_stays_within_the_cap(size, cap):
    w, h = fitted_size(size, cap)
    assert w * h <= cap and 1 <= w <= size[0] and 1 <= h <= size[1]


# -- max_megapixels ----------------------------------------------------------------------------


def test_max_megapixels_caps_a_real_photo_and_segments_the_smaller_copy(runtime):
    full = job(runtime)
    small = job(runtime, max_megapixels="0.25")
    w, h = small.width, small.height
    assert w * h <= 250_000 and w * h > 240_000
    assert abs(w / h - 1000 / 667) / (1000 / 667) < 0.01
    assert picture(small).size == (w, h) and picture(small).mode == "RGBA"
    # the same subject: the full-size cut-out's alpha, scaled down, agrees with the small one's
    scaled = np.asarray(Image.fromarray(alpha_of(full)).resize((w, h), Image.Resampling.LANCZOS))
    agree = ((scaled >= 128) == (alpha_of(small) >= 128)).mean()
    assert agree > 0.98
    assert job(runtime, max_megapixels="1").images == full.images  # under the cap: untouched


def test_max_megapixels_scales_an_images_own_alpha_and_a_fixed_size(runtime):
    plants = photo("plants-1.jpg").read_bytes()  # RGBA, with its own transparency
    small = job(runtime, plants, max_megapixels="0.1")
    assert small.width * small.height <= 100_000
    assert (alpha_of(small) == 0).mean() > 0.01  # the input's transparent parts survived the scaling
    framed = job(runtime, size="2000x1000", max_megapixels="0.5")
    assert (framed.width, framed.height) == (1000, 500)
    # a size over MAX_OUTPUT_PIXELS is fine when max_megapixels brings it under
    assert job(runtime, size="5000x5000", max_megapixels="0.04").width == 200
    with pytest.raises(BadOption) as refused:
        job(runtime, size="5000x5000")
    assert refused.value.field == "size"


def test_a_mask_cached_at_one_size_is_never_served_at_another(settings, segmenter, tmp_path):
    """The mask cache keeps one mask per upload and checks its size: one stored at the full size never
    serves the capped copy (nor the other way round), and it holds the model's mask, not a region's
    cut. Each request gets what an uncached run gives."""
    cached = build_runtime(settings.replace(warmup=False, cache_backend="local", cache_dir=tmp_path), segmenter)
    uncached = build_runtime(settings.replace(warmup=False), segmenter)
    steps = [({}, True), ({"max_megapixels": "0.25"}, True), ({"roi": "0 0 40% 60%"}, True), ({}, False),
             ({"max_megapixels": "0.25"}, True)]
    for quality, (form, model_runs) in enumerate(steps, 90):  # a new output each time: its mask is looked up
        run = Job(cached, RemoveOptions.from_form({**form, "format": "webp", "quality": str(quality)}), TIGER)
        assert run.run().images == job(uncached, format="webp", quality=str(quality), **form).images, form
        assert ("segment" in run.timings.ms()) is model_runs, form
        run.cache.flush()


# -- roi ---------------------------------------------------------------------------------------


def outside(alpha: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    keep = np.zeros(alpha.shape, bool)
    keep[y1:y2, x1:x2] = True
    return alpha[~keep]


@pytest.mark.parametrize("roi, box", [("0% 0% 50% 100%", (0, 0, 500, 667)),
                                      ("300px 100px 800px 500px", (300, 100, 800, 500)),
                                      ("30%, 15%, 800, 500", (300, 100, 800, 500))])
def test_roi_empties_the_alpha_outside_the_region(runtime, roi, box):
    whole, cut = alpha_of(job(runtime)), alpha_of(job(runtime, roi=roi))
    x1, y1, x2, y2 = box
    assert outside(whole, *box).max() == 255 and outside(cut, *box).max() == 0  # the tiger reached past it
    assert np.array_equal(cut[y1:y2, x1:x2], whole[y1:y2, x1:x2])


def test_roi_px_refer_to_the_upload_as_sent(runtime):
    """px are the upload's: scaled with max_megapixels, and with the decoder's own fit (MAX_DIMENSION)."""
    small = job(runtime, max_megapixels="0.25")
    cut = job(runtime, max_megapixels="0.25", roi="300px 100px 800px 500px")
    s = small.width / 1000
    box = (int(300 * s), int(100 * s), int(np.ceil(800 * s)), int(np.ceil(500 * s)))
    assert outside(alpha_of(cut), *box).max() == 0 and outside(alpha_of(small), *box).max() == 255
    assert np.array_equal(alpha_of(cut)[box[1]:box[3], box[0]:box[2]], alpha_of(small)[box[1]:box[3], box[0]:box[2]])
    fitted = build_runtime(runtime.settings.replace(max_dimension=1024), runtime.segmenter)  # 739x1134 -> 1024 high
    tall, top = job(fitted, TALL), job(fitted, TALL, roi="0px 0px 739px 567px")  # the upload's top half
    assert tall.height == 1024 and top.height == 1024
    assert alpha_of(top)[512:].max() == 0 and np.array_equal(alpha_of(top)[:512], alpha_of(tall)[:512])
    assert alpha_of(tall)[512:].max() == 255


def test_a_region_outside_the_image_leaves_no_subject(runtime):
    rendered = job(runtime, roi="5000px 5000px 6000px 6000px")
    assert alpha_of(rendered).max() == 0 and rendered.foreground[IMAGE] is None
    assert rendered.mask_confidence == 0.0


def test_a_region_inverted_on_the_image_is_refused_by_name(runtime):
    with pytest.raises(BadOption) as refused:
        job(runtime, roi="900px 0% 50% 100%")  # 50% of 1000 px is left of 900 px
    assert refused.value.field == "roi" and "x1 must be less than x2" in refused.value.message


def test_roi_applies_on_every_kind_of_result(runtime):
    v2 = job(runtime, cls=ProcessOptions, effects='["8bit"]', roi="0 0 50% 100%")
    assert np.asarray(picture(v2, "8bit").getchannel("A"))[:, 510:].max() == 0
    over = np.asarray(picture(job(runtime, cls=ChangeColorOptions, format="png", color="red",
                                  roi="0 0 50% 100%")).convert("RGB"))
    assert (over[:, 510:] == (255, 0, 0)).all()


# -- jpeg and zip ------------------------------------------------------------------------------


def test_jpeg_is_the_cut_out_over_white(runtime):
    rendered = job(runtime, format="jpg")
    img = picture(rendered)
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (1000, 667)
    same = job(runtime, cls=ChangeColorOptions, format="jpeg", color="white")  # the same result, the same bytes
    assert rendered.images == same.images
    assert job(runtime, format="jpeg", background="transparent").images == same.images
    assert np.asarray(img)[:40, :40].min() >= 250  # the corner is background


def test_only_mask_as_jpeg_is_greyscale(runtime):
    mask = picture(job(runtime, format="jpeg", only_mask="true"))
    png = np.asarray(picture(job(runtime, only_mask="true")), float)
    assert mask.format == "JPEG" and mask.mode == "L" and mask.size == (1000, 667)
    assert np.abs(np.asarray(mask, float) - png).mean() < 2
    framed = picture(job(runtime, format="jpeg", only_mask="true", crop="true", padding="20px"))
    assert framed.mode == "L" and np.asarray(framed)[:5].max() < 20  # the padding is background, not white


def unzip(rendered) -> tuple[zipfile.ZipFile, Image.Image, Image.Image]:
    archive = zipfile.ZipFile(io.BytesIO(rendered.images[IMAGE]))
    color, alpha = (Image.open(archive.open(name)) for name in ("color.jpg", "alpha.png"))
    color.load(), alpha.load()
    return archive, color, alpha


def test_zip_holds_color_jpg_and_alpha_png_that_recompose_to_the_png(runtime):
    rendered = job(runtime, format="zip")
    archive, color, alpha = unzip(rendered)
    assert [(i.filename, i.compress_type) for i in archive.infolist()] == [("color.jpg", zipfile.ZIP_STORED),
                                                                           ("alpha.png", zipfile.ZIP_STORED)]
    assert (color.format, color.mode, color.size) == ("JPEG", "RGB", (1000, 667))
    assert (alpha.format, alpha.mode, alpha.size) == ("PNG", "L", (1000, 667))
    png = np.asarray(picture(job(runtime, refine_foreground="true")), float)  # zip's colours are refined
    a = np.asarray(alpha)
    assert np.array_equal(a, png[..., 3])
    rgb = np.asarray(color, float)
    weight = a[..., None] / 255.0
    assert np.abs(rgb * weight - png[..., :3] * weight).mean() < 1.0  # composed alike, within JPEG error
    assert np.abs(rgb - png[..., :3])[a > 128].mean() < 3
    edge = (np.asarray(alpha.filter(ImageFilter.MaxFilter(9))) > 0) & (a == 0)  # within 4 px of the subject
    assert edge.sum() > 1000 and (rgb[edge].max(axis=1) > 20).all()  # its estimated colours, not a black fill
    assert job(runtime, format="zip").images == rendered.images  # the same bytes each time
    assert job(runtime, format="zip", quality="50").images != rendered.images  # quality is color.jpg's


def test_zip_over_an_opaque_background_is_opaque(runtime):
    _, color, alpha = unzip(job(runtime, format="zip", background="red"))
    assert np.asarray(alpha).min() == 255
    over = np.asarray(picture(job(runtime, format="png", background="red", refine_foreground="true")), float)
    assert np.abs(np.asarray(color, float) - over[..., :3]).mean() < 3
